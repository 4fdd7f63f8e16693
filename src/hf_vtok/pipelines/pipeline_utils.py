"""What the hf_vtok generation pipelines share: Hub loading, input checks, decoding through the tokenizer.

A pipeline composes a tokenizer (an hf_vtok ``PreTrainedModel``), a transformer (a diffusers
``ModelMixin``) and a scheduler. Its components live outside diffusers, so load it through the
concrete class (``SiTPipeline.from_pretrained(folder or Hub id)``), with ``hf_vtok`` imported.
"""

import inspect
import math
import os

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor

from ..publishing import HubMixin

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class TokenizerGenerationPipeline(HubMixin, DiffusionPipeline):
    """Base of ``SiTPipeline``, ``DiT1DPipeline`` and ``ViTokDiTPipeline``."""

    model_cpu_offload_seq = "transformer->tokenizer"
    fixed_token_count = True  # False where the transformer takes any number of tokens (ViTok DiT)

    def __init__(self, tokenizer, transformer, scheduler):
        """Subclasses keep their own typed ``__init__`` (diffusers reads the component types from it)."""
        super().__init__()
        self.register_modules(tokenizer=tokenizer, transformer=transformer, scheduler=scheduler)
        self.check_components()

    @classmethod
    def default_scheduler(cls, transformer, sampling=None):
        """The scheduler of the original sampler (``sampling``: a release's recipe, ``hf_vtok.registry``)."""
        raise NotImplementedError

    @classmethod
    def from_components(cls, transformer, tokenizer, scheduler=None, sampling=None):
        """Pipeline from a converted transformer and a tokenizer (model, folder or Hub id); without ``scheduler``
        the original's sampler, set up by the release's ``sampling`` recipe where it has one."""
        if scheduler is None:
            scheduler = cls.default_scheduler(transformer, sampling)
        return cls(tokenizer=tokenizer_from(tokenizer), transformer=transformer, scheduler=scheduler)

    @classmethod
    def download(cls, pretrained_model_name, **kwargs) -> str:
        """Fetch a Hub repository (diffusers' own ``download`` only accepts diffusers / transformers components)."""
        from huggingface_hub import snapshot_download

        names = ("cache_dir", "force_download", "local_files_only", "token", "revision")
        options = {key: kwargs[key] for key in names if kwargs.get(key) is not None}
        return snapshot_download(pretrained_model_name, **options)

    # ----------------------------------------------------------------------------------------------
    # checks that run before any compute
    def _tokenizer_latent_size(self) -> tuple[int | None, int | None]:
        """``(channels, tokens)`` of the tokenizer's latents, None where the tokenizer does not fix it."""
        config = self.tokenizer.config
        return getattr(config, "latent_channels", None), getattr(config, "num_latent_tokens", None)

    def check_components(self) -> None:
        """The tokenizer's latents must be what the transformer generates."""
        channels, tokens = self._tokenizer_latent_size()
        config = self.transformer.config
        if channels is not None and channels != config.in_channels:
            raise ValueError(
                f"the tokenizer ({type(self.tokenizer).__name__}) has {channels}-channel latents but the transformer "
                f"generates {config.in_channels} channels per token"
            )
        expected_tokens = getattr(config, "num_tokens", None)
        if tokens is not None and expected_tokens is not None and tokens != expected_tokens and self.fixed_token_count:
            raise ValueError(
                f"the tokenizer ({type(self.tokenizer).__name__}) has {tokens} latent tokens but the transformer "
                f"generates {expected_tokens}"
            )

    def prepare_class_labels(self, class_labels, num_classes: int) -> torch.LongTensor:
        """``class_labels`` (int, list or tensor) as a LongTensor ``[B]`` on the execution device, range-checked."""
        if class_labels is None:
            raise ValueError("class_labels is required (ImageNet class ids, 0..999 for the released models)")
        if isinstance(class_labels, int):
            class_labels = [class_labels]
        labels = torch.as_tensor(class_labels)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dim() != 1 or labels.numel() == 0:
            raise ValueError(f"class_labels must be a non-empty list of integer class ids, got {class_labels!r}")
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if bad.numel():
            raise ValueError(
                f"class_labels {bad.tolist()} are out of range: the transformer knows classes 0..{num_classes - 1}"
            )
        return labels.to(self._execution_device)

    def check_guidance_scale(self, guidance_scale: float) -> bool:
        """Whether classifier-free guidance runs; errors for scales that make no sense or a model without a null
        class."""
        if not math.isfinite(guidance_scale) or guidance_scale < 1.0:
            raise ValueError(f"guidance_scale must be a finite number >= 1 (1 = no guidance), got {guidance_scale}")
        guided = guidance_scale > 1.0
        if guided and self.transformer.null_class_label is None:
            raise ValueError(
                "classifier-free guidance needs the transformer's null class, but it was built with "
                "class_dropout_prob=0; use guidance_scale=1"
            )
        return guided

    @staticmethod
    def check_output_type(output_type: str) -> None:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"unknown output_type {output_type!r}; expected one of {OUTPUT_TYPES}")

    @staticmethod
    def check_steps(num_inference_steps: int) -> None:
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")

    @staticmethod
    def check_latents(latents: torch.Tensor | None, shape: tuple[int, ...]) -> None:
        if latents is not None and tuple(latents.shape) != tuple(shape):
            raise ValueError(f"latents (the initial noise) must have shape {tuple(shape)}, got {tuple(latents.shape)}")

    def check_call(self, class_labels, guidance_scale: float, num_inference_steps: int, output_type: str):
        """The checks every ``__call__`` runs before any compute; returns ``(labels [B], guided)``."""
        self.check_components()
        labels = self.prepare_class_labels(class_labels, self.transformer.config.num_classes)
        guided = self.check_guidance_scale(guidance_scale)
        self.check_steps(num_inference_steps)
        self.check_output_type(output_type)
        return labels, guided

    def prepare_latents(self, latents: torch.Tensor | None, shape: tuple[int, ...], generator, dtype: torch.dtype):
        """The initial noise: ``latents`` (checked against ``shape``) or a float32 draw from ``generator``, on the
        execution device in the sampler's ``dtype``."""
        self.check_latents(latents, shape)
        device = self._execution_device
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        return latents.to(device=device, dtype=dtype)

    def step_kwargs(self, generator) -> dict:
        """``generator=`` for schedulers whose ``step`` draws noise (UniPC's does not take one)."""
        return {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}

    # ----------------------------------------------------------------------------------------------
    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Generator latents -> tokenizer latents: ``latents / scaling_factor + shift_factor`` (diffusers
        convention)."""
        config = self.tokenizer.config
        scaling = getattr(config, "scaling_factor", None)
        shift = getattr(config, "shift_factor", None)
        if scaling is not None and scaling != 1.0:
            latents = latents / scaling
        if shift is not None and shift != 0.0:
            latents = latents + shift
        return latents

    def images_from_tokenizer_output(self, images: torch.Tensor, output_type: str):
        """Decoded images in [-1, 1] ``[B, 3, H, W]`` -> clamp, [0, 1], then PIL / numpy / tensor."""
        images = ((images.clamp(-1, 1) + 1) / 2).float()
        if output_type == "pt":
            return images
        array = images.permute(0, 2, 3, 1).cpu().numpy()
        return array if output_type == "np" else VaeImageProcessor.numpy_to_pil(array)

    def decode_samples(
        self, samples: torch.Tensor, output_type: str, return_dict: bool, grid_shape: tuple[int, int] | None = None
    ):
        """The pipeline output of generated latents: themselves for ``"latent"``, else the tokenizer's images.

        ``grid_shape`` puts raster-order tokens ``[B, rows * cols, C]`` on the ``[B, C, rows, cols]`` grid the
        tokenizer decodes.
        """
        if output_type == "latent":
            return self.finish(samples, output_type, return_dict)
        latents = self.denormalize_latents(samples)
        if grid_shape is not None:
            latents = latents.transpose(1, 2).unflatten(2, grid_shape)
        images = self.tokenizer.decode(latents.to(self.tokenizer.dtype)).sample
        return self.finish(self.images_from_tokenizer_output(images, output_type), output_type, return_dict)

    def finish(self, images, output_type: str, return_dict: bool):
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def tokenizer_from(spec) -> torch.nn.Module:
    """An hf_vtok tokenizer from a model, a saved folder or a Hub id (``AutoModel`` once ``hf_vtok`` is imported)."""
    if isinstance(spec, torch.nn.Module):
        return spec
    from transformers import AutoModel

    if isinstance(spec, (str, os.PathLike)):
        try:
            return AutoModel.from_pretrained(spec).eval()
        except (OSError, ValueError) as error:
            raise ValueError(f"could not load a tokenizer from {str(spec)!r}: {error}") from error
    raise ValueError(f"tokenizer must be a model, a folder or a Hub id, got {type(spec).__name__}")


__all__ = ["OUTPUT_TYPES", "TokenizerGenerationPipeline", "tokenizer_from"]
