"""Datasets and latent caches."""

from .latent_cache import cache_latents, encode_latents, list_images, load_latent_cache

__all__ = ["cache_latents", "encode_latents", "list_images", "load_latent_cache"]
