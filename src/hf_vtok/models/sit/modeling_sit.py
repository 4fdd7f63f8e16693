"""SiT on 1D latent token sequences (the SoftVQ-VAE / MAETok flow-matching generators).

Same network as the 1D DiT (``hf_vtok.models.dit_1d.modeling_dit_1d``); the timestep is the flow time
``t`` in [0, 1] used raw, with ``x_t = alpha_t * x_0 + sigma_t * noise`` (``t = 1`` is pure noise)
and the model predicting the velocity ``dx_t / dt`` (``noise - x_0`` on the linear path, the
diffusers sign convention).
"""

from diffusers import ModelMixin  # noqa: F401  (diffusers looks this name up in component modules)
from diffusers.configuration_utils import register_to_config

from ..dit_1d.modeling_dit_1d import ClassConditionalTransformer1DModel


class SiTTransformer1DModel(ClassConditionalTransformer1DModel):
    r"""Class-conditional SiT velocity model on 1D latent tokens (``SiTPipeline``).

    Args:
        in_channels: channels per latent token (the tokenizer's latent size).
        num_tokens: latent tokens per image.
        hidden_size / num_layers / num_attention_heads / mlp_ratio: transformer size (SiT-XL: 1152 / 28 / 16 / 4).
        num_classes: class labels; ``class_dropout_prob > 0`` adds the null class ``num_classes``.
        qk_norm: LayerNorm on queries and keys (off in every released checkpoint).

    ``forward(hidden_states [B, L, C], timestep [B] flow time in [0, 1], class_labels [B] or [B, 1])`` returns
    ``Transformer2DModelOutput(sample=[B, L, C])``, the velocity.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 32,
        num_tokens: int = 128,
        hidden_size: int = 1152,
        num_layers: int = 28,
        num_attention_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        class_dropout_prob: float = 0.1,
        qk_norm: bool = False,
    ):
        super().__init__()
        self._build(out_channels=in_channels)
