"""MAETok configuration."""

from huggingface_hub.dataclasses import strict

from ...utils.validation import check_attention_heads, check_positive
from ..latent_token_vit.configuration_latent_token_vit import (
    LatentTokenViTConfig,
    ReleasedTokenizer,
    released_tokenizers,
)

# The released checkpoints (entries of hf_vtok.pretrained): preset name -> original Hub repository and sizes.
MAETOK_PRESETS: dict[str, ReleasedTokenizer] = released_tokenizers("maetok")

AUXILIARY_TARGETS = ("hog", "dinov2", "siglip")


@strict
class MAETokConfig(LatentTokenViTConfig):
    r"""Configuration of a MAETok tokenizer (``MAETokModel``).

    Everything of ``LatentTokenViTConfig`` with MAETok's defaults (learned mixed 2D RoPE, no decoder class
    token, latent-modulated decoder blocks without LayerScale, 128 tokens of 32 channels), plus the
    training-time mask modelling:

    Args:
        mask_ratio_min / mask_ratio_max / mask_ratio_std: while training, one ratio per batch is drawn from
            a normal of mean ``mask_ratio_max`` and std ``mask_ratio_std`` truncated to
            ``[mask_ratio_min, mask_ratio_max]``, and ``ceil(N * ratio)`` random patches of each image are
            replaced by the encoder's learned mask token (the original ``enc_token_drop`` = 0.4 and
            ``enc_token_drop_max`` = 0.6). ``mask_ratio_min = 0`` builds no mask token and never masks.
        auxiliary_targets: shallow auxiliary decoders to build, each predicting per-patch features of the
            image from the latents: any of ``"hog"``, ``"dinov2"``, ``"siglip"`` (training only; the released
            inference checkpoints carry none).
        auxiliary_hidden_size / auxiliary_num_layers / auxiliary_num_heads: size of each auxiliary decoder.
        auxiliary_loss_on_masked_only: average the auxiliary losses over masked patches only.
        hog_num_bins / hog_cell_size / hog_gaussian_window: HOG target (orientation bins, pixels per cell
            side, side of the Gaussian weighting window); one patch gets ``3 * bins * (patch / cell)**2`` values.
        dinov2_feature_dim / siglip_feature_dim: widths of the DINOv2 / SigLIP teacher features.
    """

    model_type = "maetok"

    num_latent_tokens: int = 128
    latent_channels: int = 32
    decoder_layer_scale_init: float | None = None
    use_rope: bool = True
    decoder_cls_token: bool = False
    decoder_latent_modulation: bool = True
    mask_ratio_min: float | int = 0.4
    mask_ratio_max: float | int = 0.6
    mask_ratio_std: float | int = 0.25
    auxiliary_targets: tuple[str, ...] | list[str] = ()
    auxiliary_hidden_size: int = 192
    auxiliary_num_layers: int = 2
    auxiliary_num_heads: int = 3
    auxiliary_loss_on_masked_only: bool = True
    hog_num_bins: int = 9
    hog_cell_size: int = 8
    hog_gaussian_window: int = 16
    dinov2_feature_dim: int = 1024
    siglip_feature_dim: int = 1152

    def __post_init__(self, **kwargs):
        if not 0 <= self.mask_ratio_min <= self.mask_ratio_max < 1:
            raise ValueError(
                f"mask ratios must satisfy 0 <= mask_ratio_min <= mask_ratio_max < 1, got {self.mask_ratio_min} "
                f"and {self.mask_ratio_max}"
            )
        check_positive(
            self, "mask_ratio_std", "auxiliary_hidden_size", "auxiliary_num_layers", "auxiliary_num_heads",
            "hog_num_bins", "hog_cell_size", "hog_gaussian_window", "dinov2_feature_dim", "siglip_feature_dim",
        )  # fmt: skip
        self.auxiliary_targets = tuple(self.auxiliary_targets)
        unknown = [name for name in self.auxiliary_targets if name not in AUXILIARY_TARGETS]
        if unknown or len(set(self.auxiliary_targets)) != len(self.auxiliary_targets):
            raise ValueError(
                f"auxiliary_targets must be distinct names from {AUXILIARY_TARGETS}, got {self.auxiliary_targets}"
            )
        if self.auxiliary_targets:
            check_attention_heads(self, "auxiliary_hidden_size", "auxiliary_num_heads", 4 if self.use_rope else 1)
        if "hog" in self.auxiliary_targets and (
            self.decoder_patch_size % self.hog_cell_size or self.image_size % self.hog_gaussian_window
        ):
            raise ValueError(
                f"HOG targets need decoder_patch_size ({self.decoder_patch_size}) to be a multiple of hog_cell_size "
                f"({self.hog_cell_size}) and image_size ({self.image_size}) of hog_gaussian_window "
                f"({self.hog_gaussian_window})"
            )
        super().__post_init__(**kwargs)

    @property
    def hog_feature_dim(self) -> int:
        return self.num_channels * self.hog_num_bins * (self.decoder_patch_size // self.hog_cell_size) ** 2

    def auxiliary_feature_dim(self, target: str) -> int:
        return {"hog": self.hog_feature_dim, "dinov2": self.dinov2_feature_dim, "siglip": self.siglip_feature_dim}[
            target
        ]
