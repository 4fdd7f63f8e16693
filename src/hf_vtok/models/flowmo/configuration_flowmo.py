"""FlowMo configuration: the original ``base.yaml`` model / sampling knobs plus its hard-coded width table."""

import math

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ...modeling_utils import check_checkpoint_type
from ...registry import family_presets
from ...utils.validation import check_finite, check_positive

QUANTIZATION_TYPES = ("lfq", "kl", "noop")
TIMESTEP_SAMPLINGS = ("fat_lognormal", "lognormal", "uniform")

# Config fields (over base.yaml) of the released checkpoints (entries of hf_vtok.registry) and of the
# README's small option (model.patch_size=8 model.mup_width=4), of which no checkpoint was released.
FLOWMO_PRESETS: dict[str, dict] = {
    **{name: dict(entry.config) for name, entry in family_presets("flowmo").items()},
    "flowmo-p8": {"patch_size": 8, "mup_width": 4},
}


def parse_sampling_schedule(schedule: str) -> tuple[str, float | None]:
    """``"linear"`` -> ("linear", None); ``"pow_0.25"`` -> ("pow", 0.25); anything else is an error."""
    if schedule == "linear":
        return "linear", None
    if isinstance(schedule, str) and schedule.startswith("pow_"):
        try:
            power = float(schedule[4:])
        except ValueError:
            power = float("nan")
        if math.isfinite(power) and power > 0:
            return "pow", power
    raise ValueError(
        f"unknown sampling schedule {schedule!r}; expected 'linear' or 'pow_<p>' with p > 0 (e.g. 'pow_0.25')"
    )


@strict
class FlowMoConfig(PreTrainedConfig):
    r"""Configuration of a FlowMo tokenizer (``FlowMoModel``): a transformer encoder to a 1-D code
    and a rectified-flow transformer decoder, both Flux-style double-stream (MMDiT) stacks.

    Defaults are FlowMo-Lo (``base.yaml``); ``FlowMoConfig.from_preset("flowmo-hi")`` gives
    FlowMo-Hi and ``"flowmo-p8"`` the README's small patch-8 option. Names follow the original
    config where one exists (``model.*`` and ``eval.sampling.*``).

    Architecture:
        image_size: training / decoding resolution (square; ``data.image_size``).
        num_channels: image channels (3).
        patch_size: pixels per patch side; a patch token holds ``num_channels * patch_size**2`` values.
        code_length: number of code tokens (the 1-D latent sequence length).
        context_dim: channels per code token (the decoder's code input has one more, the "mask" channel).
        bits_per_token: LFQ bits per image token (original ``codebook_size_for_entropy``); a code token
            of ``context_dim`` channels holds ``context_dim / bits_per_token`` image tokens, so the
            vocabulary is ``2**bits_per_token``.
        quantization_type: ``"lfq"`` (lookup-free, token ids), ``"kl"`` (diagonal Gaussian; the encoder
            predicts ``2 * context_dim`` channels) or ``"noop"`` (continuous code).
        mup_width / enc_mup_width: width multipliers of the decoder / encoder (``enc_mup_width=None``
            uses ``mup_width``). A stack of width ``w`` has hidden size ``w * base_hidden_size // 4``
            and RoPE axes ``(a // 4) * w`` for each ``a`` of ``base_axes_dim``.
        base_hidden_size / num_attention_heads / base_axes_dim / mlp_ratio / qkv_bias / rope_theta:
            the width table the original hard-codes (``DIT_ZOO["dit_b_4"]``: 768, 12, (8, 28, 28), 4, True, 1e4).
        encoder_depth / decoder_depth: double-stream blocks (``enc_depth`` / ``dec_depth``).
        enable_mup: attention softmax scale ``8 / head_dim`` (muP) instead of ``1 / sqrt(head_dim)``.
        norm_eps: epsilon of the LayerNorms and the QK RMSNorms.

    Sampling (``decode``; ``eval.sampling``):
        num_inference_steps: Euler steps (``sample_steps``).
        sampling_schedule: ``"pow_<p>"`` (``t_k = (k/N)^(1/p)``, dense near the data) or ``"linear"``.
        guidance_scale: classifier-free guidance scale (``cfg``); 1.0 disables guidance.
        guidance_interval: ``(lo, hi)`` in EDM sigma units (``cfg_interval``); guidance runs only at
            flow times ``t`` with ``lo/(1+lo) <= t <= hi/(1+hi)``. ``None`` guides every step.

    Training (``forward(..., return_loss=True)``):
        entropy_loss_weight / commit_loss_weight: weights of the LFQ entropy and commitment losses.
        entropy_temperature: temperature of the LFQ soft assignment (the original hard-codes 0.1).
        cfg_dropout_prob: probability of dropping a sample's whole code to the null code (``enable_cfg``
            gives 0.1; 0 disables).
        timestep_sampling: flow-time distribution (``opt.schedule``): ``"fat_lognormal"`` (logit-normal,
            replaced by uniform 10% of the time), ``"lognormal"`` or ``"uniform"``.

    diffusers VAE surface: ``scaling_factor`` / ``shift_factor`` (1.0 / 0.0; the code is ±1 for LFQ).
    """

    model_type = "flowmo"

    image_size: int = 256
    num_channels: int = 3
    patch_size: int = 4
    code_length: int = 256
    context_dim: int = 18
    bits_per_token: int = 9
    quantization_type: str = "lfq"
    mup_width: int = 6
    enc_mup_width: int | None = 4
    encoder_depth: int = 8
    decoder_depth: int = 16
    base_hidden_size: int = 768
    num_attention_heads: int = 12
    base_axes_dim: list[int] | tuple[int, ...] = (8, 28, 28)
    mlp_ratio: float | int = 4.0
    qkv_bias: bool = True
    rope_theta: float | int = 10000.0
    enable_mup: bool = True
    norm_eps: float = 1e-6
    num_inference_steps: int = 25
    sampling_schedule: str = "pow_0.25"
    guidance_scale: float | int = 1.5
    guidance_interval: list[float] | tuple[float | int, float | int] | None = (0.17, 1.02)
    entropy_loss_weight: float | int = 0.0025
    commit_loss_weight: float | int = 0.000625
    entropy_temperature: float | int = 0.1
    cfg_dropout_prob: float | int = 0.1
    timestep_sampling: str = "fat_lognormal"
    scaling_factor: float | int = 1.0
    shift_factor: float | int = 0.0

    def __post_init__(self, **kwargs):
        check_checkpoint_type(
            type(self), kwargs.get("model_type"), self.architectures
        )  # another family's config.json?
        self.base_axes_dim = tuple(int(axis) for axis in self.base_axes_dim)
        if self.guidance_interval is not None:
            if len(self.guidance_interval) != 2 or self.guidance_interval[0] > self.guidance_interval[1]:
                raise ValueError(f"guidance_interval must be (lo, hi) with lo <= hi, got {self.guidance_interval}")
            self.guidance_interval = tuple(float(value) for value in self.guidance_interval)
        if self.quantization_type not in QUANTIZATION_TYPES:
            raise ValueError(
                f"unknown quantization_type {self.quantization_type!r}; supported: {', '.join(QUANTIZATION_TYPES)}"
            )
        if self.timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise ValueError(
                f"unknown timestep_sampling {self.timestep_sampling!r}; supported: {', '.join(TIMESTEP_SAMPLINGS)}"
            )
        parse_sampling_schedule(self.sampling_schedule)
        for name in (
            "image_size",
            "num_channels",
            "patch_size",
            "code_length",
            "context_dim",
            "mup_width",
            "encoder_depth",
            "decoder_depth",
            "base_hidden_size",
            "num_attention_heads",
            "num_inference_steps",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        check_positive(self, "mlp_ratio", "rope_theta", "norm_eps", "entropy_temperature")
        check_finite(
            self, "guidance_scale", "entropy_loss_weight", "commit_loss_weight", "scaling_factor", "shift_factor"
        )
        if self.scaling_factor == 0:
            raise ValueError("scaling_factor must be non-zero (latents are divided by it)")
        if self.guidance_interval is not None and not all(math.isfinite(value) for value in self.guidance_interval):
            raise ValueError(f"guidance_interval must hold finite numbers, got {self.guidance_interval}")
        if self.enc_mup_width is not None and self.enc_mup_width <= 0:
            raise ValueError(f"enc_mup_width must be positive or None, got {self.enc_mup_width}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.quantization_type == "lfq" and (self.bits_per_token <= 0 or self.context_dim % self.bits_per_token):
            raise ValueError(
                f"LFQ splits each code token's context_dim={self.context_dim} channels into groups of "
                f"bits_per_token={self.bits_per_token}; context_dim must be a positive multiple of it"
            )
        if not 0 <= self.cfg_dropout_prob < 1:
            raise ValueError(f"cfg_dropout_prob must be in [0, 1), got {self.cfg_dropout_prob}")
        if len(self.base_axes_dim) != 3:
            raise ValueError(f"base_axes_dim needs one entry per position axis (3), got {self.base_axes_dim}")
        for role in ("encoder", "decoder"):
            hidden, axes = self.stack_hidden_size(role), self.stack_axes_dim(role)
            if hidden % self.num_attention_heads:
                raise ValueError(f"{role} hidden size {hidden} is not divisible by {self.num_attention_heads} heads")
            if sum(axes) != hidden // self.num_attention_heads or any(axis % 2 for axis in axes) or min(axes) <= 0:
                raise ValueError(
                    f"{role} RoPE axes {axes} (width {self.stack_width(role)}) must be positive, even and sum to the "
                    f"head dimension {hidden // self.num_attention_heads}; "
                    "check mup_width / enc_mup_width / base_axes_dim"
                )
        super().__post_init__(**kwargs)

    # ------------------------------------------------------------------------------------------
    # derived sizes (the original's per-width rule, models.py FlowMo.__init__)
    def stack_width(self, role: str) -> int:
        if role == "encoder":
            return self.enc_mup_width if self.enc_mup_width is not None else self.mup_width
        if role == "decoder":
            return self.mup_width
        raise ValueError(f"role must be 'encoder' or 'decoder', got {role!r}")

    def stack_hidden_size(self, role: str) -> int:
        return self.stack_width(role) * (self.base_hidden_size // 4)

    def stack_axes_dim(self, role: str) -> tuple[int, ...]:
        return tuple((axis // 4) * self.stack_width(role) for axis in self.base_axes_dim)

    @property
    def encoder_code_dim(self) -> int:
        """Channels of the encoder's code output: ``context_dim``, doubled for the Gaussian moments of ``kl``."""
        return self.context_dim * (2 if self.quantization_type == "kl" else 1)

    @property
    def latent_channels(self) -> int:
        return self.context_dim

    @property
    def pixels_per_token(self) -> int:
        return self.num_channels * self.patch_size**2

    @property
    def tokens_per_image(self) -> int:
        """LFQ token ids per image (``code_length * context_dim / bits_per_token``)."""
        return self.code_length * self.context_dim // self.bits_per_token

    @property
    def codebook_size(self) -> int:
        """LFQ vocabulary: ``2**bits_per_token``."""
        return 2**self.bits_per_token

    @classmethod
    def from_preset(cls, preset: str, **kwargs) -> "FlowMoConfig":
        """``"flowmo-lo"``, ``"flowmo-hi"`` or ``"flowmo-p8"``, with any field overridden by ``kwargs``."""
        if preset not in FLOWMO_PRESETS:
            raise ValueError(f"unknown FlowMo preset {preset!r}; known: {sorted(FLOWMO_PRESETS)}")
        return cls(**{**FLOWMO_PRESETS[preset], **kwargs})
