from .images import adm_center_crop, load_image, to_rgb

__all__ = ["adm_center_crop", "load_image", "to_rgb"]
