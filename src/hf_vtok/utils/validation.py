"""Checks of sizes written once for every config and model constructor (a ``ValueError`` naming the field)."""


def check_positive(source, *names: str) -> None:
    """``source.<name>`` (a config or any object with those attributes) must be > 0 for every name."""
    for name in names:
        value = getattr(source, name)
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


def check_attention_heads(source, hidden_name: str, heads_name: str, head_dim_multiple: int = 1) -> None:
    """``source.<hidden_name>`` must split into ``source.<heads_name>`` heads whose dimension is a multiple of
    ``head_dim_multiple`` (4 for the 2D rotary embeddings, which rotate four parts of each head)."""
    hidden_size, num_heads = getattr(source, hidden_name), getattr(source, heads_name)
    if hidden_size % num_heads:
        raise ValueError(f"{hidden_name}={hidden_size} is not divisible by {heads_name}={num_heads}")
    if (hidden_size // num_heads) % head_dim_multiple:
        raise ValueError(
            f"the 2D rotary embedding needs a head dimension divisible by {head_dim_multiple}, got "
            f"{hidden_name} / {heads_name} = {hidden_size // num_heads}"
        )
