"""What a network hears: the Kaldi fbank and SpecAugment (``features``), the far-microphone
noise canceller of System 3 (``anc``), the two-channel views of a stereo clip (``twochannel``:
near, far, fblms, w1, ss, residual). numpy and torch only; no model, no file."""
