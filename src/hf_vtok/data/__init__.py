"""Data: images from folders, webdataset shards and ``datasets`` (Hub or local), training datasets, latent caches."""

from .images import CROP_MODES, IMAGE_EXTENSIONS, count_images, expand_braces, frame_image, iter_images
from .latent_cache import ImageTokenEncoder, cache_latents, encode_latents, load_latent_cache
from .sources import NO_LABEL, DatasetsImages, FolderImages, TarShardImages, open_image_source

__all__ = [
    "CROP_MODES",
    "NO_LABEL",
    "DatasetsImages",
    "FolderImages",
    "ImageTokenEncoder",
    "TarShardImages",
    "IMAGE_EXTENSIONS",
    "cache_latents",
    "count_images",
    "encode_latents",
    "expand_braces",
    "frame_image",
    "iter_images",
    "load_latent_cache",
    "open_image_source",
]
