"""Models: the autoencoder baseline, the BEATs and EAT backbones, the heads on top of them, and
the frequency-preserving pooling of their patch tokens (``pooling``)."""
