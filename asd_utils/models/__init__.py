"""Models: the autoencoder baseline (and, later, the BEATs and EAT backbones and their heads)."""
