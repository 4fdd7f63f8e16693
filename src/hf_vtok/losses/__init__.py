"""Training losses; the LPIPS network here is also what ``hf_vtok.metrics`` measures LPIPS with."""

from .lpips import LPIPS, VGG16Features

__all__ = ["LPIPS", "VGG16Features"]
