"""What a network hears: the Kaldi fbank and SpecAugment (``features``), the far-microphone
noise canceller of System 3 (``anc``). numpy and torch only; no model, no file."""
