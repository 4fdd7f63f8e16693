from .images import adm_center_crop, load_image, resize_longest_side, to_pixel_values, to_rgb

__all__ = ["adm_center_crop", "load_image", "resize_longest_side", "to_pixel_values", "to_rgb"]
