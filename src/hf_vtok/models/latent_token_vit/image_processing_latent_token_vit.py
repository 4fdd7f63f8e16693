"""Image processor of the 1D latent-token tokenizers (SoftVQ-VAE, MAETok): square images in [-1, 1]."""

from PIL import Image
from transformers import ImageProcessingMixin  # noqa: F401  (diffusers looks this name up in component modules)
from transformers.image_utils import PILImageResampling

from ...image_processing_utils import VisualTokenizerImageProcessor, VisualTokenizerImagesKwargs
from ...utils.images import adm_center_crop


class LatentTokenImageProcessorKwargs(VisualTokenizerImagesKwargs, total=False):
    """No options of their own: ``size`` sets the square image size."""


class LatentTokenImageProcessor(VisualTokenizerImageProcessor):
    r"""Images -> ``pixel_values [B, 3, S, S]`` in [-1, 1] for SoftVQ-VAE / MAETok (``S`` = 256 or 512).

    Sizing, in this order of precedence:

    - ``do_center_crop=True`` (default): the ADM center crop the original evaluates with (box-halve,
      bicubic resize of the short side to ``S``, center crop);
    - ``do_resize=True``: a plain ``resample`` resize to ``S x S`` (the original demo notebooks);
    - neither: images must already be ``S x S``; any other size is an error naming it.

    Then ``/ 255`` and ``(x - 0.5) / 0.5``. Float inputs (arrays / tensors in [0, 1] with
    ``do_rescale=False``, or in [0, 255]) must already be ``S x S``. ``postprocess`` maps decoded
    ``[B, 3, H, W]`` back to PIL / NumPy / torch images. ``for_model(config)`` sizes it for a model.
    """

    valid_kwargs = LatentTokenImageProcessorKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"height": 256, "width": 256}
    do_resize = False
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    @classmethod
    def for_model(cls, config, **kwargs) -> "LatentTokenImageProcessor":
        """The processor of a model config: ``size`` = ``config.image_size`` squared."""
        return cls(size={"height": config.image_size, "width": config.image_size}, **kwargs)

    _unchecked_kwargs = ("do_center_crop",)  # the ADM crop takes its size from `size`, not `crop_size`

    def _validate_preprocess_kwargs(self, **kwargs):
        size = kwargs.get("size")
        if size is None or not (size.height and size.width) or size.height != size.width:
            raise ValueError(f"size must be square {{'height': S, 'width': S}}, got {size}")
        return super()._validate_preprocess_kwargs(**kwargs)

    def _fit_image(self, index: int, image, do_resize: bool, size, resample, do_center_crop: bool, **kwargs):
        target = size.height
        if isinstance(image, Image.Image):
            if do_center_crop:
                image = adm_center_crop(image, target)
            elif do_resize and image.size != (target, target):
                image = image.resize((target, target), resample=PILImageResampling(resample))
        height, width = self._height_width(image)
        if (height, width) != (target, target):
            how = "float images are not resized" if not isinstance(image, Image.Image) else "resizing is off"
            raise ValueError(
                f"image {index} is {width}x{height} (WxH) but the model takes {target}x{target} and {how}: "
                "pass PIL / uint8 images with do_center_crop=True or do_resize=True, or resize them first"
            )
        return image
