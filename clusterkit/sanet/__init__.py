"""Building blocks of SA-Net (methods/sanet.py): spectral-regression units, the layer stack, and the
robust block-level image similarity that the final spectral clustering and `assign` share."""
