"""SOURCE -> samples: finding, decoding and labelling images."""

from clusterkit.data.loading import load_images, load_like
from clusterkit.data.samples import ImageSet, Samples

__all__ = ["ImageSet", "Samples", "load_images", "load_like"]
