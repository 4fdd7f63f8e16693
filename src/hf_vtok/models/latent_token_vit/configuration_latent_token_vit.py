"""Configuration shared by the 1D latent-token ViT autoencoders (SoftVQ-VAE, MAETok)."""

from dataclasses import dataclass

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ...modeling_utils import check_checkpoint_type
from ...registry import family_presets
from ...utils.validation import check_attention_heads, check_finite, check_fraction, check_positive


@dataclass(frozen=True)
class ReleasedTokenizer:
    """A released checkpoint: its original Hub repository and the sizes it must have."""

    repo_id: str
    num_latent_tokens: int
    latent_channels: int
    image_size: int


def released_tokenizers(family: str) -> dict[str, ReleasedTokenizer]:
    """The releases of ``"softvq"`` / ``"maetok"`` (entries of ``hf_vtok.registry``) by preset name."""
    return {name: ReleasedTokenizer(entry.repo_id, **entry.config) for name, entry in family_presets(family).items()}


@strict
class LatentTokenViTConfig(PreTrainedConfig):
    r"""Architecture shared by SoftVQ-VAE and MAETok (not registered itself; use ``SoftVQConfig`` / ``MAETokConfig``).

    An image is cut into ``image_size / encoder_patch_size`` squared patches; a DINOv2-style ViT encoder
    reads ``[cls | patches | latent tokens]`` and keeps the last ``num_latent_tokens`` states, projected
    to ``latent_channels``: a 1D sequence of latent tokens ``[B, num_latent_tokens, latent_channels]``.
    The ViT decoder reads ``[cls? | one learned mask token per output patch | projected latents]`` and
    maps the patch states to pixels.

    Args:
        image_size: side of the square images the model was trained on (256 or 512 for the releases).
        num_channels: image channels.
        encoder_patch_size / decoder_patch_size: pixels per patch side of the encoder input and decoder output.
        num_latent_tokens: length of the 1D latent sequence.
        latent_channels: channels per latent token (the original ``codebook_embed_dim``).
        encoder_hidden_size / encoder_num_layers / encoder_num_heads: encoder ViT width, depth, heads.
        decoder_hidden_size / decoder_num_layers / decoder_num_heads: same for the decoder.
        mlp_ratio: MLP hidden size is ``int(width * mlp_ratio)`` (GELU MLP).
        norm_eps: LayerNorm epsilon.
        encoder_layer_scale_init / decoder_layer_scale_init: LayerScale init value, ``None`` for no LayerScale.
        encoder_drop_path_rate / decoder_drop_path_rate: stochastic depth, rising linearly over the blocks.
        use_rope: learned mixed 2D RoPE (per layer and head) on the patch tokens of both stacks; the
            decoder then has no absolute position embedding. The encoder always adds its learned absolute
            position embedding (the original does so even with RoPE).
        rope_theta: base of the RoPE frequency magnitudes (initialisation only; they are learned).
        decoder_cls_token: the decoder sequence starts with a learned class token.
        decoder_latent_modulation: decoder blocks are adaLN-modulated by the latents (MAETok's decoder;
            non-affine norms, no LayerScale).
        scaling_factor / shift_factor: diffusers-style latent normalisation. Generators work on
            ``(latents - shift_factor) * scaling_factor`` and decode ``x / scaling_factor + shift_factor``,
            i.e. ``shift_factor`` is the original ``vq_mean`` and ``scaling_factor`` is ``1 / vq_std``.
    """

    image_size: int = 256
    num_channels: int = 3
    encoder_patch_size: int = 16
    decoder_patch_size: int = 16
    num_latent_tokens: int = 64
    latent_channels: int = 32
    encoder_hidden_size: int = 768
    encoder_num_layers: int = 12
    encoder_num_heads: int = 12
    decoder_hidden_size: int = 768
    decoder_num_layers: int = 12
    decoder_num_heads: int = 12
    mlp_ratio: float | int = 4.0
    norm_eps: float = 1e-6
    encoder_layer_scale_init: float | None = 1e-5
    decoder_layer_scale_init: float | None = 1e-5
    encoder_drop_path_rate: float | int = 0.0
    decoder_drop_path_rate: float | int = 0.0
    use_rope: bool = False
    rope_theta: float | int = 10.0
    decoder_cls_token: bool = True
    decoder_latent_modulation: bool = False
    scaling_factor: float | int = 1.0
    shift_factor: float | int = 0.0

    def __post_init__(self, **kwargs):
        check_checkpoint_type(
            type(self), kwargs.get("model_type"), self.architectures
        )  # another family's config.json?
        check_positive(
            self, "image_size", "num_channels", "encoder_patch_size", "decoder_patch_size", "num_latent_tokens",
            "latent_channels", "encoder_hidden_size", "encoder_num_layers", "encoder_num_heads",
            "decoder_hidden_size", "decoder_num_layers", "decoder_num_heads", "mlp_ratio", "norm_eps", "rope_theta",
        )  # fmt: skip
        check_finite(self, "encoder_layer_scale_init", "decoder_layer_scale_init", "scaling_factor", "shift_factor")
        check_fraction(self, "encoder_drop_path_rate", "decoder_drop_path_rate")
        for role in ("encoder", "decoder"):
            check_attention_heads(self, f"{role}_hidden_size", f"{role}_num_heads", 4 if self.use_rope else 1)
            if int(getattr(self, f"{role}_hidden_size") * self.mlp_ratio) <= 0:
                raise ValueError(f"mlp_ratio={self.mlp_ratio} leaves the {role} blocks an empty MLP")
            patch = getattr(self, f"{role}_patch_size")
            if self.image_size % patch:
                raise ValueError(f"image_size={self.image_size} is not a multiple of {role}_patch_size={patch}")
        if self.decoder_latent_modulation and self.decoder_layer_scale_init is not None:
            raise ValueError(
                "latent-modulated decoder blocks have no LayerScale: set decoder_layer_scale_init=None "
                "when decoder_latent_modulation=True"
            )
        if self.scaling_factor == 0:
            raise ValueError("scaling_factor must be non-zero (it is 1 / the latent standard deviation)")
        super().__post_init__(**kwargs)

    @property
    def encoder_grid_size(self) -> tuple[int, int]:
        side = self.image_size // self.encoder_patch_size
        return side, side

    @property
    def decoder_grid_size(self) -> tuple[int, int]:
        side = self.image_size // self.decoder_patch_size
        return side, side

    @property
    def latent_mean(self) -> float:
        """The original ``vq_mean`` (= ``shift_factor``)."""
        return float(self.shift_factor)

    @property
    def latent_std(self) -> float:
        """The original ``vq_std`` (= ``1 / scaling_factor``)."""
        return 1.0 / float(self.scaling_factor)
