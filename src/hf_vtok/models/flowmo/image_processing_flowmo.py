"""FlowMo image processor: shorter side to the model size, center crop, [-1, 1] (the original ImageNet pipeline)."""

import torch
import torch.nn.functional as F
from PIL import Image
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import Unpack

from ...image_processing_utils import VisualTokenizerImageProcessor, VisualTokenizerImagesKwargs


class FlowMoImageProcessorKwargs(VisualTokenizerImagesKwargs, total=False):
    r"""
    image_size (`int`): the model's square input size; the default `size` / `crop_size` use it.
    """

    image_size: int


def shorter_side_size(height: int, width: int, target: int) -> tuple[int, int]:
    """(h, w) with the shorter side ``target`` and the longer ``int(target * long / short)``, as torchvision's
    ``Resize(int)``."""
    if height <= width:
        return target, int(target * width / height)
    return int(target * height / width), target


def center_crop_box(height: int, width: int, crop_height: int, crop_width: int) -> tuple[int, int]:
    """(top, left) of torchvision's ``CenterCrop``: ``int(round(margin / 2))`` (round half to even)."""
    return int(round((height - crop_height) / 2.0)), int(round((width - crop_width) / 2.0))


class FlowMoImageProcessor(VisualTokenizerImageProcessor):
    r"""Turns images into FlowMo's ``pixel_values [B, 3, S, S]`` in [-1, 1] and decoded samples back into images.

    By default every image is resized so its shorter side is ``size["shortest_edge"]`` (PIL bilinear,
    antialiased, as torchvision's ``Resize(S)``) and center-cropped to ``crop_size`` (torchvision's
    rounding), then mapped to [-1, 1] as ``x / 127.5 - 1``: the original's evaluation pipeline.
    Images of another size are therefore resized. With ``do_resize=False`` and ``do_center_crop=False``
    an image must already be ``crop_size``; anything else is rejected, because FlowMo encodes and
    decodes at one fixed square size and a batch needs equal sizes.

    Float inputs (arrays / tensors) in [0, 1] need ``do_rescale=False``; they are resized with
    ``torch`` bilinear antialiased interpolation.
    """

    valid_kwargs = FlowMoImageProcessorKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    image_size = 256
    size = None
    crop_size = None
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    # in float64, then float32: for uint8 and the defaults the original's `(x / 127.5 - 1).astype(float32)`
    _normalize_dtype = torch.float64

    def __init__(self, **kwargs: Unpack[FlowMoImageProcessorKwargs]):
        image_size = kwargs.get("image_size", self.image_size)
        if not isinstance(image_size, int) or image_size <= 0:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        kwargs.setdefault("size", {"shortest_edge": image_size})
        kwargs.setdefault("crop_size", {"height": image_size, "width": image_size})
        super().__init__(**kwargs)

    def _validate_preprocess_kwargs(self, **kwargs):
        if kwargs.get("do_resize") and (kwargs.get("size") is None or not kwargs["size"].shortest_edge):
            raise ValueError('do_resize needs size={"shortest_edge": <pixels>}')
        if kwargs.get("crop_size") is None or not (kwargs["crop_size"].height and kwargs["crop_size"].width):
            raise ValueError('crop_size={"height": <pixels>, "width": <pixels>} is required (the model input size)')
        return super()._validate_preprocess_kwargs(**kwargs)

    def _resize(self, image, size: tuple[int, int], resample):
        if isinstance(image, Image.Image):
            if (image.height, image.width) == size:
                return image
            return image.resize((size[1], size[0]), resample=PILImageResampling(resample))
        if tuple(image.shape[-2:]) == size:
            return image
        return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]

    @staticmethod
    def _crop(image, top: int, left: int, height: int, width: int):
        if isinstance(image, Image.Image):
            return image.crop((left, top, left + width, top + height))
        return image[:, top : top + height, left : left + width]

    def _fit_image(
        self, index: int, image, do_resize: bool, size, resample, do_center_crop: bool, crop_size, **kwargs
    ):
        target = (crop_size.height, crop_size.width)
        height, width = self._height_width(image)
        if do_resize:
            image = self._resize(image, shorter_side_size(height, width, size.shortest_edge), resample)
            height, width = self._height_width(image)
        if do_center_crop:
            if height < target[0] or width < target[1]:
                raise ValueError(
                    f"image {index} is {height}x{width} (HxW), smaller than the {target[0]}x{target[1]} crop; "
                    "enable do_resize (shorter side to the model size) or resize it first"
                )
            image = self._crop(image, *center_crop_box(height, width, *target), *target)
            height, width = target
        if (height, width) != target:
            raise ValueError(
                f"image {index} is {height}x{width} (HxW) but FlowMo takes {target[0]}x{target[1]} images; "
                "enable do_resize / do_center_crop (the default) or resize it yourself"
            )
        return image
