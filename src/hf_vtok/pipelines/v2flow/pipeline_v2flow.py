"""Images <-> V²Flow token ids, composing diffusers' ``AutoencoderDC`` with a ``V2FlowModel``."""

import numpy as np
import torch
from diffusers import AutoencoderDC, DiffusionPipeline, ImagePipelineOutput
from diffusers.utils import logging

from ...models.v2flow import V2FlowEncoderOutput, V2FlowImageProcessor, V2FlowModel
from ..pipeline_utils import HubPipelineMixin

logger = logging.get_logger(__name__)


class V2FlowPipeline(HubPipelineMixin, DiffusionPipeline):
    r"""Tokenize images into V²Flow ids and turn ids back into images.

    ``encode_images``: ADM center crop -> [-1, 1] -> DC-AE ``encode(...).latent`` -> x ``scaling_factor``
    -> ``V2FlowModel.encode`` (ids ``[B, L]``). ``decode_tokens`` / ``__call__(image_tokens=...)``: the
    masked-AR flow decoder -> / ``scaling_factor`` -> DC-AE ``decode``. The scaling factor is the
    tokenizer's ``config.scaling_factor`` (the one it was trained with) on both sides; the original's
    evaluation forgets it on the input side, which is a bug, not reproduced here.

    Args:
        vae: the DC-AE (``AutoencoderDC``), e.g. ``mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers``.
        tokenizer: the ``V2FlowModel``.
    """

    model_cpu_offload_seq = "vae->tokenizer->vae"

    def __init__(self, vae: AutoencoderDC, tokenizer: V2FlowModel):
        super().__init__()
        config = tokenizer.config
        if vae.config.latent_channels != config.latent_channels:
            raise ValueError(
                f"the DC-AE makes {vae.config.latent_channels}-channel latents but the V2Flow tokenizer takes "
                f"{config.latent_channels}"
            )
        ratio = getattr(vae, "spatial_compression_ratio", config.vae_downsample_factor)
        if ratio != config.vae_downsample_factor:
            raise ValueError(
                f"the DC-AE downsamples by {ratio} but the tokenizer expects {config.vae_downsample_factor} "
                "(config.vae_downsample_factor)"
            )
        if vae.config.scaling_factor not in (1.0, config.scaling_factor):
            logger.warning(
                f"the DC-AE's scaling_factor {vae.config.scaling_factor} differs from the tokenizer's "
                f"{config.scaling_factor}; the tokenizer's is used"
            )
        self.register_modules(vae=vae, tokenizer=tokenizer)
        size = config.image_size
        self.image_processor = V2FlowImageProcessor(crop_size={"height": size, "width": size})

    @property
    def scaling_factor(self) -> float:
        return float(self.tokenizer.config.scaling_factor)

    def preprocess(self, images) -> torch.Tensor:
        """Images (PIL, arrays, paths, or a ``[B, 3, S, S]`` tensor in [-1, 1]) -> ``pixel_values``."""
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            size = self.tokenizer.config.image_size
            if images.shape[1] != 3 or tuple(images.shape[2:]) != (size, size):
                raise ValueError(f"pixel tensors must be [B, 3, {size}, {size}] in [-1, 1], got {tuple(images.shape)}")
            return images
        return self.image_processor(images, return_tensors="pt").pixel_values

    @torch.no_grad()
    def encode_images(
        self,
        images,
        generator: torch.Generator | None = None,
        resampler_sampling: str | None = None,
    ) -> V2FlowEncoderOutput:
        """Images -> ``V2FlowEncoderOutput`` (``image_tokens [B, L]``, code vectors, ...)."""
        pixel_values = self.preprocess(images).to(self.vae.device, self.vae.dtype)
        latents = self.vae.encode(pixel_values).latent * self.scaling_factor
        return self.tokenizer.encode(
            latents.to(self.tokenizer.device), generator=generator, resampler_sampling=resampler_sampling
        )

    @torch.no_grad()
    def decode_tokens(self, image_tokens: torch.Tensor, output_type: str = "pil", **decode_kwargs):
        """Ids ``[B, L]`` -> images: ``output_type`` ``"pil"`` (a list), ``"np"`` (``[B, H, W, 3]`` in [0, 1]),
        ``"pt"`` (``[B, 3, H, W]`` in [0, 1]), or ``"latent"`` for the DC-AE latents in DC-AE space, i.e. already
        divided by the scaling factor."""
        decoded = self.tokenizer.decode(image_tokens=image_tokens.to(self.tokenizer.device), **decode_kwargs)
        latents = decoded.sample / self.scaling_factor
        if output_type == "latent":
            return latents
        images = self.vae.decode(latents.to(self.vae.device, self.vae.dtype)).sample
        images = self.image_processor.postprocess(images, output_type=output_type)
        # one batched array / tensor, as diffusers pipelines return them (the processor gives one per image)
        if output_type == "pt":
            return torch.stack(images)
        return np.stack(images) if output_type == "np" else images

    @torch.no_grad()
    def __call__(
        self,
        images=None,
        image_tokens: torch.Tensor | None = None,
        num_ar_steps: int | None = None,
        guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        resampler_sampling: str | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""Reconstruct ``images`` through V²Flow tokens, or decode given ``image_tokens``.

        ``num_ar_steps``, ``guidance_scale``, ``num_inference_steps``, ``generator`` and ``noise`` go to
        ``V2FlowModel.decode``; ``generator`` also draws the tokenizer's Gumbel noise.
        """
        if (images is None) == (image_tokens is None):
            raise ValueError("pass exactly one of images (to reconstruct) or image_tokens (to decode)")
        if image_tokens is None:
            image_tokens = self.encode_images(images, generator, resampler_sampling).image_tokens
        return self._images_output(
            image_tokens,
            output_type,
            return_dict,
            num_ar_steps=num_ar_steps,
            guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps,
            generator=generator,
            noise=noise,
        )

    def _images_output(self, image_tokens: torch.Tensor, output_type: str, return_dict: bool, **decode_kwargs):
        """The end of ``__call__``: decode the ids, free offloaded models, wrap the images."""
        images = self.decode_tokens(image_tokens, output_type=output_type, **decode_kwargs)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
