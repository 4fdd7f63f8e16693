"""Base class of every hf_vtok tokenizer (a transformers ``PreTrainedModel``)."""

import math
from collections.abc import Callable

import torch
from diffusers.models.autoencoders.vae import AutoencoderMixin
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .modules import FP32LayerNorm, LayerScale, RMSNorm
from .modules.modulation import zero_init_rows_
from .publishing import HubMixin
from .utils.prepack import enable_fast_linear


def _take(value, index: int):
    """Sample ``index`` of a batched argument: ``[1, ...]`` of a tensor ``[B, ...]``, element-wise in tuples / lists,
    anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value[index : index + 1]
    if isinstance(value, (tuple, list)):
        return type(value)(_take(item, index) for item in value)
    return value


def concatenate_batches(pieces: list):
    """Results of one call per batch slice -> the batched result: tensors concatenated along dim 0, tuples / lists
    / ``ModelOutput``s element by element, ``None`` kept."""
    first = pieces[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        if first.dim() == 0:
            raise ValueError("a batch slice returned a 0-dim tensor; only batched results can be concatenated")
        return torch.cat(pieces, dim=0)
    if isinstance(first, ModelOutput):
        return type(first)(**{key: concatenate_batches([piece[key] for piece in pieces]) for key in first.keys()})
    if isinstance(first, (tuple, list)):
        return type(first)(concatenate_batches(list(items)) for items in zip(*pieces))
    raise TypeError(f"cannot concatenate batch slices of type {type(first).__name__}")


class VisualTokenizerPreTrainedModel(AutoencoderMixin, HubMixin, PreTrainedModel):
    """Common surface of the tokenizers: ``encode`` / ``decode`` / ``forward``.

    Families implement ``encode(pixel_values, ...) -> VisualTokenizerEncoderOutput`` and
    ``decode(latents=None, image_tokens=None, ...) -> VisualTokenizerDecoderOutput``. Weights are
    initialised like the original research code (PyTorch defaults for Linear layers, the
    configured value for LayerScale) rather than transformers' ``normal(0, 0.02)``.

    diffusers' autoencoder surface (``AutoencoderMixin``): ``enable_slicing()`` / ``disable_slicing()`` run
    encode and decode one sample at a time (the same result as the whole batch, bit for bit, given the same
    noise); families whose decoder can decode tiles set ``use_tiling`` and so take ``enable_tiling()``.
    ``get_input_embeddings()`` is the module the input goes through first (``_input_embeddings``, a dotted path):
    the patch embedding, as for transformers' vision models.
    """

    use_slicing = False
    _input_embeddings: str | None = None

    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _can_compile_fullgraph = True
    # LoRA targets for peft's ``LoraConfig(target_modules=list(model.lora_target_modules))``: the fused attention
    # and the MLP projections of every block (stock recipes' ``to_q`` / ``q_proj`` / ... name no layer here)
    lora_target_modules = ("qkv_proj", "out_proj", "fc1", "fc2")

    def post_init(self):
        super().post_init()
        enable_fast_linear(self)  # oneDNN linears for CPU inference; weights, state dict and training unchanged

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            # torch's own Linear.reset_parameters, through the init helpers that respect loaded weights
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1.0 / math.sqrt(module.in_features) if module.in_features > 0 else 0.0
                init.uniform_(module.bias, -bound, bound)
            if not getattr(module.weight, "_is_hf_initialized", False):
                zero_init_rows_(module)  # e.g. adaLN gates that start at zero (AdaLNModulation)
        elif isinstance(module, LayerScale):
            init.constant_(module.gamma, module.init_value)
        elif isinstance(module, (RMSNorm, FP32LayerNorm, nn.LayerNorm)):
            if module.weight is not None:
                init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def get_input_embeddings(self) -> nn.Module:
        """The module that embeds the input (``_input_embeddings``): a patch embedding, or V²Flow's connector stem."""
        if self._input_embeddings is None:
            raise NotImplementedError(f"{type(self).__name__} does not name its input embedding (_input_embeddings)")
        return self.get_submodule(self._input_embeddings)

    def set_input_embeddings(self, value: nn.Module) -> None:
        if self._input_embeddings is None:
            raise NotImplementedError(f"{type(self).__name__} does not name its input embedding (_input_embeddings)")
        parent, _, name = self._input_embeddings.rpartition(".")
        setattr(self.get_submodule(parent), name, value)

    def _output_hidden_states(self, output_hidden_states: bool | None) -> bool:
        """``output_hidden_states`` of a ``forward`` call: the argument, else ``config.output_hidden_states``."""
        return self.config.output_hidden_states if output_hidden_states is None else output_hidden_states

    def _batch_sliced(self, function: Callable, *batched, **shared):
        """``function(*batched, **shared)``; with ``enable_slicing()`` one sample of the ``batched`` tensors at a time,
        the results concatenated (``concatenate_batches``). ``batched[0]`` gives the batch size."""
        batch = batched[0].shape[0]
        if not self.use_slicing or batch <= 1:
            return function(*batched, **shared)
        return concatenate_batches(
            [function(*(_take(value, index) for value in batched), **shared) for index in range(batch)]
        )

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def encode(self, pixel_values: torch.Tensor, **kwargs):
        raise NotImplementedError

    def decode(self, latents: torch.Tensor | None = None, image_tokens: torch.Tensor | None = None, **kwargs):
        raise NotImplementedError
