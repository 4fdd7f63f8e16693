"""ViT autoencoder with a 1D latent-token bottleneck: the part SoftVQ-VAE and MAETok share.

Encoder (DINOv2-style ViT, timm layout): ``[cls | patch tokens + absolute positions | learned latent
tokens]`` -> blocks -> LayerNorm -> the last ``L`` states -> ``latent_proj`` = latents ``[B, L, C]``.
With ``use_rope`` the patch tokens are also rotated by learned mixed 2D RoPE in every block (class
and latent tokens are not rotated).

Decoder: ``latent_embed(latents) + latent positions`` appended to ``[cls? | one learned mask token per
output patch (+ absolute positions unless RoPE)]`` -> blocks (optionally adaLN-modulated by the raw
latents on the latent rows) -> norm -> patch rows -> ``output_proj`` -> pixels (or features).
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel  # noqa: F401  (diffusers looks this name up in component modules)
from transformers import initialization as init

from ...modeling_outputs import VisualTokenizerDecoderOutput, VisualTokenizerEncoderOutput, VisualTokenizerOutput
from ...modeling_utils import VisualTokenizerPreTrainedModel
from ...modules import (
    FP32LayerNorm,
    LatentModulatedNorm,
    LatentModulatedViTBlock,
    LearnedMixedRope2D,
    LearnedPositionEmbedding,
    ViTBlock,
    unpatchify,
)
from .configuration_latent_token_vit import LatentTokenViTConfig


@dataclass
class LatentTokenEncoderOutput(VisualTokenizerEncoderOutput):
    """``latents [B, L, C]``: the 1D latent tokens a generator models (before ``scaling_factor`` /
    ``shift_factor`` normalisation). ``last_hidden_state [B, L, D]``: the encoder's latent-token states
    after its final norm (before ``latent_proj``). ``token_mask [B, N]``: patches replaced by the mask
    token (MAETok training), else ``None``."""

    last_hidden_state: torch.FloatTensor | None = None
    token_mask: torch.BoolTensor | None = None


@dataclass
class LatentTokenViTOutput(VisualTokenizerOutput):
    """``model(pixel_values)``: ``sample`` = reconstruction ``[B, 3, H, W]`` (unclamped, [-1, 1] scale),
    ``latents`` = what ``encode`` returned, ``losses`` = named training losses (``loss`` their sum)."""

    token_mask: torch.BoolTensor | None = None


def _drop_path_rates(rate: float, num_layers: int) -> list[float]:
    """Stochastic depth rising linearly from 0 to ``rate`` over the blocks (timm's rule).

    The ``linspace`` runs on the CPU whatever the default device, so that the model builds on the meta device
    (``with torch.device("meta")``, ``init_empty_weights``); its float32 values are timm's to the bit (a Python
    ``rate * i / (n - 1)`` differs from them by one ulp for most depths).
    """
    return torch.linspace(0, rate, num_layers, device="cpu").tolist()


class LatentTokenViTEncoder(nn.Module):
    """Image ``[B, 3, H, W]`` -> latent tokens ``[B, L, latent_channels]``."""

    def __init__(self, config: LatentTokenViTConfig, with_mask_token: bool = False):
        super().__init__()
        width, heads, depth = config.encoder_hidden_size, config.encoder_num_heads, config.encoder_num_layers
        self.patch_size = config.encoder_patch_size
        self.num_latent_tokens = config.num_latent_tokens
        self.patch_embed = nn.Conv2d(config.num_channels, width, self.patch_size, stride=self.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position_embedding = LearnedPositionEmbedding(config.encoder_grid_size, width, num_prefix_tokens=1)
        self.latent_tokens = nn.Parameter(torch.zeros(1, config.num_latent_tokens, width))
        self.latent_position_embedding = nn.Parameter(torch.zeros(1, config.num_latent_tokens, width))
        # learned token that replaces masked patches while training with token masking (MAETok)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width)) if with_mask_token else None
        self.rope = LearnedMixedRope2D(depth, heads, width // heads, config.rope_theta) if config.use_rope else None
        self.layers = nn.ModuleList(
            ViTBlock(width, heads, config.mlp_ratio, norm_eps=config.norm_eps,
                     layer_scale_init=config.encoder_layer_scale_init, drop_path=rate)
            for rate in _drop_path_rates(config.encoder_drop_path_rate, depth)
        )  # fmt: skip
        self.norm = FP32LayerNorm(width, eps=config.norm_eps)
        self.latent_proj = nn.Linear(width, config.latent_channels)

    def forward(
        self,
        pixel_values: torch.Tensor,
        token_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Returns ``(latents, last_hidden_state, hidden_states)``."""
        batch = pixel_values.shape[0]
        rows, cols = pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size
        hidden_states = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)
        if token_mask is not None:
            if self.mask_token is None:
                raise ValueError(
                    "token_mask was given but this encoder has no mask token (no token masking configured)"
                )
            hidden_states = torch.where(
                token_mask.unsqueeze(-1), self.mask_token.to(hidden_states.dtype), hidden_states
            )
        hidden_states = torch.cat((self.cls_token.expand(batch, -1, -1).to(hidden_states.dtype), hidden_states), dim=1)
        hidden_states = self.position_embedding(hidden_states, (rows, cols), interpolate_pos_encoding)
        latent_tokens = (self.latent_tokens + self.latent_position_embedding).expand(batch, -1, -1)
        hidden_states = torch.cat((hidden_states, latent_tokens.to(hidden_states.dtype)), dim=1)
        rotary = self.rope(rows, cols, 1, self.num_latent_tokens) if self.rope is not None else None
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for index, layer in enumerate(self.layers):
            hidden_states = layer(hidden_states, rotary[index] if rotary is not None else None)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        last_hidden_state = self.norm(hidden_states)[:, -self.num_latent_tokens :]
        return self.latent_proj(last_hidden_state), last_hidden_state, all_hidden_states


class LatentTokenViTDecoder(nn.Module):
    """Latent tokens ``[B, L, latent_channels]`` -> per-patch outputs ``[B, rows*cols, output_dim]``.

    Built from explicit sizes so the same module serves as the pixel decoder and as MAETok's
    auxiliary feature decoders.
    """

    def __init__(
        self,
        *,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        latent_channels: int,
        num_latent_tokens: int,
        grid_size: tuple[int, int],
        output_dim: int,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        cls_token: bool = True,
        latent_modulation: bool = False,
        use_rope: bool = False,
        rope_theta: float = 10.0,
        layer_scale_init: float | None = None,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.num_latent_tokens = num_latent_tokens
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = int(cls_token)
        self.latent_modulation = latent_modulation
        self.latent_embed = nn.Linear(latent_channels, hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size)) if cls_token else None
        self.position_embedding = (
            None if use_rope else LearnedPositionEmbedding(grid_size, hidden_size, self.num_prefix_tokens)
        )
        self.latent_position_embedding = nn.Parameter(torch.zeros(1, num_latent_tokens, hidden_size))
        self.rope = (
            LearnedMixedRope2D(num_layers, num_heads, hidden_size // num_heads, rope_theta) if use_rope else None
        )
        rates = _drop_path_rates(drop_path_rate, num_layers)
        if latent_modulation:
            self.layers = nn.ModuleList(
                LatentModulatedViTBlock(
                    hidden_size, num_heads, latent_channels, mlp_ratio, norm_eps=norm_eps, drop_path=rate
                )
                for rate in rates
            )
            self.norm = LatentModulatedNorm(hidden_size, latent_channels, norm_eps)
        else:
            self.layers = nn.ModuleList(
                ViTBlock(hidden_size, num_heads, mlp_ratio, norm_eps=norm_eps, layer_scale_init=layer_scale_init,
                         drop_path=rate)
                for rate in rates
            )  # fmt: skip
            self.norm = FP32LayerNorm(hidden_size, eps=norm_eps)
        self.output_proj = nn.Linear(hidden_size, output_dim)

    @classmethod
    def from_config(cls, config: LatentTokenViTConfig, **overrides) -> "LatentTokenViTDecoder":
        """The pixel decoder ``config`` describes; ``overrides`` replace some of its sizes (MAETok's feature
        decoders)."""
        sizes = dict(
            hidden_size=config.decoder_hidden_size,
            num_layers=config.decoder_num_layers,
            num_heads=config.decoder_num_heads,
            latent_channels=config.latent_channels,
            num_latent_tokens=config.num_latent_tokens,
            grid_size=config.decoder_grid_size,
            output_dim=config.num_channels * config.decoder_patch_size**2,
            mlp_ratio=config.mlp_ratio,
            norm_eps=config.norm_eps,
            cls_token=config.decoder_cls_token,
            latent_modulation=config.decoder_latent_modulation,
            use_rope=config.use_rope,
            rope_theta=config.rope_theta,
            layer_scale_init=config.decoder_layer_scale_init,
            drop_path_rate=config.decoder_drop_path_rate,
        )
        return cls(**{**sizes, **overrides})

    def forward(
        self,
        latents: torch.Tensor,
        grid_size: tuple[int, int] | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Returns ``(outputs [B, rows*cols, output_dim], hidden_states)``."""
        rows, cols = self.grid_size if grid_size is None else grid_size
        batch = latents.shape[0]
        latents = latents.to(self.latent_embed.weight.dtype)
        embedded_latents = self.latent_embed(latents) + self.latent_position_embedding
        hidden_states = self.mask_token.expand(batch, rows * cols, -1)
        if self.cls_token is not None:
            hidden_states = torch.cat((self.cls_token.expand(batch, -1, -1), hidden_states), dim=1)
        if self.position_embedding is not None:
            hidden_states = self.position_embedding(hidden_states, (rows, cols), interpolate_pos_encoding)
        hidden_states = torch.cat((hidden_states, embedded_latents), dim=1)
        rotary = (
            self.rope(rows, cols, self.num_prefix_tokens, self.num_latent_tokens) if self.rope is not None else None
        )
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for index, layer in enumerate(self.layers):
            layer_rotary = rotary[index] if rotary is not None else None
            if self.latent_modulation:
                hidden_states = layer(hidden_states, latents, layer_rotary)
            else:
                hidden_states = layer(hidden_states, layer_rotary)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        hidden_states = self.norm(hidden_states, latents) if self.latent_modulation else self.norm(hidden_states)
        patch_states = hidden_states[:, self.num_prefix_tokens : self.num_prefix_tokens + rows * cols]
        return self.output_proj(patch_states), all_hidden_states


class LatentTokenViTPreTrainedModel(VisualTokenizerPreTrainedModel):
    """Shared encode / decode / latent normalisation of SoftVQ-VAE and MAETok.

    Subclasses build ``self.encoder`` / ``self.decoder`` (and their extras) and implement ``encode``
    and ``forward``; ``decode``, input validation and the latent normalisation live here.
    """

    config: LatentTokenViTConfig
    _no_split_modules = ["ViTBlock", "LatentModulatedViTBlock"]
    _input_embeddings = "encoder.patch_embed"

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # custom parameters, initialised as the original (timm ViT / continuous_tokenizer) does
        if isinstance(module, LearnedPositionEmbedding):
            init.trunc_normal_(module.weight, std=0.02)
        elif isinstance(module, LearnedMixedRope2D):
            init.copy_(module.frequencies, module.initial_frequencies())
        elif isinstance(module, LatentTokenViTEncoder):
            init.normal_(module.cls_token, std=1e-6)
            init.normal_(module.latent_tokens, std=0.02)
            init.trunc_normal_(module.latent_position_embedding, std=0.02)
            if module.mask_token is not None:
                init.normal_(module.mask_token, std=0.02)
        elif isinstance(module, LatentTokenViTDecoder):
            init.normal_(module.mask_token, std=0.02)
            init.trunc_normal_(module.latent_position_embedding, std=0.02)
            if module.cls_token is not None:
                init.normal_(module.cls_token, std=1e-6)
        elif isinstance(module, (LatentModulatedViTBlock, LatentModulatedNorm)):
            # adaLN starts at zero (the modulated rows start as zeros, as in the original)
            init.zeros_(module.modulation.weight)
            init.zeros_(module.modulation.bias)

    # ----------------------------------------------------------------------------------------------
    # latent normalisation (diffusers convention)
    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``(latents - shift_factor) * scaling_factor``: what a generator is trained on (original
        ``(z - vq_mean) / vq_std``)."""
        return (latents - self.config.shift_factor) * self.config.scaling_factor

    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``latents / scaling_factor + shift_factor``: generator samples back to decoder input (original
        ``z * vq_std + vq_mean``)."""
        return latents / self.config.scaling_factor + self.config.shift_factor

    # ----------------------------------------------------------------------------------------------
    # input checks
    def _check_pixel_values(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool) -> torch.Tensor:
        config = self.config
        if not isinstance(pixel_values, torch.Tensor):
            raise ValueError(f"pixel_values must be a tensor [B, 3, H, W], got {type(pixel_values).__name__}")
        if pixel_values.dim() != 4 or pixel_values.shape[1] != config.num_channels:
            raise ValueError(
                f"pixel_values must be [B, {config.num_channels}, H, W] in [-1, 1], "
                f"got shape {tuple(pixel_values.shape)}"
            )
        height, width = pixel_values.shape[-2:]
        patch = config.encoder_patch_size
        if height % patch or width % patch:
            raise ValueError(f"image size {height}x{width} (HxW) is not a multiple of the encoder patch size {patch}")
        if (height, width) != (config.image_size, config.image_size) and not interpolate_pos_encoding:
            raise ValueError(
                f"pixel_values are {height}x{width} (HxW) but this model encodes "
                f"{config.image_size}x{config.image_size} "
                "images (config.image_size; its position embedding is learned for that grid). Resize or crop with the "
                "model's image processor, or pass interpolate_pos_encoding=True to resample the position embedding."
            )
        self._check_input_values(pixel_values)
        return pixel_values.to(self.encoder.patch_embed.weight.dtype)

    def _check_latents(self, latents) -> torch.Tensor:
        if isinstance(latents, VisualTokenizerEncoderOutput):
            latents = latents.latents
        if latents is None:
            raise ValueError("decode needs latents [B, num_latent_tokens, latent_channels]")
        expected = (self.config.num_latent_tokens, self.config.latent_channels)
        if not isinstance(latents, torch.Tensor) or latents.dim() != 3 or tuple(latents.shape[1:]) != expected:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be [B, {expected[0]}, {expected[1]}] (B, tokens, channels), got {shape}")
        return latents

    def _decoder_grid(self, height: int | None, width: int | None, interpolate_pos_encoding: bool) -> tuple[int, int]:
        config = self.config
        height = config.image_size if height is None else int(height)
        width = config.image_size if width is None else int(width)
        patch = config.decoder_patch_size
        if height <= 0 or width <= 0 or height % patch or width % patch:
            raise ValueError(
                f"decode size {height}x{width} (HxW) must be positive multiples of the decoder patch size {patch}"
            )
        grid = (height // patch, width // patch)
        if (
            grid != config.decoder_grid_size
            and self.decoder.position_embedding is not None
            and not interpolate_pos_encoding
        ):
            raise ValueError(
                f"this decoder has an absolute position embedding for {config.image_size}x{config.image_size} "
                "images and "
                f"cannot decode {height}x{width} (the original cannot either); pass interpolate_pos_encoding=True to "
                "resample it anyway"
            )
        return grid

    # ----------------------------------------------------------------------------------------------
    def decode(
        self,
        latents: torch.Tensor | LatentTokenEncoderOutput | None = None,
        image_tokens: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> VisualTokenizerDecoderOutput | tuple:
        r"""Latent tokens ``[B, L, C]`` (un-normalised; or the output of ``encode``) -> images ``[B, 3, H, W]``.

        ``height`` / ``width`` default to ``config.image_size`` (the only size the original decodes: it
        slices its output by the configured patch count). As an extension, a RoPE decoder (MAETok)
        decodes any size that is a multiple of the patch size, including non-square ones; an
        absolute-position decoder (SoftVQ) needs ``interpolate_pos_encoding=True`` for that. ``sample``
        is not clamped (as the original).
        """
        if image_tokens is not None:
            raise ValueError(
                f"{type(self).__name__} is a continuous tokenizer: decode takes latents, not image_tokens"
            )
        latents = self._check_latents(latents)
        rows, cols = self._decoder_grid(height, width, interpolate_pos_encoding)
        patches, hidden_states = self._batch_sliced(
            lambda batch: self.decoder(batch, (rows, cols), interpolate_pos_encoding, output_hidden_states), latents
        )
        config = self.config
        sample = unpatchify(
            patches, (rows, cols), config.decoder_patch_size, config.num_channels, layout="channels_last"
        )
        output = VisualTokenizerDecoderOutput(sample=sample, hidden_states=hidden_states)
        return output if return_dict else output.to_tuple()

    def _reconstruct(
        self,
        latents: torch.Tensor,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool,
        output_hidden_states: bool = False,
    ) -> VisualTokenizerDecoderOutput:
        """``forward``'s decoding step: ``latents`` back to images of the input's size."""
        height, width = pixel_values.shape[-2:]
        return self.decode(
            latents,
            height=height,
            width=width,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=output_hidden_states,
        )

    @staticmethod
    def _forward_output(encoded, decoded, losses: dict | None, return_dict: bool, **extra):
        """``forward``'s result from its encoder and decoder outputs and named ``losses`` (``loss``: their sum)."""
        output = LatentTokenViTOutput(
            loss=sum(losses.values()) if losses else None,
            sample=decoded.sample,
            latents=encoded.latents,
            losses=losses,
            hidden_states=encoded.hidden_states,
            decoder_hidden_states=decoded.hidden_states,
            **extra,
        )
        return output if return_dict else output.to_tuple()

    def _encoder_states(self, pixel_values, token_mask, interpolate_pos_encoding, output_hidden_states):
        """``self.encoder`` (one sample at a time with ``enable_slicing()``): latents, last and all hidden states."""
        return self._batch_sliced(
            lambda pixels, mask: self.encoder(pixels, mask, interpolate_pos_encoding, output_hidden_states),
            pixel_values,
            token_mask,
        )
