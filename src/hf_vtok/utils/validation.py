"""Checks written once for every config, model and processor (a ``ValueError`` naming the field or input)."""

import math

import torch


def check_positive(source, *names: str) -> None:
    """``source.<name>`` (a config or any object with those attributes) must be > 0 for every name (NaN is not)."""
    for name in names:
        value = getattr(source, name)
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")


def check_finite(source, *names: str) -> None:
    """``source.<name>`` must be a finite number (not NaN or infinite) for every name; ``None`` passes."""
    for name in names:
        value = getattr(source, name)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")


def check_fraction(source, *names: str) -> None:
    """``source.<name>`` must be a probability-like rate in ``[0, 1)`` (drop rates) for every name."""
    for name in names:
        value = getattr(source, name)
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}")


def check_attention_heads(source, hidden_name: str, heads_name: str, head_dim_multiple: int = 1) -> None:
    """``source.<hidden_name>`` must split into ``source.<heads_name>`` heads whose dimension is a multiple of
    ``head_dim_multiple`` (4 for the 2D rotary embeddings, which rotate four parts of each head)."""
    hidden_size, num_heads = getattr(source, hidden_name), getattr(source, heads_name)
    check_positive(source, hidden_name, heads_name)
    if hidden_size % num_heads:
        raise ValueError(f"{hidden_name}={hidden_size} is not divisible by {heads_name}={num_heads}")
    if (hidden_size // num_heads) % head_dim_multiple:
        raise ValueError(
            f"the 2D rotary embedding needs a head dimension divisible by {head_dim_multiple}, got "
            f"{hidden_name} / {heads_name} = {hidden_size // num_heads}"
        )


def check_tensor_values(
    values: torch.Tensor,
    name: str,
    value_range: tuple[float, float] | None = None,
    tolerance: float = 0.0,
    hint: str = "",
) -> None:
    """``values`` must be finite and, with a ``value_range`` ``(low, high)``, within ``[low - tolerance, high +
    tolerance]``. One pass (``aminmax``) and one host sync; the error names the values found and ends with
    ``hint``."""
    if values.numel() == 0:
        return
    low_found, high_found = torch.stack(torch.aminmax(values.detach())).tolist()
    suffix = f"; {hint}" if hint else ""
    if math.isnan(low_found) or math.isnan(high_found):
        raise ValueError(f"{name} contains NaN values{suffix}")
    if math.isinf(low_found) or math.isinf(high_found):
        raise ValueError(f"{name} contains infinite values (range {low_found} to {high_found}){suffix}")
    if value_range is None:
        return
    low, high = value_range
    if low_found < low - tolerance or high_found > high + tolerance:
        raise ValueError(
            f"{name} holds values from {low_found:.6g} to {high_found:.6g}, outside the expected "
            f"[{low:g}, {high:g}] (tolerance {tolerance:g}){suffix}"
        )
