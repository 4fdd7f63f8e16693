"""The ViTok-v2 DiT's variant language (``"L/256"``): the AE's stack grammar plus a token count."""

from typing import Any

from ..vitok.configuration_vitok import parse_stack

_DIT_DEFAULT_STACK = (1024, 24, 16)  # the DiT's width / depth / heads when a spec names no base letter


def parse_vitok_dit_variant(variant: str) -> dict[str, Any]:
    """Parse a ViTok DiT variant (``"L/256"``, ``"Gd32h20/512"``, ``"w64_d2_h4/16"``) into
    ``ViTokDiTTransformerModel`` arguments (same stack grammar as the AE; the number is the token count)."""
    if not isinstance(variant, str) or variant.count("/") != 1:
        raise ValueError(f"malformed ViTok DiT variant {variant!r}: expected '<model>/<num_tokens>', e.g. 'L/256'")
    spec, tokens = variant.split("/")
    if not tokens.isdigit() or int(tokens) <= 0:
        raise ValueError(
            f"malformed ViTok DiT variant {variant!r}: the token count {tokens!r} must be a positive integer"
        )
    stack = parse_stack(spec, variant, "DiT", default_stack=_DIT_DEFAULT_STACK)
    return {
        "hidden_size": stack["width"],
        "num_layers": stack["depth"],
        "num_attention_heads": stack["heads"],
        "mlp_ratio": stack["mlp_ratio"],
        "num_tokens": int(tokens),
    }
