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
from .registry import FAMILIES, TOKENIZER
from .utils.prepack import enable_fast_linear
from .utils.validation import check_tensor_values


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


class CheckpointTypeError(ValueError):
    """A checkpoint of another tokenizer family than the class loading it."""


def _tokenizer_types() -> dict[str, str]:
    """``{model class name: model_type}`` of the registered tokenizer families."""
    return {spec.model.rpartition(":")[2]: spec.name for spec in FAMILIES.values() if spec.kind == TOKENIZER}


def check_checkpoint_type(config_class: type, declared: str | None, architectures: list | None) -> None:
    """A config of ``config_class`` read from a config.json that declares ``model_type`` ``declared`` and was saved by
    ``architectures[0]`` must be of that class's family: else a ``CheckpointTypeError`` naming both types and the
    class to load it with. Called by every tokenizer config's ``__post_init__`` (config.json is parsed there, by
    ``from_pretrained``, ``AutoModel`` and ``AutoConfig`` alike)."""
    own_type = getattr(config_class, "model_type", "")
    if not own_type:
        return
    types = _tokenizer_types()
    classes = {model_type: name for name, model_type in types.items()}
    own = f"{config_class.__name__} is the config of {own_type!r} models ({classes.get(own_type, 'no known class')})"
    if declared is not None and declared != own_type:
        raise CheckpointTypeError(
            f"config.json declares model_type {declared!r} but {own}; load it with "
            f"{classes.get(declared, f'the class of {declared!r} models')} (or transformers.AutoModel)"
        )
    saved_by = (architectures or [None])[0]
    saved_type = types.get(saved_by)
    if saved_type and saved_type != own_type:
        raise CheckpointTypeError(
            f"config.json was saved by {saved_by} (a {saved_type!r} model) but declares model_type "
            f"{declared or own_type!r}, and {own}; load it with {saved_by} (restore its model_type to "
            f"{saved_type!r} if it was edited)"
        )


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

    Inputs are checked: ``encode`` refuses integer tensors (uint8 images), NaN / infinite values and values outside
    ``input_value_range`` (``[-1, 1]`` for pixels, with ``input_value_tolerance``) with a ``ValueError``. The value
    checks cost one pass over the input and one host sync; ``model.validate_inputs = False`` skips them, and they are
    skipped while ``torch.compile`` traces (the compiled graph has no check and no break). Loading refuses another
    family's checkpoint (a ``model_type`` or saving class of another family, or most weights missing).
    """

    use_slicing = False
    _input_embeddings: str | None = None
    # the checks of ``encode``'s input values (see ``_check_input_values``); ``model.validate_inputs = False``
    # skips them in speed-critical loops (they cost one pass over the input and one host sync)
    validate_inputs = True
    input_value_range: tuple[float, float] | None = (-1.0, 1.0)
    # bicubic resizing of an image in [-1, 1] (ViTok's token-budget resize) overshoots it by at most 56 %
    input_value_tolerance = 0.6
    input_value_hint = (
        "the model takes images normalized to [-1, 1]: run 8-bit / [0, 255] images through its image processor"
    )

    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _can_compile_fullgraph = True
    # LoRA targets for peft's ``LoraConfig(target_modules=list(model.lora_target_modules))``: the fused attention
    # and the MLP projections of every block (stock recipes' ``to_q`` / ``q_proj`` / ... name no layer here)
    lora_target_modules = ("qkv_proj", "out_proj", "fc1", "fc2")

    def __init__(self, config, *args, **kwargs):
        expected = type(self).config_class
        # by model_type too: remote code may load the config class from another copy of the same module
        if expected is not None and not isinstance(config, expected) and config.model_type != expected.model_type:
            raise CheckpointTypeError(
                f"{type(self).__name__} takes a {expected.__name__}, got a {type(config).__name__}"
            )
        super().__init__(config, *args, **kwargs)

    # ----------------------------------------------------------------------------------------------
    # loading: a checkpoint of another family is an error, not a model of random weights
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' ``from_pretrained``, refusing another family's checkpoint with a ``CheckpointTypeError`` (a
        ``ValueError``): a config.json of another ``model_type`` or saved by another family's class (see
        ``check_checkpoint_type``), or weights that leave most of the model's missing (they would start random).
        A caller that asks for ``output_loading_info=True`` gets the missing keys to judge itself instead (e.g. to
        start a model from part of a checkpoint)."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        try:
            model, loading_info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
            )
        except CheckpointTypeError as error:  # name the folder
            raise CheckpointTypeError(f"{str(pretrained_model_name_or_path)!r}: {error}") from None
        missing, total = len(loading_info["missing_keys"]), len(model.state_dict())
        if total and 2 * missing > total and not output_loading_info:
            saved_by = (model.config.architectures or ["an unknown class"])[0]
            declared = model.config.__dict__.get("model_type", "unknown")
            raise CheckpointTypeError(
                f"{missing} of the {total} weights of {cls.__name__} (a {cls.config_class.model_type!r} model) are "
                f"missing from {str(pretrained_model_name_or_path)!r} (saved by {saved_by}, model_type {declared!r}): "
                "it holds another model or another architecture, whose weights would be left random; load it with "
                "its own class (or transformers.AutoModel)"
            )
        return (model, loading_info) if output_loading_info else model

    # ----------------------------------------------------------------------------------------------
    # input values
    def _check_input_values(self, values: torch.Tensor, name: str | None = None) -> None:
        """``encode``'s input must be floating point and, unless ``validate_inputs`` is False or the call is being
        compiled (no graph break, no host sync), finite and within ``input_value_range`` (+- the tolerance)."""
        name = name or self.main_input_name
        if not isinstance(values, torch.Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(values).__name__}")
        if not values.is_floating_point():
            raise ValueError(
                f"{name} must be a floating point tensor, got dtype {values.dtype}; {self.input_value_hint}"
            )
        if self.validate_inputs and not torch.compiler.is_compiling():
            hint = f"{self.input_value_hint} (model.validate_inputs = False skips this check)"
            check_tensor_values(values, name, self.input_value_range, self.input_value_tolerance, hint=hint)

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
