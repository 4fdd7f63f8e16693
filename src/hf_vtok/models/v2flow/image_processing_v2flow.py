"""Image processor of V²Flow's DC-AE input: ADM center crop to a square, then [-1, 1]."""

from PIL import Image
from transformers.processing_utils import Unpack

from ...image_processing_utils import VisualTokenizerImageProcessor, VisualTokenizerImagesKwargs
from ...utils.images import adm_center_crop


class V2FlowImageProcessorKwargs(VisualTokenizerImagesKwargs, total=False):
    """No V²Flow-specific options: ``crop_size`` sets the square image size."""


class V2FlowImageProcessor(VisualTokenizerImageProcessor):
    r"""Square images for the DC-AE of a V²Flow model, as the original caches them.

    8-bit / PIL images get the ADM center crop (BOX halving while the short side is at least twice the
    target, BICUBIC resize of the short side, center crop) to ``crop_size``; float images must already
    have that size. Then rescale to [0, 1] and normalize to [-1, 1]. Returns ``pixel_values
    [B, 3, S, S]``; ``postprocess`` turns decoded ``[B, 3, S, S]`` images back into PIL / NumPy / torch.
    """

    valid_kwargs = V2FlowImageProcessorKwargs
    model_input_names = ["pixel_values"]
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    do_resize = False
    do_center_crop = True
    crop_size = {"height": 1024, "width": 1024}
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def __init__(self, **kwargs: Unpack[V2FlowImageProcessorKwargs]):
        super().__init__(**kwargs)

    @classmethod
    def for_model(cls, config, **kwargs) -> "V2FlowImageProcessor":
        """Images of the size whose DC-AE latents the model tokenizes (``sample_size * vae_downsample_factor``)."""
        size = config.sample_size * config.vae_downsample_factor
        return cls(crop_size={"height": size, "width": size}, **kwargs)

    def _validate_preprocess_kwargs(self, **kwargs):
        crop_size = kwargs.get("crop_size")
        if crop_size is None or crop_size.height != crop_size.width:
            raise ValueError(f"V2Flow takes square images; crop_size must be square, got {crop_size}")
        return super()._validate_preprocess_kwargs(**kwargs)

    def _fit_image(self, index: int, image, do_center_crop: bool, crop_size, **kwargs):
        size = crop_size.height
        if do_center_crop:
            if not isinstance(image, Image.Image):
                raise ValueError(
                    f"image {index}: the ADM center crop runs on 8-bit images; pass PIL / uint8 images, "
                    f"or {size}x{size} float images with do_center_crop=False"
                )
            image = adm_center_crop(image, size)
        height, width = self._height_width(image)
        if (height, width) != (size, size):
            raise ValueError(
                f"image {index} is {width}x{height} (WxH) but the model takes {size}x{size}; enable do_center_crop"
            )
        return image
