"""Shared base of the hf_vtok image processors (transformers ``PilBackend``: no torchvision).

It owns what every family needs: turning any accepted input (path, PIL image of any mode,
uint8 or float array / tensor, batches of them) into RGB, the per-image flow (family sizing, rescale,
normalize, batch), and turning decoded tensors back into PIL / NumPy / torch images. Families implement
``_fit_image`` (their crop / resize / size check) and, where the model input is not one stacked tensor,
``_pack`` (ViTok's patch sequences) and ``postprocess``.
"""

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from transformers import ImageProcessingMixin  # noqa: F401  (diffusers looks this name up in component modules)
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import ChannelDimension, infer_channel_dimension_format

from .remote_code import RemoteCodeMixin
from .utils.images import check_image_size, load_image, to_rgb

OUTPUT_TYPES = ("pil", "np", "pt")
_KEPT_MODES = ("L", "RGB", "RGBA")  # the PIL modes do_convert_rgb=False passes on as they are


def same_channels(pixels: list[torch.Tensor]) -> list[torch.Tensor]:
    """``pixels`` (``[C, H, W]`` each), checked to have one channel count (``do_convert_rgb=False`` keeps theirs)."""
    counts = sorted({image.shape[0] for image in pixels})
    if len(counts) > 1:
        raise ValueError(
            f"the images of a batch have {counts} channels; with do_convert_rgb=False they must all have the same"
        )
    return pixels


class VisualTokenizerImageProcessor(RemoteCodeMixin, PilBackend):
    """Input handling shared by every hf_vtok processor.

    ``process_image`` returns an RGB ``PIL.Image`` for 8-bit inputs (so PIL resampling matches the
    originals) and a float32 ``[3, H, W]`` tensor for float inputs. With ``do_convert_rgb=False`` images keep
    their own 1, 3 or 4 channels (L / RGB / RGBA, no alpha compositing), for a model built with that
    ``num_channels``; ``image_mean`` / ``image_std`` then need one value per channel, and other PIL modes are
    an error.
    """

    _remote_config_file = "preprocessor_config.json"
    # kwargs the family checks itself (sizes computed per image): transformers' generic check would demand a
    # fixed `size` / `crop_size` for them
    _unchecked_kwargs: tuple[str, ...] = ()
    # dtype of rescale + normalize (the result is float32)
    _normalize_dtype = torch.float32

    @classmethod
    def for_model(cls, config, **kwargs):
        """The processor matching a model config: its ``patch_size`` / ``image_size`` where the processor has one."""
        for name in ("patch_size", "image_size"):
            if hasattr(cls, name) and hasattr(config, name):
                kwargs.setdefault(name, getattr(config, name))
        return cls(**kwargs)

    def fetch_images(self, image_url_or_urls):
        if isinstance(image_url_or_urls, (list, tuple)):
            return [self.fetch_images(item) for item in image_url_or_urls]
        if isinstance(image_url_or_urls, (str, os.PathLike)):
            return load_image(image_url_or_urls)
        return image_url_or_urls

    def _validate_preprocess_kwargs(self, **kwargs):
        for name in self._unchecked_kwargs:
            kwargs.pop(name, None)
        return super()._validate_preprocess_kwargs(**kwargs)

    def _prepare_image_like_inputs(self, images, *args, **kwargs):
        prepared = super()._prepare_image_like_inputs(images, *args, **kwargs)
        if not prepared:
            raise ValueError("no images were given")
        return prepared

    def process_image(self, image, do_convert_rgb=None, input_data_format=None, do_rescale=None, **kwargs):
        keep_channels = do_convert_rgb is False
        if isinstance(image, Image.Image):
            if image.width == 0 or image.height == 0:
                raise ValueError(f"image has zero size ({image.width}x{image.height})")
            check_image_size(image.width, image.height)  # before a lazily opened image is decoded
            if keep_channels and image.mode not in _KEPT_MODES:
                raise ValueError(
                    f"do_convert_rgb=False passes {'/'.join(_KEPT_MODES)} images on as they are; a mode "
                    f"{image.mode!r} image must be converted first (or pass do_convert_rgb=True)"
                )
            return image if keep_channels else to_rgb(image)
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy()
        if not isinstance(image, np.ndarray):
            raise ValueError(
                f"unsupported image type {type(image).__name__}; pass PIL images, arrays, tensors or paths"
            )
        if image.ndim == 2:
            image = image[None]
            input_data_format = ChannelDimension.FIRST
        if image.ndim != 3:
            raise ValueError(f"an image array must be [H, W], [C, H, W] or [H, W, C]; got shape {image.shape}")
        if input_data_format is None:
            input_data_format = infer_channel_dimension_format(image, num_channels=(1, 3, 4))
        if ChannelDimension(input_data_format) == ChannelDimension.LAST:
            image = np.moveaxis(image, -1, 0)
        channels, height, width = image.shape
        if channels not in (1, 3, 4) or height == 0 or width == 0:
            raise ValueError(
                f"an image array needs 1, 3 or 4 channels and a non-zero size; got [C, H, W] = {image.shape}"
            )
        if image.dtype == np.uint8:
            pil_mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
            array = np.ascontiguousarray(np.moveaxis(image, 0, -1))
            pil_image = Image.fromarray(array[..., 0] if channels == 1 else array, mode=pil_mode)
            return pil_image if keep_channels else to_rgb(pil_image)
        if not np.issubdtype(image.dtype, np.floating):
            raise ValueError(f"image arrays must be uint8 or floating point, got dtype {image.dtype}")
        pixels = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        if not torch.isfinite(pixels).all():
            raise ValueError("image array contains NaN or infinite values")
        scale = 1.0 if pixels.max() <= 1.0 else 255.0
        if scale == 1.0 and do_rescale:
            raise ValueError(
                "float image already in [0, 1] but do_rescale=True would divide it by 255 again; "
                "pass do_rescale=False (or give uint8 / PIL images)"
            )
        if keep_channels:
            pass
        elif channels == 4:  # composite over white, as for RGBA PIL images
            alpha = pixels[3:] / scale
            pixels = pixels[:3] * alpha + scale * (1 - alpha)
        elif channels == 1:
            pixels = pixels.expand(3, -1, -1)
        return pixels.contiguous()

    # ----------------------------------------------------------------------------------------------
    # RGB images -> model inputs
    def _preprocess(
        self,
        images: list,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        """Per image ``_fit_image`` (the family's sizing) then rescale + normalize; ``_pack`` makes the batch."""
        pixels = []
        for index, image in enumerate(images):
            image = self._fit_image(index, image, **kwargs)
            pixels.append(
                self._to_normalized_tensor(image, do_rescale, rescale_factor, do_normalize, image_mean, image_std)
            )
        data = self._pack(pixels, **kwargs)
        if return_tensors == "np":
            data = {key: value.numpy() for key, value in data.items()}
        return BatchFeature(data=data)

    def _fit_image(self, index: int, image, **kwargs):
        """Crop / resize / size check of image ``index`` (RGB PIL image or float ``[3, H, W]`` tensor) before
        normalization, with the call's settings; the base keeps every image as it is."""
        return image

    def _pack(self, pixels: list[torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        """Normalized ``[3, H, W]`` images -> the model inputs; the base stacks them into ``pixel_values``."""
        return {"pixel_values": torch.stack(same_channels(pixels))}

    @staticmethod
    def _height_width(image) -> tuple[int, int]:
        """(H, W) of an RGB PIL image or a ``[3, H, W]`` tensor."""
        return (image.height, image.width) if isinstance(image, Image.Image) else tuple(image.shape[-2:])

    def _to_normalized_tensor(self, image, do_rescale, rescale_factor, do_normalize, image_mean, image_std):
        """RGB PIL image (or float ``[3, H, W]`` tensor) -> float32 ``[3, H, W]`` rescaled and normalized, both
        computed in ``_normalize_dtype``."""
        dtype = self._normalize_dtype
        if isinstance(image, Image.Image):
            pixels = torch.from_numpy(np.atleast_3d(np.asarray(image)).copy()).permute(2, 0, 1).to(dtype)
        else:
            pixels = image.to(dtype)
        if do_normalize and not len(image_mean) == len(image_std) == pixels.shape[0]:
            raise ValueError(
                f"an image with {pixels.shape[0]} channels needs image_mean / image_std with {pixels.shape[0]} "
                f"values, got {list(image_mean)} / {list(image_std)}"
            )
        if do_rescale:
            # dividing by 255 (not multiplying by 1/255) is what torchvision's ToTensor does, bit for bit
            pixels = pixels / 255.0 if math.isclose(rescale_factor, 1 / 255) else pixels * rescale_factor
        if do_normalize:
            mean = torch.tensor(image_mean, dtype=dtype).view(-1, 1, 1)
            std = torch.tensor(image_std, dtype=dtype).view(-1, 1, 1)
            pixels = (pixels - mean) / std
        return pixels.float()

    # ----------------------------------------------------------------------------------------------
    # decoded tensors -> images
    def postprocess(self, outputs, output_type: str = "pil", do_denormalize: bool = True):
        """Decoded images ``[B, 3, H, W]`` in model space -> one image each.

        ``outputs``: a tensor (one ``[3, H, W]`` image is a batch of one), a decoder output with ``sample``, or a
        processor ``BatchFeature`` with ``pixel_values``. ``output_type``: ``"pil"``, ``"np"`` (HWC float in
        [0, 1]) or ``"pt"`` (CHW float in [0, 1]); ``do_denormalize=False`` keeps np / pt in model space.
        """
        sample = torch.as_tensor(self._sample_of(outputs))
        if sample.dim() == 3:
            sample = sample[None]
        if sample.dim() != 4 or sample.shape[1] != 3:
            raise ValueError(
                f"postprocess needs images [B, 3, H, W] (or one [3, H, W]), got shape {tuple(sample.shape)}"
            )
        return self._convert_output(list(sample), output_type, do_denormalize)

    @staticmethod
    def _sample_of(outputs):
        """The images of a decoder output (``sample``) or a ``BatchFeature`` (``pixel_values``); else ``outputs``."""
        if not isinstance(outputs, Mapping):
            return outputs
        sample = outputs["sample"] if "sample" in outputs else outputs.get("pixel_values")
        if sample is None:
            raise ValueError("postprocess needs a tensor, a decoder output with `sample`, or `pixel_values`")
        return sample

    def _denormalize(self, image: torch.Tensor) -> torch.Tensor:
        """Model space -> [0, 1]; inverse of ``normalize`` (and of ``rescale`` to 0..1), clamped."""
        image = image.float()
        if self.do_normalize:
            mean = torch.tensor(self.image_mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
            std = torch.tensor(self.image_std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
            image = image * std + mean
        return image.clamp(0.0, 1.0)

    def _convert_output(self, images: Sequence[torch.Tensor], output_type: str, do_denormalize: bool):
        """List of ``[3, H, W]`` model-space tensors -> list of PIL images, HWC arrays or CHW tensors."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if output_type == "pil":
            do_denormalize = True
        converted = [self._denormalize(image) if do_denormalize else image for image in images]
        if output_type == "pt":
            return converted
        arrays = [image.detach().cpu().float().permute(1, 2, 0).numpy() for image in converted]
        if output_type == "np":
            return arrays
        return [Image.fromarray(np.round(array * 255.0).astype(np.uint8)) for array in arrays]
