"""ViTok-v2 autoencoder configuration, including the original variant DSL."""

import re
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ...modeling_utils import check_checkpoint_type
from ...modules import rounded_hidden_size
from ...registry import family_presets
from ...utils.validation import check_attention_heads, check_finite, check_fraction, check_positive

# Base model tables of the ViTok variant language: width, depth, heads.
_BASE_STACKS = {
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "G": (1728, 32, 24),
    "T": (3072, 40, 24),
    "E": (4096, 48, 32),
}
_DEFAULT_STACK = (768, 12, 12)  # a stack spec with no base letter
_DEFAULT_MLP_RATIO = 2.67

# The nine released checkpoints (entries of hf_vtok.registry): preset name -> (variant string, original Hub
# repository).
VITOK_PRESETS: dict[str, tuple[str, str]] = {
    name: (entry.config["variant"], entry.repo_id) for name, entry in family_presets("vitok").items()
}

_UNDERSCORE_STACK = re.compile(r"w(\d+)_d(\d+)_h(\d+)(?:_m(\d+(?:\.\d+)?))?")
_INLINE_MODIFIER = re.compile(r"([wdhm])(\d+(?:\.\d+)?)")


def parse_stack(
    spec: str, variant: str, role: str, default_stack: tuple[int, int, int] = _DEFAULT_STACK
) -> dict[str, Any]:
    """One stack of a variant: ``w{W}_d{D}_h{H}[_m{M}]`` or a base letter with inline ``w/d/h/m`` overrides.

    ``default_stack`` (width, depth, heads) applies when the spec names no base letter.
    """
    where = f"{role} spec {spec!r} of variant {variant!r}"
    if not spec:
        raise ValueError(f"empty {role} spec in variant {variant!r}")
    if spec.startswith("w") and "_d" in spec and "_h" in spec:
        match = _UNDERSCORE_STACK.fullmatch(spec)
        if match is None:
            raise ValueError(f"malformed {where}: expected 'w<width>_d<depth>_h<heads>[_m<mlp ratio>]'")
        width, depth, heads = (int(group) for group in match.groups()[:3])
        mlp_ratio = float(match.group(4)) if match.group(4) else _DEFAULT_MLP_RATIO
    else:
        overrides: dict[str, str] = {}
        for key, value in _INLINE_MODIFIER.findall(spec):
            if key in overrides:
                raise ValueError(f"malformed {where}: '{key}' is given twice")
            if key != "m" and "." in value:
                raise ValueError(f"malformed {where}: '{key}{value}' must be an integer")
            overrides[key] = value
        base = _INLINE_MODIFIER.sub("", spec)
        if base and base not in _BASE_STACKS:
            raise ValueError(
                f"malformed {where}: unknown base {base!r}; expected one of {sorted(_BASE_STACKS)} "
                "optionally followed by w<width>, d<depth>, h<heads>, m<mlp ratio>"
            )
        width, depth, heads = _BASE_STACKS.get(base, default_stack)
        width = int(overrides.get("w", width))
        depth = int(overrides.get("d", depth))
        heads = int(overrides.get("h", heads))
        mlp_ratio = float(overrides.get("m", _DEFAULT_MLP_RATIO))
    if min(width, depth, heads) <= 0 or mlp_ratio <= 0:
        raise ValueError(f"malformed {where}: width, depth, heads and mlp ratio must be positive")
    return {"width": width, "depth": depth, "heads": heads, "mlp_ratio": mlp_ratio}


def parse_vitok_variant(variant: str) -> dict[str, Any]:
    """Parse a ViTok variant (``"Ld4-Ld24/1x16x64"``, ``"w64_d2_h4-w96_d2_h3/16x8"``) into config fields."""
    if not isinstance(variant, str):
        raise ValueError(f"a ViTok variant must be a string, got {type(variant).__name__}")
    if variant.count("/") != 1:
        raise ValueError(
            f"malformed ViTok variant {variant!r}: expected '<encoder>[-<decoder>]/[<t>x]<patch>x<channels>', "
            "e.g. 'Ld4-Ld24/1x16x64'"
        )
    stacks, strides = variant.split("/")
    stack_specs = stacks.split("-")
    if len(stack_specs) > 2:
        raise ValueError(f"malformed ViTok variant {variant!r}: at most one '-' between encoder and decoder specs")
    encoder = parse_stack(stack_specs[0], variant, "encoder")
    decoder = parse_stack(stack_specs[-1], variant, "decoder")
    numbers = strides.split("x")
    if len(numbers) not in (2, 3) or not all(number.isdigit() for number in numbers):
        raise ValueError(
            f"malformed ViTok variant {variant!r}: the part after '/' must be '<t>x<patch>x<channels>' "
            f"or '<patch>x<channels>' with positive integers, got {strides!r}"
        )
    temporal, patch, channels = ([1] if len(numbers) == 2 else []) + [int(number) for number in numbers]
    if min(temporal, patch, channels) <= 0:
        raise ValueError(f"malformed ViTok variant {variant!r}: strides and channels must be positive")
    return {
        "encoder_hidden_size": encoder["width"],
        "encoder_num_layers": encoder["depth"],
        "encoder_num_heads": encoder["heads"],
        "decoder_hidden_size": decoder["width"],
        "decoder_num_layers": decoder["depth"],
        "decoder_num_heads": decoder["heads"],
        # one ratio for both stacks, the larger one, as the original does
        "mlp_ratio": max(encoder["mlp_ratio"], decoder["mlp_ratio"]),
        "temporal_patch_size": temporal,
        "patch_size": patch,
        "latent_channels": channels,
    }


@strict
class ViTokConfig(PreTrainedConfig):
    r"""Configuration of a ViTok-v2 autoencoder (``ViTokModel``).

    Defaults describe the released ``350M-f16x64`` model (variant ``Ld4-Ld24/1x16x64``). Build from
    the original variant language with ``ViTokConfig.from_variant("Ld4-Ld24/1x16x64")`` or from a
    release name with ``ViTokConfig.from_variant("350M-f16x64")``.

    Args:
        encoder_hidden_size / encoder_num_layers / encoder_num_heads: width, depth and heads of the encoder.
        decoder_hidden_size / decoder_num_layers / decoder_num_heads: same for the decoder.
        mlp_ratio: SwiGLU hidden size is ``int(width * mlp_ratio)`` rounded to ``mlp_multiple_of``.
        mlp_ratio_decoder: the decoder's ratio where it differs from the encoder's (None: ``mlp_ratio``, as the
            original's variants have; a checkpoint whose halves differ is converted with both).
        patch_size: pixels per patch side; ``temporal_patch_size`` frames per token (1 for images).
        num_channels: image channels; a token holds ``temporal_patch_size * patch_size**2 * num_channels`` values.
        latent_channels: channels per latent token.
        rope_theta: base of the 2D rotary embedding (positions are integer patch rows/columns).
        norm_eps: epsilon of the block RMSNorms and of the QK-norm.
        latent_norm_eps: epsilon of the parameter-free LayerNorm applied to the latents.
        use_layer_scale / layer_scale_init: LayerScale on each block's residual branch and its initial value.
        drop_path_rate: stochastic depth of the decoder, rising linearly from 0 to this value.
        mask_padding: if True, padding tokens of a NaFlex batch are masked out of attention, so every
            image's result is independent of the padding. The released code (flash-attention backend)
            lets padding tokens attend and be attended to, so results depend on how much padding the
            batch has; False (the default) reproduces that exactly. Without padding both agree.
        has_encoder / has_decoder: build only one half, as the original's ``AE(encoder=False)``.
        scaling_factor / shift_factor: diffusers-style latent normalisation (the latents are already
            LayerNorm-ed per token, so 1.0 / 0.0).
        variant: the original variant string this config was built from, kept for provenance.
    """

    model_type = "vitok"

    encoder_hidden_size: int = 1024
    encoder_num_layers: int = 4
    encoder_num_heads: int = 16
    decoder_hidden_size: int = 1024
    decoder_num_layers: int = 24
    decoder_num_heads: int = 16
    mlp_ratio: float | int = _DEFAULT_MLP_RATIO
    # not decoder_mlp_ratio: transformers' get_text_config() maps decoder_* fields onto the shared names of an
    # encoder-decoder config, and None is no mlp_ratio
    mlp_ratio_decoder: float | int | None = None
    mlp_multiple_of: int = 16
    patch_size: int = 16
    temporal_patch_size: int = 1
    num_channels: int = 3
    latent_channels: int = 64
    rope_theta: float | int = 10000.0
    norm_eps: float = 1e-6
    latent_norm_eps: float = 1e-6
    use_layer_scale: bool = True
    layer_scale_init: float = 1e-4
    drop_path_rate: float | int = 0.0
    mask_padding: bool = False
    has_encoder: bool = True
    has_decoder: bool = True
    scaling_factor: float | int = 1.0
    shift_factor: float | int = 0.0
    variant: str | None = None

    def __post_init__(self, **kwargs):
        check_checkpoint_type(
            type(self), kwargs.get("model_type"), self.architectures
        )  # another family's config.json?
        if not (self.has_encoder or self.has_decoder):
            raise ValueError("ViTokConfig needs at least one of has_encoder / has_decoder")
        check_positive(
            self, "encoder_num_layers", "decoder_num_layers", "mlp_ratio", "mlp_multiple_of", "patch_size",
            "temporal_patch_size", "num_channels", "latent_channels", "rope_theta", "norm_eps", "latent_norm_eps",
        )  # fmt: skip
        check_finite(self, "layer_scale_init", "scaling_factor", "shift_factor")
        check_fraction(self, "drop_path_rate")
        if self.scaling_factor == 0:
            raise ValueError("scaling_factor must be non-zero (latents are divided by it)")
        for role in ("encoder", "decoder"):
            check_attention_heads(self, f"{role}_hidden_size", f"{role}_num_heads", head_dim_multiple=4)
            width = getattr(self, f"{role}_hidden_size")
            ratio = self.stack_mlp_ratio(role)
            if ratio <= 0 or rounded_hidden_size(width, ratio, self.mlp_multiple_of) <= 0:
                name = "mlp_ratio_decoder" if role == "decoder" and self.mlp_ratio_decoder is not None else "mlp_ratio"
                raise ValueError(
                    f"{name}={ratio} gives the {role} (width {width}) an empty SwiGLU once rounded to "
                    f"mlp_multiple_of={self.mlp_multiple_of}"
                )
        super().__post_init__(**kwargs)

    def stack_mlp_ratio(self, role: str) -> float:
        """The MLP ratio of the ``"encoder"`` or ``"decoder"`` stack."""
        if role not in ("encoder", "decoder"):
            raise ValueError(f"role must be 'encoder' or 'decoder', got {role!r}")
        return self.mlp_ratio_decoder if role == "decoder" and self.mlp_ratio_decoder is not None else self.mlp_ratio

    @property
    def pixels_per_token(self) -> int:
        return self.temporal_patch_size * self.patch_size**2 * self.num_channels

    @classmethod
    def from_variant(cls, variant: str, **kwargs) -> "ViTokConfig":
        """Config from a variant string (``"Ld4-Ld24/1x16x64"``) or a released preset name (``"350M-f16x64"``)."""
        if variant in VITOK_PRESETS:
            variant = VITOK_PRESETS[variant][0]
        fields = parse_vitok_variant(variant)
        fields.update(kwargs)
        fields.setdefault("variant", variant)
        return cls(**fields)
