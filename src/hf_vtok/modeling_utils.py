"""Base class of every hf_vtok tokenizer (a transformers ``PreTrainedModel``)."""

import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from .modules import FP32LayerNorm, LayerScale, RMSNorm
from .modules.modulation import zero_init_rows_
from .publishing import HubMixin


class VisualTokenizerPreTrainedModel(HubMixin, PreTrainedModel):
    """Common surface of the tokenizers: ``encode`` / ``decode`` / ``forward``.

    Families implement ``encode(pixel_values, ...) -> VisualTokenizerEncoderOutput`` and
    ``decode(latents=None, image_tokens=None, ...) -> VisualTokenizerDecoderOutput``. Weights are
    initialised like the original research code (PyTorch defaults for Linear layers, the
    configured value for LayerScale) rather than transformers' ``normal(0, 0.02)``.
    """

    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _can_compile_fullgraph = True
    # LoRA targets for peft's ``LoraConfig(target_modules=list(model.lora_target_modules))``: the fused attention
    # and the MLP projections of every block (stock recipes' ``to_q`` / ``q_proj`` / ... name no layer here)
    lora_target_modules = ("qkv_proj", "out_proj", "fc1", "fc2")

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

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def encode(self, pixel_values: torch.Tensor, **kwargs):
        raise NotImplementedError

    def decode(self, latents: torch.Tensor | None = None, image_tokens: torch.Tensor | None = None, **kwargs):
        raise NotImplementedError
