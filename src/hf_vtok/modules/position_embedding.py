"""Learned absolute position embeddings (ViT layout: prefix-token rows, then the patch grid)."""

import torch
import torch.nn.functional as F
from torch import nn


class LearnedPositionEmbedding(nn.Module):
    """``weight [1, num_prefix_tokens + rows*cols, dim]`` added to ``[prefix tokens | grid tokens]``.

    The table belongs to one ``grid_size``. Another grid is an error unless ``interpolate=True``,
    which resamples the grid rows bicubically (antialiased), as timm's ``resample_abs_pos_embed``
    and transformers' ``interpolate_pos_encoding`` do; prefix rows are kept.
    """

    def __init__(self, grid_size: tuple[int, int], dim: int, num_prefix_tokens: int = 0):
        super().__init__()
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.num_prefix_tokens = num_prefix_tokens
        self.weight = nn.Parameter(torch.zeros(1, num_prefix_tokens + self.grid_size[0] * self.grid_size[1], dim))

    def table(self, grid_size: tuple[int, int] | None = None, interpolate: bool = False) -> torch.Tensor:
        grid_size = self.grid_size if grid_size is None else (int(grid_size[0]), int(grid_size[1]))
        if grid_size == self.grid_size:
            return self.weight
        if not interpolate:
            raise ValueError(
                f"this model's absolute position embedding covers a {self.grid_size[0]}x{self.grid_size[1]} patch "
                f"grid, the input gives {grid_size[0]}x{grid_size[1]}; resize the image to the configured size "
                "(the image processor does) or pass interpolate_pos_encoding=True"
            )
        prefix, grid = self.weight[:, : self.num_prefix_tokens], self.weight[:, self.num_prefix_tokens :]
        grid = grid.reshape(1, *self.grid_size, -1).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=grid_size, mode="bicubic", antialias=True, align_corners=False)
        grid = grid.permute(0, 2, 3, 1).flatten(1, 2).to(self.weight.dtype)
        return torch.cat((prefix, grid), dim=1)

    def forward(
        self, hidden_states: torch.Tensor, grid_size: tuple[int, int] | None = None, interpolate: bool = False
    ) -> torch.Tensor:
        return hidden_states + self.table(grid_size, interpolate).to(hidden_states.dtype)

    def extra_repr(self) -> str:
        return f"grid_size={self.grid_size}, dim={self.weight.shape[-1]}, num_prefix_tokens={self.num_prefix_tokens}"
