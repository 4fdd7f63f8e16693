"""Data: reading images from folders, webdataset shards and ``datasets`` (Hub or local)."""

from .images import CROP_MODES, IMAGE_EXTENSIONS, expand_braces, frame_image, iter_images

__all__ = ["CROP_MODES", "IMAGE_EXTENSIONS", "expand_braces", "frame_image", "iter_images"]
