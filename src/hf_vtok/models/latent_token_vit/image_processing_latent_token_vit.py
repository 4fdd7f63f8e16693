"""Image processor of the 1D latent-token tokenizers (SoftVQ-VAE, MAETok): square images in [-1, 1]."""

import torch
from PIL import Image
from transformers import ImageProcessingMixin  # noqa: F401  (diffusers looks this name up in component modules)
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling

from ...image_processing_utils import VisualTokenizerImageProcessor
from ...utils.images import adm_center_crop


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

    def _validate_preprocess_kwargs(self, **kwargs):
        # the ADM crop takes its size from `size`; the generic check would demand `crop_size`
        kwargs.pop("do_center_crop", None)
        return super()._validate_preprocess_kwargs(**kwargs)

    def _preprocess(
        self,
        images: list,
        do_resize: bool,
        size,
        resample,
        do_center_crop: bool,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        if size is None or not (size.height and size.width) or size.height != size.width:
            raise ValueError(f"size must be square {{'height': S, 'width': S}}, got {size}")
        target = size.height
        pixel_values = []
        for index, image in enumerate(images):
            if isinstance(image, Image.Image):
                if do_center_crop:
                    image = adm_center_crop(image, target)
                elif do_resize and image.size != (target, target):
                    image = image.resize((target, target), resample=PILImageResampling(resample))
                width, height = image.size
            else:
                height, width = image.shape[-2:]
            if (height, width) != (target, target):
                how = "float images are not resized" if not isinstance(image, Image.Image) else "resizing is off"
                raise ValueError(
                    f"image {index} is {width}x{height} (WxH) but the model takes {target}x{target} and {how}: "
                    "pass PIL / uint8 images with do_center_crop=True or do_resize=True, or resize them first"
                )
            pixel_values.append(
                self._to_normalized_tensor(image, do_rescale, rescale_factor, do_normalize, image_mean, image_std)
            )
        data = {"pixel_values": torch.stack(pixel_values)}
        if return_tensors == "np":
            data = {key: value.numpy() for key, value in data.items()}
        return BatchFeature(data=data)

    def postprocess(self, outputs, output_type: str = "pil", do_denormalize: bool = True):
        """Decoded images ``[B, 3, H, W]`` in [-1, 1] (a tensor or a decoder output with ``sample``) -> images.

        ``output_type``: ``"pil"``, ``"np"`` (HWC float in [0, 1]) or ``"pt"`` (CHW float in [0, 1]); with
        ``do_denormalize=False`` np / pt stay in model space ([-1, 1], unclamped).
        """
        if hasattr(outputs, "keys"):  # a decoder output, or a BatchFeature holding pixel_values
            sample = outputs["sample"] if "sample" in outputs else outputs.get("pixel_values")
            if sample is None:
                raise ValueError("postprocess needs a tensor, a decoder output with `sample`, or `pixel_values`")
        else:
            sample = outputs
        sample = torch.as_tensor(sample)
        if sample.dim() == 3:
            sample = sample.unsqueeze(0)
        if sample.dim() != 4 or sample.shape[1] != 3:
            raise ValueError(
                f"postprocess needs images [B, 3, H, W] (or one [3, H, W]), got shape {tuple(sample.shape)}"
            )
        return self._convert_output(list(sample), output_type, do_denormalize)
