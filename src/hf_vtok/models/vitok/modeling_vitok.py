"""ViTok-v2: a ViT autoencoder on NaFlex patch sequences (lightweight encoder, deep decoder)."""

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel  # noqa: F401  (diffusers looks this name up in component modules)
from transformers.modeling_layers import GradientCheckpointingLayer

from ...modeling_outputs import VisualTokenizerDecoderOutput, VisualTokenizerEncoderOutput, VisualTokenizerOutput
from ...modeling_utils import VisualTokenizerPreTrainedModel
from ...modules import (
    Attention,
    DropPath,
    FP32LayerNorm,
    LayerScale,
    RMSNorm,
    SwiGLU,
    grid_positions,
    padding_attention_mask,
    patchify,
    rope_tables_2d,
    rounded_hidden_size,
    unpatchify,
)
from .configuration_vitok import ViTokConfig


@dataclass
class NaFlexLayout:
    """The NaFlex layout of a patch sequence, carried by every ViTok output so that
    ``model.decode(encoder_output)`` and ``processor.postprocess(decoder_output)`` need nothing else."""

    patch_mask: torch.BoolTensor | None = None
    row_idx: torch.LongTensor | None = None
    col_idx: torch.LongTensor | None = None
    orig_height: torch.LongTensor | None = None
    orig_width: torch.LongTensor | None = None

    def layout(self) -> dict:
        """The layout fields, to pass on to another output."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(NaFlexLayout)}


@dataclass
class ViTokEncoderOutput(NaFlexLayout, VisualTokenizerEncoderOutput):
    """``latents``: ``[B, N, C]`` for a patch sequence, ``[B, C, H/p, W/p]`` for an image tensor."""


@dataclass
class ViTokDecoderOutput(NaFlexLayout, VisualTokenizerDecoderOutput):
    """``sample``: decoded patches ``[B, N, 3*p*p]`` (or an image ``[B, 3, H, W]`` for grid latents), unclamped."""


@dataclass
class ViTokOutput(NaFlexLayout, VisualTokenizerOutput):
    """``sample``: the reconstruction in the input's layout; ``latents``: the code."""


def token_positions(name: str, batch: int, length: int, row_idx, col_idx, device=None):
    """``(row_idx, col_idx)`` ``[B, N]`` of a token sequence: the given ones (``[N]`` positions are shared by the
    batch), or the raster positions of a square grid when neither is given."""
    if (row_idx is None) != (col_idx is None):
        raise ValueError("row_idx and col_idx must be given together")
    if row_idx is None:
        side = math.isqrt(length)
        if side * side != length:
            raise ValueError(
                f"{name} holds {length} tokens and no row_idx/col_idx were given; positions can only be "
                "inferred for a square grid - pass the processor's row_idx and col_idx"
            )
        return grid_positions(side, side, batch, device=device)
    positions = []
    for label, index in (("row_idx", row_idx), ("col_idx", col_idx)):
        index = torch.as_tensor(index, device=device)
        if index.dim() == 1:
            index = index.unsqueeze(0).expand(batch, -1)
        if tuple(index.shape) != (batch, length):
            raise ValueError(
                f"{label} has shape {tuple(index.shape)}, expected ({length},) or {(batch, length)} to match {name}"
            )
        positions.append(index)
    return tuple(positions)


class ViTokBlock(GradientCheckpointingLayer):
    """Parallel block: one RMSNorm feeds attention and SwiGLU; LayerScale scales their sum."""

    def __init__(
        self, config: ViTokConfig, hidden_size: int, num_heads: int, drop_path: float = 0.0, role: str = "encoder"
    ):
        super().__init__()
        self.norm = RMSNorm(hidden_size, eps=config.norm_eps)
        self.attention = Attention(hidden_size, num_heads, qk_norm=True, norm_eps=config.norm_eps)
        intermediate = rounded_hidden_size(hidden_size, config.stack_mlp_ratio(role), config.mlp_multiple_of)
        self.mlp = SwiGLU(hidden_size, intermediate)
        self.layer_scale = (
            LayerScale(hidden_size, config.layer_scale_init) if config.use_layer_scale else nn.Identity()
        )
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        normed = self.norm(hidden_states)
        update = self.attention(normed, rotary, attention_mask) + self.mlp(normed)
        return hidden_states + self.drop_path(self.layer_scale(update))


class _ViTokStack(nn.Module):
    """Shared by encoder and decoder: a stack of blocks over 2D-RoPE positions."""

    role = "encoder"

    def __init__(self, config: ViTokConfig, hidden_size: int, num_layers: int, num_heads: int, drop_path_rate: float):
        super().__init__()
        self.head_dim = hidden_size // num_heads
        self.rope_theta = config.rope_theta
        self.layers = nn.ModuleList(
            ViTokBlock(config, hidden_size, num_heads, drop_path_rate * index / max(num_layers - 1, 1), self.role)
            for index in range(num_layers)
        )

    def rotary_tables(self, row_idx: torch.Tensor, col_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_tables_2d(row_idx, col_idx, self.head_dim, self.rope_theta)

    def run_layers(self, hidden_states, row_idx, col_idx, attention_mask, output_hidden_states):
        rotary = self.rotary_tables(row_idx, col_idx)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states, rotary, attention_mask)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states


class ViTokEncoder(_ViTokStack):
    def __init__(self, config: ViTokConfig):
        super().__init__(
            config, config.encoder_hidden_size, config.encoder_num_layers, config.encoder_num_heads, drop_path_rate=0.0
        )
        self.patch_embed = nn.Linear(config.pixels_per_token, config.encoder_hidden_size)
        self.latent_proj = nn.Linear(config.encoder_hidden_size, config.latent_channels)
        self.latent_norm = FP32LayerNorm(config.latent_channels, eps=config.latent_norm_eps, elementwise_affine=False)

    def forward(self, patches, row_idx, col_idx, attention_mask=None, output_hidden_states=False):
        hidden_states = self.patch_embed(patches)
        hidden_states, all_hidden_states = self.run_layers(
            hidden_states, row_idx, col_idx, attention_mask, output_hidden_states
        )
        return self.latent_norm(self.latent_proj(hidden_states)), all_hidden_states


class ViTokDecoder(_ViTokStack):
    role = "decoder"

    def __init__(self, config: ViTokConfig):
        super().__init__(
            config,
            config.decoder_hidden_size,
            config.decoder_num_layers,
            config.decoder_num_heads,
            drop_path_rate=config.drop_path_rate,
        )
        self.latent_embed = nn.Linear(config.latent_channels, config.decoder_hidden_size)
        self.patch_proj = nn.Linear(config.decoder_hidden_size, config.pixels_per_token)

    def forward(self, latents, row_idx, col_idx, attention_mask=None, output_hidden_states=False):
        hidden_states = self.latent_embed(latents)
        hidden_states, all_hidden_states = self.run_layers(
            hidden_states, row_idx, col_idx, attention_mask, output_hidden_states
        )
        return self.patch_proj(hidden_states), all_hidden_states


class ViTokModel(VisualTokenizerPreTrainedModel):
    r"""ViTok-v2 autoencoder.

    Inputs are NaFlex patch sequences from ``ViTokImageProcessor`` (``pixel_values [B, N, 3*p*p]``
    with ``patch_mask``, ``row_idx``, ``col_idx``), or plain image tensors ``[B, 3, H, W]`` in
    [-1, 1] with ``H`` and ``W`` multiples of the patch size.

    ```python
    >>> import hf_vtok
    >>> from transformers import AutoImageProcessor, AutoModel
    >>> processor = AutoImageProcessor.from_pretrained(path)
    >>> model = AutoModel.from_pretrained(path)
    >>> inputs = processor(images, return_tensors="pt")
    >>> latents = model.encode(**inputs)                  # ViTokEncoderOutput, latents [B, N, C]
    >>> decoded = model.decode(latents)                   # ViTokDecoderOutput, sample [B, N, 3*p*p]
    >>> pil_images = processor.postprocess(decoded)       # at each image's own size
    ```
    """

    config: ViTokConfig
    _no_split_modules = ["ViTokBlock"]
    # diffusers' tiling flag (enable_tiling); tiles are squares of `tile_size` token positions overlapping by
    # `tile_overlap`
    use_tiling = False
    tile_size = 32
    tile_overlap = 8

    def __init__(self, config: ViTokConfig):
        super().__init__(config)
        self.encoder = ViTokEncoder(config) if config.has_encoder else None
        self.decoder = ViTokDecoder(config) if config.has_decoder else None
        # a decoder-only model takes latents: its first layer is the latent embedding
        self._input_embeddings = "encoder.patch_embed" if config.has_encoder else "decoder.latent_embed"
        self.post_init()

    # ----------------------------------------------------------------------------------------------
    # tiled decoding (diffusers' enable_tiling)
    def enable_tiling(self, tile_size: int | None = None, tile_overlap: int | None = None) -> None:
        r"""Decode images larger than ``tile_size`` x ``tile_size`` token positions (default 32, i.e. 512 pixels at
        patch size 16) in overlapping square tiles, so memory grows with the tile, not the image.

        Each tile is decoded on its own (the decoder's attention sees only the tile) and the per-token outputs
        are averaged with weights that ramp linearly over ``tile_overlap`` tokens (default 8) from a tile's
        edge. Tokens outside every image (NaFlex padding) decode to zeros. Encoding is not tiled.
        """
        tile_size = self.tile_size if tile_size is None else tile_size
        tile_overlap = self.tile_overlap if tile_overlap is None else tile_overlap
        if not isinstance(tile_size, int) or tile_size < 1:
            raise ValueError(f"tile_size must be a positive number of tokens, got {tile_size!r}")
        if not isinstance(tile_overlap, int) or not 0 <= tile_overlap < tile_size:
            raise ValueError(f"tile_overlap must be an integer in [0, tile_size={tile_size}), got {tile_overlap!r}")
        self.tile_size, self.tile_overlap = tile_size, tile_overlap
        super().enable_tiling()

    def _needs_tiles(self, row_idx: torch.Tensor, col_idx: torch.Tensor) -> bool:
        span = max(int(row_idx.max()) - int(row_idx.min()), int(col_idx.max()) - int(col_idx.min())) + 1
        return span > self.tile_size

    def _tile_starts(self, low: int, high: int) -> list[int]:
        """First positions of the tiles covering ``[low, high]``, the last one ending at ``high``."""
        size, stride = self.tile_size, self.tile_size - self.tile_overlap
        if high - low + 1 <= size:
            return [low]
        starts = list(range(low, high - size + 1, stride))
        if starts[-1] + size - 1 < high:
            starts.append(high - size + 1)
        return starts

    def _tile_weights(self, offsets: torch.Tensor) -> torch.Tensor:
        """Blend weight of a token ``offsets`` positions into its tile: 1 inside, ramping down over the overlap."""
        ramp = self.tile_overlap + 1
        return torch.minimum(torch.minimum(offsets + 1, self.tile_size - offsets), torch.tensor(ramp)) / ramp

    def _tiled_decode(self, latents, row_idx, col_idx, patch_mask) -> torch.Tensor:
        """Decoded patches ``[B, N, 3*p*p]`` of latent tokens ``[B, N, C]``, one tile of positions at a time."""
        batch, length = latents.shape[:2]
        output = latents.new_zeros(batch, length, self.config.pixels_per_token)
        for index in range(batch):
            valid = patch_mask[index].bool() if patch_mask is not None else torch.ones_like(row_idx[index], dtype=bool)
            rows, cols = row_idx[index], col_idx[index]
            tops = self._tile_starts(int(rows[valid].min()), int(rows[valid].max()))
            lefts = self._tile_starts(int(cols[valid].min()), int(cols[valid].max()))
            if len(tops) == len(lefts) == 1:  # the image fits in one tile: decoded as a whole
                tokens = valid.nonzero().squeeze(1)
                output[index, tokens] = self.decoder(
                    latents[index, tokens][None], rows[tokens][None], cols[tokens][None]
                )[0][0]
                continue
            total = output.new_zeros(length, output.shape[-1])
            weights = output.new_zeros(length, 1)
            for top in tops:
                for left in lefts:
                    inside = valid & (rows >= top) & (rows < top + self.tile_size)
                    inside &= (cols >= left) & (cols < left + self.tile_size)
                    if not bool(inside.any()):
                        continue
                    tokens = inside.nonzero().squeeze(1)
                    decoded, _ = self.decoder(latents[index, tokens][None], rows[tokens][None], cols[tokens][None])
                    weight = self._tile_weights(rows[tokens] - top) * self._tile_weights(cols[tokens] - left)
                    total[tokens] += decoded[0] * weight[:, None].to(decoded.dtype)
                    weights[tokens] += weight[:, None].to(weights.dtype)
            output[index] = torch.where(valid[:, None], total / weights.clamp_min(1e-12), 0.0)
        return output

    # ----------------------------------------------------------------------------------------------
    # input layout
    def _run_half(self, encoding: bool, tensor, patch_mask, row_idx, col_idx, mask_padding, output_hidden_states):
        """Run the encoder (``encoding``) or the decoder on a token sequence ``[B, N, D]`` or a grid ``[B, C, H, W]``.

        A grid is cut into tokens (patches of ``patch_size`` pixels, or one latent per token) and the output is
        put back on a grid. Returns ``(output, layout fields of the output class)``.
        """
        config = self.config
        name, half = ("pixel_values", self.encoder) if encoding else ("latents", self.decoder)
        pixels, latents = (config.num_channels, config.patch_size, "H, W"), (config.latent_channels, 1, "h, w")
        (channels, patch_size, axes), (out_channels, out_patch_size, _) = (
            (pixels, latents) if encoding else (latents, pixels)
        )
        token_channels = config.pixels_per_token if encoding else config.latent_channels
        tensor = tensor.to((half.patch_embed if encoding else half.latent_embed).weight.dtype)
        grid_shape = None
        if tensor.dim() == 4:
            if tensor.shape[1] != channels:
                raise ValueError(
                    f"{name} of shape {tuple(tensor.shape)} have {tensor.shape[1]} channels, "
                    f"expected [B, {channels}, {axes}]"
                )
            grid_shape = (tensor.shape[2] // patch_size, tensor.shape[3] // patch_size)
            tensor = patchify(tensor, patch_size)
            row_idx, col_idx = grid_positions(*grid_shape, batch=tensor.shape[0], device=tensor.device)
            patch_mask = None
        elif tensor.dim() == 3:
            batch, length, dim = tensor.shape
            if dim != token_channels:
                raise ValueError(
                    f"{name} has {dim} channels per token (shape {tuple(tensor.shape)}), expected {token_channels}"
                )
            row_idx, col_idx = token_positions(name, batch, length, row_idx, col_idx, tensor.device)
            if patch_mask is not None and tuple(patch_mask.shape) != (batch, length):
                raise ValueError(
                    f"patch_mask has shape {tuple(patch_mask.shape)}, expected {(batch, length)} to match {name}"
                )
        else:
            raise ValueError(
                f"{name} must be a patch sequence [B, N, {token_channels}] or a grid [B, {channels}, {axes}], "
                f"got shape {tuple(tensor.shape)}"
            )
        attention_mask = self._attention_mask(patch_mask, mask_padding)
        if not encoding and self.use_tiling and self._needs_tiles(row_idx, col_idx):
            if output_hidden_states:
                raise ValueError("a tiled decode has hidden states per tile; call disable_tiling() to get them")
            output, hidden_states = self._tiled_decode(tensor, row_idx, col_idx, patch_mask), None
        else:
            output, hidden_states = self._batch_sliced(
                lambda *batch: half(*batch, output_hidden_states), tensor, row_idx, col_idx, attention_mask
            )
        if grid_shape is not None:
            output = unpatchify(output, grid_shape, out_patch_size, out_channels)
            row_idx = col_idx = None
        return output, {
            "hidden_states": hidden_states,
            "patch_mask": patch_mask,
            "row_idx": row_idx,
            "col_idx": col_idx,
        }

    def _attention_mask(self, patch_mask, mask_padding):
        mask_padding = self.config.mask_padding if mask_padding is None else mask_padding
        return padding_attention_mask(patch_mask) if mask_padding else None

    @staticmethod
    def _check_half(module, what):
        if module is None:
            raise ValueError(f"this ViTokModel was built without its {what} (config.has_{what}=False)")

    # ----------------------------------------------------------------------------------------------
    def encode(
        self,
        pixel_values: torch.Tensor,
        patch_mask: torch.Tensor | None = None,
        row_idx: torch.Tensor | None = None,
        col_idx: torch.Tensor | None = None,
        orig_height: torch.Tensor | None = None,
        orig_width: torch.Tensor | None = None,
        time_idx: torch.Tensor | None = None,
        grid_rows: torch.Tensor | None = None,
        grid_cols: torch.Tensor | None = None,
        mask_padding: bool | None = None,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> ViTokEncoderOutput | tuple:
        r"""Encode patches (or an image tensor) to latents.

        ``time_idx`` / ``grid_rows`` / ``grid_cols`` are accepted so that ``encode(**processor_output)``
        works; the model needs only the row/column positions. ``mask_padding`` overrides
        ``config.mask_padding`` for this call.
        """
        self._check_half(self.encoder, "encoder")
        self._check_input_values(pixel_values)
        latents, layout = self._run_half(
            True, pixel_values, patch_mask, row_idx, col_idx, mask_padding, output_hidden_states
        )
        output = ViTokEncoderOutput(latents=latents, **layout, orig_height=orig_height, orig_width=orig_width)
        return output if return_dict else output.to_tuple()

    def decode(
        self,
        latents: torch.Tensor | ViTokEncoderOutput | None = None,
        image_tokens: torch.Tensor | None = None,
        patch_mask: torch.Tensor | None = None,
        row_idx: torch.Tensor | None = None,
        col_idx: torch.Tensor | None = None,
        orig_height: torch.Tensor | None = None,
        orig_width: torch.Tensor | None = None,
        mask_padding: bool | None = None,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> ViTokDecoderOutput | tuple:
        r"""Decode latents ``[B, N, C]`` (with their positions) to patches, or grid latents ``[B, C, h, w]`` to images.

        ``latents`` may also be the ``ViTokEncoderOutput`` of ``encode``; its layout fields are used then.
        """
        self._check_half(self.decoder, "decoder")
        if image_tokens is not None:
            raise ValueError("ViTok is a continuous tokenizer: decode takes latents, not image_tokens")
        if isinstance(latents, ViTokEncoderOutput):
            encoded = latents
            latents = encoded.latents
            patch_mask = encoded.patch_mask if patch_mask is None else patch_mask
            row_idx = encoded.row_idx if row_idx is None else row_idx
            col_idx = encoded.col_idx if col_idx is None else col_idx
            orig_height = encoded.orig_height if orig_height is None else orig_height
            orig_width = encoded.orig_width if orig_width is None else orig_width
        if latents is None:
            raise ValueError("decode needs latents")
        patches, layout = self._run_half(
            False, latents, patch_mask, row_idx, col_idx, mask_padding, output_hidden_states
        )
        output = ViTokDecoderOutput(sample=patches, **layout, orig_height=orig_height, orig_width=orig_width)
        return output if return_dict else output.to_tuple()

    def forward(
        self,
        pixel_values: torch.Tensor,
        patch_mask: torch.Tensor | None = None,
        row_idx: torch.Tensor | None = None,
        col_idx: torch.Tensor | None = None,
        orig_height: torch.Tensor | None = None,
        orig_width: torch.Tensor | None = None,
        time_idx: torch.Tensor | None = None,
        grid_rows: torch.Tensor | None = None,
        grid_cols: torch.Tensor | None = None,
        mask_padding: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool = True,
    ) -> ViTokOutput | tuple:
        """Encode then decode: ``sample`` is the reconstruction in the input's layout, ``latents`` the code;
        ``hidden_states`` / ``decoder_hidden_states`` the encoder's / decoder's states when asked."""
        if self.encoder is None or self.decoder is None:
            raise ValueError("forward needs both halves; this model has only one, use encode / decode")
        output_hidden_states = self._output_hidden_states(output_hidden_states)
        encoded = self.encode(
            pixel_values,
            patch_mask,
            row_idx,
            col_idx,
            orig_height,
            orig_width,
            mask_padding=mask_padding,
            output_hidden_states=output_hidden_states,
        )
        decoded = self.decode(encoded, mask_padding=mask_padding, output_hidden_states=output_hidden_states)
        output = ViTokOutput(
            sample=decoded.sample,
            latents=encoded.latents,
            hidden_states=encoded.hidden_states,
            decoder_hidden_states=decoded.hidden_states,
            **encoded.layout(),
        )
        return output if return_dict else output.to_tuple()
