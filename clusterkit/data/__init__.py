"""Finding, decoding and labelling images."""

from .images import ImageSet
from .loading import load_images

__all__ = ["ImageSet", "load_images"]
