"""Data: images from folders, webdataset shards and ``datasets`` (Hub or local), in order or by index; latent caches."""

from .images import CROP_MODES, IMAGE_EXTENSIONS, expand_braces, frame_image, iter_images
from .latent_cache import cache_latents, encode_latents, load_autoencoder, load_latent_cache
from .sources import NO_LABEL, DatasetsImages, FolderImages, TarShardImages, open_image_source

__all__ = [
    "CROP_MODES",
    "NO_LABEL",
    "DatasetsImages",
    "FolderImages",
    "TarShardImages",
    "IMAGE_EXTENSIONS",
    "cache_latents",
    "encode_latents",
    "expand_braces",
    "frame_image",
    "iter_images",
    "load_autoencoder",
    "load_latent_cache",
    "open_image_source",
]
