"""V²Flow tokenizer configuration (DC-AE latents -> LLM-vocabulary-aligned token ids -> DC-AE latents)."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ...modeling_utils import check_checkpoint_type
from ...utils.validation import check_attention_heads, check_finite, check_fraction, check_positive

FLOW_METHODS = ("linear_flow", "CondOT")  # spelled as the original's --flow_method
RESAMPLER_SAMPLING_MODES = ("gumbel", "softmax")
GUIDANCE_SCHEDULES = ("linear", "constant")

# The original factories (models/V2Flow.py: v2flow_base / large / huge): width, depth, heads.
V2FLOW_ARCHITECTURES: dict[str, tuple[int, int, int]] = {
    "v2flow_base": (768, 12, 12),
    "v2flow_large": (1024, 16, 16),
    "v2flow_huge": (1280, 20, 16),
}
# The documented image sizes; a DC-AE f32 turns them into 16x16 / 32x32 latent grids.
V2FLOW_IMAGE_SIZES = (512, 1024)
V2FLOW_PRESETS: dict[str, dict] = {
    f"{name}_{image_size}": {
        "hidden_size": width,
        "encoder_num_layers": depth,
        "decoder_num_layers": depth,
        "num_attention_heads": heads,
        "sample_size": image_size // 32,
    }
    for name, (width, depth, heads) in V2FLOW_ARCHITECTURES.items()
    for image_size in V2FLOW_IMAGE_SIZES
}


@strict
class V2FlowConfig(PreTrainedConfig):
    r"""Configuration of a V²Flow tokenizer (``V2FlowModel``).

    Defaults describe ``v2flow_large`` at 1024px as the documented training run builds it: DC-AE
    f32c32 latents (32 channels, 32x32 grid), the LLaMA-2-7B input-embedding matrix as LLM vocabulary
    (32000 x 4096), 16384 visual codes, and the ``linear_flow`` flow head. ``V2FlowConfig.from_preset``
    builds ``v2flow_{base,large,huge}_{512,1024}``.

    Args:
        latent_channels: channels of the DC-AE latents (``vae_embed_dim``).
        sample_size: side of the square latent grid (image size / 32 for DC-AE f32); one token per
            ``patch_size x patch_size`` latent cell, ``(sample_size / patch_size)**2`` tokens in all.
        patch_size: latent cells per token side (1 in every V²Flow run).
        scaling_factor: DC-AE latents are multiplied by it before ``encode`` and the decoded latents
            divided by it before DC-AE decoding (0.41407, the sana-1.1 DC-AE's ``scaling_factor``).
        vae_downsample_factor: pixels per latent cell side of the DC-AE (32), used by the pipeline.
        connector_hidden_size / connector_depth: width and blocks per stage of the spatial-temporal
            connector (two RegNet stages of SE-bottleneck blocks).
        connector_readout_depth: layers of its readout MLP (2 with an LLM vocabulary: the original
            ignores ``--downsampler_mlp_depth`` there).
        connector_norm_eps: epsilon of the connector's channel LayerNorms.
        use_llm_vocabulary: map latents onto the LLM embedding space through a Gumbel-softmax mixture of
            its rows (the paper's visual vocabulary resampler); if False the connector feeds the
            quantizer directly (the original ``--visual_vocabulary False`` branch).
        llm_vocab_size / llm_embed_dim: shape of the frozen LLM ``embed_tokens`` matrix.
        resampler_sampling: how the mixture weights are formed outside training. ``"gumbel"`` (the
            default, what the original does at training and inference): ``softmax(logits + Gumbel
            noise)``, so token ids vary between calls unless a ``generator`` or ``gumbel_noise`` is
            given. ``"softmax"``: ``softmax(logits)``, deterministic (not in the original). Training
            always uses Gumbel noise.
        gumbel_temperature: softmax temperature ``tau`` of the resampler (1 in the original).
        codebook_size: visual codes (16384 with an LLM vocabulary in the original).
        codebook_decay / codebook_eps: EMA decay and Laplace-smoothing epsilon of the codebook.
        commitment_weight: weight of the commitment loss returned in training.
        codebook_ema_state: keep the EMA statistics (``ema_cluster_size``, ``ema_embed_sum``) needed
            to keep training the codebook; inference needs only the codebook.
        projector_depth: layers of the MLP from code vectors to the transformer width.
        hidden_size / encoder_num_layers / decoder_num_layers / num_attention_heads / mlp_ratio:
            the masked-autoregressive (MAR) encoder and decoder (the same width for both).
        layer_norm_eps: epsilon of the transformer and flow-head LayerNorms.
        attention_dropout / hidden_dropout: dropout of the transformer in training.
        label_drop_prob: probability (training) of replacing a sample's whole condition by the
            unconditional embedding, for classifier-free guidance.
        mask_ratio_min: lower end of the truncated-normal masking ratio in training.
        flow_head_width / flow_head_depth: the per-token MLP flow head (``flowloss_w``, ``flowloss_d``).
        flow_method: ``"linear_flow"`` (shifted rectified flow, velocity = noise - x0, sampled with
            DPM-Solver++) or ``"CondOT"`` (flow matching, velocity = x1 - x0 from noise at t=0, adaptive
            ODE solve). Both have the same parameters.
        diffusion_batch_mul: times each token's flow loss is drawn per training step.
        num_ar_steps: masked-AR decoding steps (``--num_iter``).
        guidance_scale: classifier-free guidance of the MAR decoder against the unconditional
            embedding; ``None`` means the original evaluation value 2.9 for CondOT and 1.0 for
            linear_flow, where the original's 2.9 changes nothing but doubles the work (it only keeps
            the conditional half; see README).
        guidance_schedule: ``"linear"`` (rises from 1 to ``guidance_scale`` as tokens are revealed) or
            ``"constant"``; used by CondOT.
        flow_num_inference_steps / flow_shift / flow_guidance_scale: linear_flow's DPM-Solver++ steps,
            time shift, and its fixed inner guidance against the unconditional embedding (4.5).
        num_train_timesteps: discretisation of linear_flow's training timesteps.
        ode_method / ode_atol / ode_rtol / ode_time_grid_size: CondOT's torchdiffeq solve from t=0 to 1.
    """

    model_type = "v2flow"

    latent_channels: int = 32
    sample_size: int = 32
    patch_size: int = 1
    scaling_factor: float | int = 0.41407
    vae_downsample_factor: int = 32
    connector_hidden_size: int = 512
    connector_depth: int = 4
    connector_readout_depth: int = 2
    connector_norm_eps: float = 1e-5
    use_llm_vocabulary: bool = True
    llm_vocab_size: int = 32000
    llm_embed_dim: int = 4096
    resampler_sampling: str = "gumbel"
    gumbel_temperature: float | int = 1.0
    codebook_size: int = 16384
    codebook_decay: float = 0.8
    codebook_eps: float = 1e-5
    commitment_weight: float | int = 1.0
    codebook_ema_state: bool = True
    projector_depth: int = 1
    hidden_size: int = 1024
    encoder_num_layers: int = 16
    decoder_num_layers: int = 16
    num_attention_heads: int = 16
    mlp_ratio: float | int = 4.0
    layer_norm_eps: float = 1e-6
    attention_dropout: float | int = 0.1
    hidden_dropout: float | int = 0.1
    label_drop_prob: float | int = 0.1
    mask_ratio_min: float = 0.7
    flow_head_width: int = 1536
    flow_head_depth: int = 8
    flow_method: str = "linear_flow"
    diffusion_batch_mul: int = 4
    num_ar_steps: int = 4
    guidance_scale: float | int | None = None
    guidance_schedule: str = "linear"
    flow_num_inference_steps: int = 20
    flow_shift: float | int = 3.0
    flow_guidance_scale: float | int = 4.5
    num_train_timesteps: int = 1000
    ode_method: str = "dopri5"
    ode_atol: float = 1e-5
    ode_rtol: float = 1e-5
    ode_time_grid_size: int = 10

    def __post_init__(self, **kwargs):
        check_checkpoint_type(
            type(self), kwargs.get("model_type"), self.architectures
        )  # another family's config.json?
        if self.flow_method not in FLOW_METHODS:
            raise ValueError(f"flow_method must be one of {FLOW_METHODS}, got {self.flow_method!r}")
        if self.resampler_sampling not in RESAMPLER_SAMPLING_MODES:
            raise ValueError(
                f"resampler_sampling must be one of {RESAMPLER_SAMPLING_MODES}, got {self.resampler_sampling!r}"
            )
        if self.guidance_schedule not in GUIDANCE_SCHEDULES:
            raise ValueError(f"guidance_schedule must be one of {GUIDANCE_SCHEDULES}, got {self.guidance_schedule!r}")
        check_attention_heads(self, "hidden_size", "num_attention_heads")
        if self.sample_size <= 0 or self.patch_size <= 0 or self.sample_size % self.patch_size:
            raise ValueError(
                f"sample_size={self.sample_size} must be a positive multiple of patch_size={self.patch_size}"
            )
        positive = {
            "latent_channels": self.latent_channels,
            "codebook_size": self.codebook_size,
            "connector_hidden_size": self.connector_hidden_size,
            "connector_depth": self.connector_depth,
            "connector_readout_depth": self.connector_readout_depth,
            "projector_depth": self.projector_depth,
            "llm_vocab_size": self.llm_vocab_size,
            "llm_embed_dim": self.llm_embed_dim,
            "flow_head_width": self.flow_head_width,
            "flow_head_depth": self.flow_head_depth,
            "num_ar_steps": self.num_ar_steps,
            "flow_num_inference_steps": self.flow_num_inference_steps,
            "diffusion_batch_mul": self.diffusion_batch_mul,
            "ode_time_grid_size": self.ode_time_grid_size - 1,
            "gumbel_temperature": self.gumbel_temperature,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        check_positive(
            self, "vae_downsample_factor", "encoder_num_layers", "decoder_num_layers", "mlp_ratio", "layer_norm_eps",
            "connector_norm_eps", "codebook_eps", "flow_shift", "num_train_timesteps", "ode_atol", "ode_rtol",
        )  # fmt: skip
        check_finite(self, "scaling_factor", "commitment_weight", "guidance_scale", "flow_guidance_scale")
        if self.scaling_factor == 0:
            raise ValueError("scaling_factor must be non-zero (decoded latents are divided by it)")
        if not 0.0 <= self.codebook_decay <= 1.0:
            raise ValueError(f"codebook_decay must be in [0, 1], got {self.codebook_decay}")
        check_fraction(self, "attention_dropout", "hidden_dropout")
        if not 0.0 <= self.label_drop_prob <= 1.0:
            raise ValueError(f"label_drop_prob must be in [0, 1], got {self.label_drop_prob}")
        if not 0.0 < self.mask_ratio_min <= 1.0:
            raise ValueError(f"mask_ratio_min must be in (0, 1], got {self.mask_ratio_min}")
        super().__post_init__(**kwargs)

    @property
    def grid_size(self) -> int:
        """Tokens per side of the square token grid."""
        return self.sample_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Tokens per image (``seq_len`` of the original); also the size of the condition buffer."""
        return self.grid_size**2

    @property
    def token_dim(self) -> int:
        """Latent values per token (``token_embed_dim`` of the original)."""
        return self.latent_channels * self.patch_size**2

    @property
    def code_dim(self) -> int:
        """Width of the quantized code vectors: the LLM embedding width, or the transformer width."""
        return self.llm_embed_dim if self.use_llm_vocabulary else self.hidden_size

    @property
    def image_size(self) -> int:
        """Pixels per image side that the DC-AE turns into ``sample_size`` latent cells."""
        return self.sample_size * self.vae_downsample_factor

    def resolved_guidance_scale(self, guidance_scale: float | None = None) -> float:
        """The MAR guidance a decode uses: the given value, else the config's, else the method's default."""
        for value in (guidance_scale, self.guidance_scale):
            if value is not None:
                return float(value)
        return 2.9 if self.flow_method == "CondOT" else 1.0

    @classmethod
    def from_preset(cls, preset: str, **kwargs) -> "V2FlowConfig":
        """``v2flow_{base,large,huge}_{512,1024}`` with any field overridden by ``kwargs``."""
        if preset not in V2FLOW_PRESETS:
            raise ValueError(f"unknown V2Flow preset {preset!r}; known: {sorted(V2FLOW_PRESETS)}")
        fields = dict(V2FLOW_PRESETS[preset])
        fields.update(kwargs)
        return cls(**fields)
