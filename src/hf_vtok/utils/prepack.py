"""oneDNN linear layers for CPU inference: on by default, on plain weights; prepacked weights on request.

On CPU, ``F.linear`` runs MKL's GEMM in float32, which reaches a fraction of what oneDNN's inner product
gets from the same weights on some CPUs (about 0.4x on the AMD EPYC of the benchmarks). Every hf_vtok model
therefore routes its ``nn.Linear`` layers through oneDNN (``torch.ops.mkldnn._linear_pointwise``) where only
inference happens: no gradient is being recorded (``torch.inference_mode``, ``no_grad``, or nothing requires
grad), CPU, float32 / bfloat16, outside ``torch.compile``. It reads the layer's plain ``weight`` as it is, so
nothing about the model changes: no copy, no extra memory, the same ``state_dict``, ``.to()``,
``load_state_dict``, training, peft and ``torch.compile`` (which see an ordinary ``nn.Linear``). Outputs agree
with ``F.linear`` to float rounding (oneDNN sums in another order: ~1e-6 relative in float32).
``enable_fast_linear(model)`` installs it (the model base classes call it at construction);
``disable_fast_linear(model)`` or ``HF_VTOK_FAST_LINEAR=0`` (read at import) turn it off. The first oneDNN call
of the process also tunes glibc's heap for inference, once (``hf_vtok.utils.allocator``).

``prepack_linear_weights(model)`` goes further: it reorders each weight once into oneDNN's blocked
layout (in place), which wins where few rows meet a weight that stays in cache, and lets
``torch.compile``-free code match inductor's ``freezing``. Packed layers are for inference only: they
refuse inputs that require grad (oneDNN's op has no backward), and ``.to()``, ``load_state_dict`` and
training want ``unpack_linear_weights(model)`` first. ``state_dict()`` and ``save_pretrained`` still
write the plain weights.
"""

import functools
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import forward_ad

from .allocator import trim_heap, tune_heap_for_inference
from .switches import env_switch

PACKABLE_DTYPES = (torch.float32, torch.bfloat16)
_PACKED_NAME = "_hf_vtok_prepacked_name"  # set on packed layers: the layer's name, for error messages
_ROUTED = "_hf_vtok_fast_linear"  # set on layers whose forward is ``_routed_forward``: who installed it
FAST_LINEAR = env_switch("HF_VTOK_FAST_LINEAR")


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
    return _onednn_linear(hidden_states, weight, layer.bias, activation, approximate)


def _onednn_linear(hidden_states, weight, bias, activation: str = "none", approximate: str = "") -> torch.Tensor:
    """oneDNN's linear (plain or prepacked weight), after the one-time heap tuning of CPU inference."""
    tune_heap_for_inference()
    return torch.ops.mkldnn._linear_pointwise(hidden_states, weight, bias, activation, [], approximate)


# oneDNN's call costs ~10-15 us more than MKL's: below ~2^24 multiply-adds (0.2-0.5 ms on one core) F.linear is
# as fast or faster (benchmarks/bench_linear.py); it also keeps tiny models (the parity fixtures) on MKL's sums
MIN_ONEDNN_MACS = 2**24


def eager_cpu_inference(*tensors: torch.Tensor) -> bool:
    """Whether an eager CPU kernel without autograd may replace the ordinary op on ``tensors``: plain CPU tensors
    (no subclass such as fake / DTensor, no functorch wrapper), no gradient recorded through them, no forward-mode
    AD, no vmap / grad transform, no CPU autocast (it would cast the ordinary op's inputs), not while
    ``torch.compile`` traces (inductor picks its own kernels). Call ``torch.compiler.is_compiling()`` first where
    dynamo should not look further."""
    return (
        not torch.compiler.is_compiling()
        and all(type(tensor) in (torch.Tensor, nn.Parameter) and tensor.device.type == "cpu" for tensor in tensors)
        and not (torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors))
        and not torch.is_autocast_enabled("cpu")
        # the kernels have no forward derivative: a dual input would lose its tangent
        and forward_ad._current_level < 0
        and not torch._C._are_functorch_transforms_active()
    )


def onednn_eligible(layer: nn.Linear, hidden_states: torch.Tensor) -> bool:
    """Whether ``linear(layer, hidden_states)`` runs oneDNN on the plain weight: ``eager_cpu_inference``, float32 /
    bfloat16 in the weight's dtype, and at least ``MIN_ONEDNN_MACS`` multiply-adds."""
    if not FAST_LINEAR or torch.compiler.is_compiling():  # first: dynamo stops here (inductor picks its kernels)
        return False
    weight, bias = layer.weight, layer.bias
    return (
        hidden_states.numel() * weight.shape[0] >= MIN_ONEDNN_MACS
        and type(hidden_states) is torch.Tensor  # not a Parameter
        and hidden_states.dtype in PACKABLE_DTYPES
        and weight.dtype == hidden_states.dtype
        and weight.layout == torch.strided
        and weight.is_contiguous()
        and (bias is None or bias.dtype == weight.dtype)
        and hidden_states.shape[-1:] == weight.shape[1:]
        and eager_cpu_inference(hidden_states, *((weight,) if bias is None else (weight, bias)))
    )


def linear(layer: nn.Linear, hidden_states: torch.Tensor) -> torch.Tensor:
    """What a routed layer's ``forward`` computes: oneDNN where ``onednn_eligible`` (or the layer is
    prepacked), else ``F.linear``."""
    if is_prepacked(layer):
        return prepacked_linear(layer, hidden_states)
    if onednn_eligible(layer, hidden_states):
        return _onednn_linear(hidden_states, layer.weight, layer.bias)
    return F.linear(hidden_states, layer.weight, layer.bias)


def _called_plainly(layer: nn.Module) -> bool:
    """Whether calling ``layer`` does nothing but its ``linear``: a plain (or routed) ``nn.Linear`` without hooks,
    so that a caller may fuse the next step into it (a peft-wrapped or hooked layer is called as it is)."""
    from torch.nn.modules import module as module_globals

    return (
        type(layer) is nn.Linear
        and ("forward" not in vars(layer) or is_fast_linear(layer))  # not wrapped by peft, accelerate, ...
        and not (layer._forward_hooks or layer._forward_pre_hooks)
        and not (module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks)
    )


def linear_gelu(layer: nn.Linear, hidden_states: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``F.gelu(layer(hidden_states), approximate=approximate)``, in one oneDNN call (the GELU fused into the
    matmul's epilogue, before rounding to the output dtype) where the layer is prepacked or ``onednn_eligible``."""
    if _called_plainly(layer):
        if is_prepacked(layer):
            return prepacked_linear(layer, hidden_states, "gelu", approximate)
        if onednn_eligible(layer, hidden_states):
            return _onednn_linear(hidden_states, layer.weight, layer.bias, "gelu", approximate)
    return F.gelu(layer(hidden_states), approximate=approximate)


def _routed_forward(layer: nn.Linear, hidden_states: torch.Tensor) -> torch.Tensor:
    return linear(layer, hidden_states)


def _route(layer: nn.Linear, owner: str) -> None:
    layer.forward = functools.partial(_routed_forward, layer)  # a partial: deepcopy and pickle rebind it
    setattr(layer, _ROUTED, owner)


def is_fast_linear(module: nn.Module) -> bool:
    """Whether ``module``'s ``forward`` is ours (``enable_fast_linear`` / ``prepack_linear_weights``): a layer
    whose forward another library has wrapped since (accelerate's hooks, ...) does not count."""
    forward = vars(module).get("forward")
    return (
        hasattr(module, _ROUTED)
        and isinstance(forward, functools.partial)
        and forward.func is _routed_forward
        and forward.args[0] is module
    )


def _unroute(layer: nn.Module) -> None:
    if is_fast_linear(layer):
        del layer.forward
    if hasattr(layer, _ROUTED):
        delattr(layer, _ROUTED)


def enable_fast_linear(model) -> int:
    """Route every plain ``nn.Linear`` of ``model`` (or of a pipeline's models) through ``linear``: oneDNN on the
    plain weight for inference on CPU, ``F.linear`` otherwise. Nothing else changes (weights, names, state dict,
    type); returns how many layers were routed (already routed ones are not counted; none under
    ``HF_VTOK_FAST_LINEAR=0``)."""
    routed = 0
    if not FAST_LINEAR:
        return routed
    for root in _modules_of(model).values():
        for layer in root.modules():
            if type(layer) is nn.Linear and not is_fast_linear(layer) and "forward" not in vars(layer):
                _route(layer, "enable_fast_linear")
                routed += 1
    return routed


def disable_fast_linear(model) -> int:
    """Undo ``enable_fast_linear`` (prepacked layers keep their packed forward); returns how many layers."""
    count = 0
    for root in _modules_of(model).values():
        for layer in root.modules():
            if hasattr(layer, _ROUTED) and not is_prepacked(layer):
                _unroute(layer)
                count += 1
    return count


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
                # the packed copies do not always reuse the replaced weights' pages: without this, the resident
                # size grew by up to a fifth of the weights while packing (FlowMo-small, float32)
                trim_heap()
                freed = 0
            if layer.bias is not None:
                layer.bias.requires_grad_(False)
            setattr(layer, _PACKED_NAME, root_name + (name or type(layer).__name__))
            if not is_fast_linear(layer):
                _route(layer, "prepack_linear_weights")  # undone by unpack_linear_weights
            layer._hf_vtok_state_dict_hook = layer._register_state_dict_hook(_dense_weight_in_state_dict)
            packed += 1
    trim_heap()
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
            if getattr(layer, _ROUTED, None) == "prepack_linear_weights":
                _unroute(layer)
            delattr(layer, _PACKED_NAME)
            layer._hf_vtok_state_dict_hook.remove()
            del layer._hf_vtok_state_dict_hook
            unpacked += 1
    return unpacked
