"""oneDNN-prepacked ``nn.Linear`` weights for CPU inference.

On CPU, ``F.linear`` runs MKL's GEMM on the plain ``[out, in]`` weight. oneDNN's inner product on a
weight reordered once into its blocked layout is much faster wherever the row count is small: the
adaLN modulation of SiT/DiT (2 rows per call), the CFG pair of a 64-token SiT (128 rows), the V²Flow
flow head. ``prepack_linear_weights(model)`` reorders every eligible linear layer in place, so a
model (or every model of a pipeline) keeps its modules, names and outputs (to float rounding: oneDNN
sums in another order, about 1e-6 relative in float32); ``torch.compile`` with inductor's ``freezing``
does the same reorder inside a compiled graph.

Packed layers are for inference only: they refuse inputs that require grad (oneDNN's op has no
backward), and ``.to()``, ``load_state_dict`` and training want ``unpack_linear_weights(model)`` first.
``state_dict()`` and ``save_pretrained`` still write the plain weights.
"""

import ctypes
import ctypes.util
import functools
import sys
from collections import Counter
from types import MethodType

import torch
from torch import nn

PACKABLE_DTYPES = (torch.float32, torch.bfloat16)
_PACKED_NAME = "_hf_vtok_prepacked_name"  # set on packed layers: the layer's name, for error messages


def _modules_of(model) -> dict[str, nn.Module]:
    """The ``nn.Module``s to walk: the model itself, or each module component of a pipeline."""
    if isinstance(model, nn.Module):
        return {"": model}
    components = getattr(model, "components", None)
    if not isinstance(components, dict):
        raise TypeError(f"expected an nn.Module or a pipeline with .components, got {type(model).__name__}")
    return {f"{name}.": component for name, component in components.items() if isinstance(component, nn.Module)}


def prepacked_linear(
    layer: nn.Linear, hidden_states: torch.Tensor, activation: str = "none", approximate: str = ""
) -> torch.Tensor:
    """``layer(hidden_states)`` on a prepacked layer, optionally with oneDNN's fused ``activation``
    (``"gelu"`` with ``approximate`` ``"none"`` or ``"tanh"``), computed before rounding to the output dtype."""
    weight = layer.weight
    if hidden_states.dtype != weight.dtype or hidden_states.shape[-1:] != weight.shape[1:]:
        raise ValueError(
            f"{getattr(layer, _PACKED_NAME)}: input of shape {tuple(hidden_states.shape)} and dtype "
            f"{hidden_states.dtype} "
            f"does not fit the prepacked weight [{weight.shape[0]}, {weight.shape[1]}] in {weight.dtype}"
        )
    if torch.is_grad_enabled() and hidden_states.requires_grad:
        raise RuntimeError(
            f"{getattr(layer, _PACKED_NAME)}: prepacked linear weights have no backward; "
            "call hf_vtok.unpack_linear_weights(model) before training or differentiating through the model"
        )
    return torch.ops.mkldnn._linear_pointwise(hidden_states, weight, layer.bias, activation, [], approximate)


def _packed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    return prepacked_linear(self, hidden_states)


def _dense_weight_in_state_dict(module, state_dict, prefix, local_metadata):
    key = prefix + "weight"
    if key in state_dict and state_dict[key].is_mkldnn:
        state_dict[key] = state_dict[key].to_dense()


def is_prepacked(module: nn.Module) -> bool:
    return hasattr(module, _PACKED_NAME)


def _eligible(layer: nn.Module, shared: set[int], max_weight_bytes: int | None) -> bool:
    weight = getattr(layer, "weight", None)
    return (
        type(layer) is nn.Linear  # subclasses (quantized, LoRA-wrapped) keep their own forward
        and isinstance(weight, torch.Tensor)
        and (max_weight_bytes is None or weight.nbytes <= max_weight_bytes)
        and weight.device.type == "cpu"
        and weight.dtype in PACKABLE_DTYPES
        and id(weight) not in shared  # a tied weight is also read as a plain tensor elsewhere
        and (layer.bias is None or layer.bias.dtype == weight.dtype)
    )


_TRIM_EVERY_BYTES = 64 * 2**20


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def _trim_heap() -> None:
    """Hand glibc's free heap pages back to the OS. The replaced plain weights are freed into the heap,
    but the packed copies are not always placed in those holes: without this, the resident size grows
    by up to a fifth of the weights while packing (measured on FlowMo-small, fp32)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


DEFAULT_MAX_WEIGHT_BYTES = 512 * 2**20


def prepack_linear_weights(
    model, batch_size_hint: int | None = None, max_weight_bytes: int | None = DEFAULT_MAX_WEIGHT_BYTES
) -> int:
    """Reorder the weight of every CPU float32/bfloat16 ``nn.Linear`` of ``model`` (or of a pipeline's models)
    into oneDNN's blocked layout; returns how many layers were packed.

    Tied weights, layers on another device or dtype and already packed layers are left alone, so calling
    it twice is harmless. ``batch_size_hint`` (rows per call) lets oneDNN pick the layout for that size.
    Weights over ``max_weight_bytes`` stay plain: the reorder holds two copies of a weight for a moment,
    which for V²Flow's 4 GiB vocabulary readout would raise the peak memory by as much.
    """
    if not torch.backends.mkldnn.is_available():
        raise RuntimeError("prepack_linear_weights needs a torch build with oneDNN (mkldnn), which this one lacks")
    packed = freed = 0
    for root_name, root in _modules_of(model).items():
        counts = Counter(id(parameter) for _, parameter in root.named_parameters(remove_duplicate=False))
        shared = {key for key, count in counts.items() if count > 1}
        for name, layer in root.named_modules():
            if is_prepacked(layer) or not _eligible(layer, shared, max_weight_bytes):
                continue
            with torch.no_grad():
                weight = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), batch_size_hint)
            freed += layer.weight.nbytes
            layer.weight = nn.Parameter(weight, requires_grad=False)
            if freed >= _TRIM_EVERY_BYTES:
                _trim_heap()
                freed = 0
            if layer.bias is not None:
                layer.bias.requires_grad_(False)
            setattr(layer, _PACKED_NAME, root_name + (name or type(layer).__name__))
            layer.forward = MethodType(_packed_forward, layer)
            layer._hf_vtok_state_dict_hook = layer._register_state_dict_hook(_dense_weight_in_state_dict)
            packed += 1
    _trim_heap()
    return packed


def unpack_linear_weights(model, requires_grad: bool = True) -> int:
    """Undo ``prepack_linear_weights``: plain weights (and plain ``forward``) again; returns how many layers."""
    unpacked = 0
    for root in _modules_of(model).values():
        for layer in root.modules():
            if not is_prepacked(layer):
                continue
            layer.weight = nn.Parameter(layer.weight.detach().to_dense(), requires_grad=requires_grad)
            if layer.bias is not None:
                layer.bias.requires_grad_(requires_grad)
            del layer.forward
            delattr(layer, _PACKED_NAME)
            layer._hf_vtok_state_dict_hook.remove()
            del layer._hf_vtok_state_dict_hook
            unpacked += 1
    return unpacked
