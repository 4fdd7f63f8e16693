"""What the hf_vtok generation pipelines share: Hub loading, input checks, decoding through the tokenizer.

A pipeline composes a tokenizer (an hf_vtok ``PreTrainedModel``, the component ``vae``: in diffusers
``tokenizer`` names a text tokenizer), a transformer (a diffusers ``ModelMixin``) and a scheduler. With ``hf_vtok``
imported, a saved folder loads through the concrete class (``SiTPipeline.from_pretrained(folder or Hub id)``)
or diffusers' generic ``DiffusionPipeline.from_pretrained(folder)``; a folder with remote code (``push_to_hub``,
``hf_vtok.remote_code.write_pipeline_remote_code``) also loads with ``trust_remote_code=True`` where hf_vtok
is not installed. Folders saved before the autoencoder was named ``vae`` (component ``tokenizer``) load through
the concrete class (``SiTPipeline.from_pretrained``) and ``hf_vtok.hub.loading``; ``pipe.tokenizer`` is a
deprecated alias of ``pipe.vae``.
"""

import importlib
import inspect
import math
import os
import warnings
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor

from ..publishing import HubMixin
from ..remote_code import is_hf_vtok_class, native_model_index

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
# the autoencoder component, and its name in folders saved before it was called ``vae``
AUTOENCODER_COMPONENT, LEGACY_AUTOENCODER_COMPONENT = "vae", "tokenizer"


def hub_download_options(kwargs: dict) -> dict:
    """The options of ``from_pretrained``'s ``kwargs`` that a Hub download takes (those set)."""
    names = ("cache_dir", "force_download", "local_files_only", "token", "revision")
    return {key: kwargs[key] for key in names if kwargs.get(key) is not None}


def is_legacy_layout(model_index: dict) -> bool:
    """Whether a ``model_index.json`` names the autoencoder ``tokenizer`` (hf_vtok's layout before ``vae``)."""
    return LEGACY_AUTOENCODER_COMPONENT in model_index and AUTOENCODER_COMPONENT not in model_index


class HubPipelineMixin(HubMixin):
    """Hub loading of the hf_vtok pipelines: a Hub id is fetched whole, and a folder written with remote code loads
    into hf_vtok's own classes."""

    @classmethod
    def download(cls, pretrained_model_name, **kwargs) -> str:
        """Fetch a Hub repository (diffusers' own ``download`` only accepts diffusers / transformers components)."""
        from huggingface_hub import snapshot_download

        return snapshot_download(pretrained_model_name, **hub_download_options(kwargs))

    @classmethod
    def load_config(cls, *args, **kwargs):
        """``model_index.json`` with the entries remote code replaced put back, so that hf_vtok's class loads a
        remote-code folder as its own (a copy of the class in remote code keeps the remote entries)."""
        loaded = super().load_config(*args, **kwargs)
        if is_hf_vtok_class(cls):
            native_model_index(loaded[0] if isinstance(loaded, tuple) else loaded)
        return loaded


class TokenizerGenerationPipeline(HubPipelineMixin, DiffusionPipeline):
    """Base of ``SiTPipeline``, ``DiT1DPipeline`` and ``ViTokDiTPipeline``.

    ``__call__`` takes diffusers' ``callback_on_step_end(pipeline, step, timestep, tensors) -> dict`` (the tensors
    named by ``callback_on_step_end_tensor_inputs``, of ``_callback_tensor_inputs``; what it returns replaces them).
    ``num_images_per_prompt`` is not taken: the pipelines have no prompt; repeat a class label for more images.
    """

    model_cpu_offload_seq = "transformer->vae"
    _callback_tensor_inputs = ["latents"]
    fixed_token_count = True  # False where the transformer takes any number of tokens (ViTok DiT)

    def __init__(self, vae, transformer, scheduler):
        """Subclasses keep their own typed ``__init__`` (diffusers reads the component types from it)."""
        super().__init__()
        self.register_modules(vae=vae, transformer=transformer, scheduler=scheduler)
        self.check_components()

    @property
    def tokenizer(self):
        """Deprecated alias of ``vae``, the autoencoder's name before (``tokenizer`` is a text tokenizer in
        diffusers)."""
        warnings.warn(
            f"{type(self).__name__}.tokenizer is deprecated: the autoencoder component is `vae`",
            FutureWarning,
            stacklevel=2,
        )
        return self.vae

    @classmethod
    def load_config(cls, *args, **kwargs):
        """``model_index.json``, with the ``tokenizer`` entry of a folder saved before the autoencoder was named
        ``vae`` renamed (``from_pretrained`` passes that component, loaded from the ``tokenizer/`` subfolder)."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        if is_legacy_layout(config):
            config[AUTOENCODER_COMPONENT] = config.pop(LEGACY_AUTOENCODER_COMPONENT)
        return loaded

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """diffusers' generic ``DiffusionPipeline.from_pretrained`` of a folder of the old layout: an error that says
        what loads it (the concrete class renames the component in ``load_config`` first)."""
        if is_legacy_layout(config_dict):
            raise ValueError(
                f"this {cls.__name__} folder names its autoencoder `tokenizer` (saved before hf_vtok called it `vae`):"
                f" load it with hf_vtok.{cls.__name__}.from_pretrained(...) (then save_pretrained writes `vae`)"
            )
        return super().extract_init_dict(config_dict, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``; a folder or Hub repo of the old layout (the autoencoder in ``tokenizer/``)
        loads too, its autoencoder passed as ``vae``."""
        if AUTOENCODER_COMPONENT not in kwargs:
            options = hub_download_options(kwargs)
            folder = Path(str(pretrained_model_name_or_path))
            index_file = folder / "model_index.json"
            if not folder.is_dir():  # a Hub id: its model_index.json alone first
                from huggingface_hub import hf_hub_download

                hub_options = {key: value for key, value in options.items() if key != "cache_dir"}
                index_file = hf_hub_download(
                    str(pretrained_model_name_or_path), "model_index.json", cache_dir=options.get("cache_dir"),
                    **hub_options,
                )  # fmt: skip
            # model_index.json as saved (remote-code entries made native), before this class renames the entry
            model_index = super().load_config(str(index_file))
            if is_legacy_layout(model_index):
                if not folder.is_dir():
                    folder = Path(cls.download(str(pretrained_model_name_or_path), **options))
                library, class_name = model_index[LEGACY_AUTOENCODER_COMPONENT]
                dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
                autoencoder = getattr(importlib.import_module(library), class_name).from_pretrained(
                    folder / LEGACY_AUTOENCODER_COMPONENT, **({"dtype": dtype} if dtype is not None else {})
                )
                return super().from_pretrained(str(folder), **{AUTOENCODER_COMPONENT: autoencoder}, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def default_scheduler(cls, transformer, sampling=None):
        """The scheduler of the original sampler (``sampling``: a release's recipe, ``hf_vtok.registry``)."""
        raise NotImplementedError

    @classmethod
    def from_components(cls, transformer, vae=None, scheduler=None, sampling=None, *, tokenizer=None):
        """Pipeline from a converted transformer and a tokenizer ``vae`` (model, folder or Hub id; ``tokenizer=``
        is its deprecated name); without ``scheduler`` the original's sampler, set up by the release's ``sampling``
        recipe where it has one."""
        if tokenizer is not None:
            if vae is not None:
                raise ValueError("pass the tokenizer once: as vae (tokenizer= is its deprecated name)")
            warnings.warn("from_components(tokenizer=...) is deprecated: pass vae=", FutureWarning, stacklevel=2)
            vae = tokenizer
        if vae is None:
            raise ValueError(f"{cls.__name__}.from_components needs the tokenizer (vae=)")
        if scheduler is None:
            scheduler = cls.default_scheduler(transformer, sampling)
        return cls(vae=tokenizer_from(vae), transformer=transformer, scheduler=scheduler)

    # ----------------------------------------------------------------------------------------------
    # checks that run before any compute
    def _tokenizer_latent_size(self) -> tuple[int | None, int | None]:
        """``(channels, tokens)`` of the tokenizer's latents, None where the tokenizer does not fix it."""
        config = self.vae.config
        return getattr(config, "latent_channels", None), getattr(config, "num_latent_tokens", None)

    def check_components(self) -> None:
        """The tokenizer's latents must be what the transformer generates."""
        channels, tokens = self._tokenizer_latent_size()
        config = self.transformer.config
        if channels is not None and channels != config.in_channels:
            raise ValueError(
                f"the tokenizer ({type(self.vae).__name__}) has {channels}-channel latents but the transformer "
                f"generates {config.in_channels} channels per token"
            )
        expected_tokens = getattr(config, "num_tokens", None)
        if tokens is not None and expected_tokens is not None and tokens != expected_tokens and self.fixed_token_count:
            raise ValueError(
                f"the tokenizer ({type(self.vae).__name__}) has {tokens} latent tokens but the transformer "
                f"generates {expected_tokens}"
            )

    def prepare_class_labels(self, class_labels, num_classes: int) -> torch.LongTensor:
        """``class_labels`` (an int, a list, a nested ``[[id], [id]]`` list as diffusers' batching makes it, or a
        tensor ``[B]`` / ``[B, 1]``) as a LongTensor ``[B]`` on the execution device, range-checked."""
        if class_labels is None:
            raise ValueError("class_labels is required (ImageNet class ids, 0..999 for the released models)")
        if isinstance(class_labels, int):
            class_labels = [class_labels]
        try:
            labels = torch.as_tensor(class_labels)
        except (TypeError, ValueError, RuntimeError):  # ragged or non-numeric lists
            labels = None
        if labels is not None and labels.dim() == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if (
            labels is None
            or labels.dtype.is_floating_point
            or labels.dtype == torch.bool
            or labels.dim() != 1
            or labels.numel() == 0
        ):
            raise ValueError(
                f"class_labels must be a non-empty list of integer class ids (or [[id], ...]), got {class_labels!r}"
            )
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

    def check_callback(self, callback, tensor_inputs) -> tuple[str, ...]:
        """The names of the tensors ``callback_on_step_end`` receives (a diffusers ``PipelineCallback`` names its
        own)."""
        from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

        if isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
            tensor_inputs = callback.tensor_inputs
        elif callback is not None and not callable(callback):
            raise ValueError(f"callback_on_step_end must be callable, got {type(callback).__name__}")
        tensor_inputs = tuple(tensor_inputs)
        unknown = [name for name in tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {unknown} are not among the pipeline's "
                f"{self._callback_tensor_inputs}"
            )
        return tensor_inputs

    def step_callback(self, callback, tensor_inputs, step: int, timestep, latents: torch.Tensor) -> torch.Tensor:
        """``latents`` after ``callback_on_step_end(self, step, timestep, tensors)`` (itself without a callback)."""
        if callback is None:
            return latents
        tensors = {"latents": latents}
        returned = callback(self, step, timestep, {name: tensors[name] for name in tensor_inputs}) or {}
        return returned.get("latents", latents)

    def check_call(self, class_labels, guidance_scale: float, num_inference_steps: int, output_type: str):
        """The checks every ``__call__`` runs before any compute; returns ``(labels [B], guided)``."""
        self.check_components()
        labels = self.prepare_class_labels(class_labels, self.transformer.config.num_classes)
        guided = self.check_guidance_scale(guidance_scale)
        self.check_steps(num_inference_steps)
        self.check_output_type(output_type)
        return labels, guided

    def prepare_latents(self, latents: torch.Tensor | None, shape: tuple[int, ...], generator, dtype: torch.dtype):
        """The initial noise: ``latents`` (checked against ``shape``) or a float32 draw from ``generator`` (one, or
        one per image), on the execution device in the sampler's ``dtype``."""
        self.check_latents(latents, shape)
        if isinstance(generator, list) and len(generator) != shape[0]:
            raise ValueError(
                f"{len(generator)} generators for a batch of {shape[0]}: pass one generator, or one per image"
            )
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
        config = self.vae.config
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
        images = self.vae.decode(latents.to(self.vae.dtype)).sample
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


__all__ = ["OUTPUT_TYPES", "HubPipelineMixin", "TokenizerGenerationPipeline", "tokenizer_from"]
