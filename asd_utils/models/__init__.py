"""Models: the autoencoder baseline, the BEATs and EAT backbones, and the heads on top of them."""
