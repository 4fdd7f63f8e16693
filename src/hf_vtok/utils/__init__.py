"""Layer-0 helpers. The image helpers are imported on first use (they import torch; ``hf_vtok.utils.errors``, which
the ``hf-vtok`` command line parses with, must not)."""

_IMAGE_HELPERS = ("adm_center_crop", "load_image", "resize_longest_side", "to_pixel_values", "to_rgb")


def __getattr__(name: str):
    if name in _IMAGE_HELPERS:
        from . import images

        return getattr(images, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_IMAGE_HELPERS)
