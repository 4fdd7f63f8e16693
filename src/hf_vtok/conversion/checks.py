"""Checks every converted model passes before it is saved: finite weights, one floating dtype."""

import torch

from .state_dicts import CheckpointMismatchError


class NonFiniteWeightsError(CheckpointMismatchError):
    """Converted weights hold NaN or infinite values (a broken or diverged original checkpoint)."""


def check_finite_weights(model: torch.nn.Module, source: str = "the checkpoint", shown: int = 8) -> None:
    """A ``NonFiniteWeightsError`` naming the tensors of ``model`` (parameters and buffers) that hold NaN / inf."""
    bad = []
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and tensor.device.type != "meta" and not bool(torch.isfinite(tensor).all()):
            bad.append(name)
    if bad:
        listed = ", ".join(bad[:shown]) + (f" and {len(bad) - shown} more" if len(bad) > shown else "")
        raise NonFiniteWeightsError(
            f"{source}: {len(bad)} converted tensor(s) hold NaN or infinite values ({listed}); a diverged or corrupt "
            "checkpoint? Pass --allow-non-finite (allow_non_finite=True) to convert it anyway"
        )


def floating_dtypes(model: torch.nn.Module) -> set[torch.dtype]:
    """The floating dtypes of ``model``'s parameters and buffers."""
    return {tensor.dtype for tensor in model.state_dict().values() if tensor.is_floating_point()}


def unify_dtype(model: torch.nn.Module, dtype: torch.dtype | None = None) -> str | None:
    """Cast ``model`` to one floating dtype: ``dtype`` when given, else (when the original files mix dtypes, e.g. a
    float16 encoder and a float32 decoder) the widest of them, float32 for float16 + bfloat16. Returns a note
    saying so when weights of mixed dtypes were cast, else None."""
    found = floating_dtypes(model)
    target = dtype
    if target is None:
        if len(found) <= 1:
            return None
        widest = max(found, key=lambda item: torch.finfo(item).bits)
        ties = [item for item in found if torch.finfo(item).bits == torch.finfo(widest).bits]
        target = widest if len(ties) == 1 else torch.float32
    if found and found != {target}:
        model.to(target)
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "dtype"):
            try:
                config.dtype = target
            except (AttributeError, TypeError):  # frozen diffusers configs carry no dtype
                pass
        if len(found) > 1:
            names = ", ".join(sorted(str(item).replace("torch.", "") for item in found))
            return f"the original weights mix {names}: every weight is saved as {str(target).replace('torch.', '')}"
    return None


def finish_conversion(
    model: torch.nn.Module, dtype: torch.dtype | None = None, allow_non_finite: bool = False, source: str = ""
) -> list[str]:
    """What every converted model goes through before saving: one floating dtype (``unify_dtype``) and finite
    weights (``check_finite_weights``, unless ``allow_non_finite``). Returns notes to print."""
    note = unify_dtype(model, dtype)
    if not allow_non_finite:
        check_finite_weights(model, source or type(model).__name__)
    return [note] if note else []


__all__ = ["NonFiniteWeightsError", "check_finite_weights", "finish_conversion", "floating_dtypes", "unify_dtype"]
