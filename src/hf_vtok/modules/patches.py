"""Images <-> patch-token sequences, in the two vector layouts the originals use.

``layout="channels_first"``: each token vector is ordered ``(c, y, x)`` (``F.unfold`` order; ViTok);
``layout="channels_last"``: ``(y, x, c)`` (einops ``(p1 p2 c)``; SigLIP-style).
Tokens are in raster order (row-major over the patch grid).
"""

import torch


def _check_layout(layout: str) -> None:
    if layout not in ("channels_first", "channels_last"):
        raise ValueError(f"unknown patch layout {layout!r}; expected 'channels_first' or 'channels_last'")


def patchify(images: torch.Tensor, patch_size: int, layout: str = "channels_first") -> torch.Tensor:
    """``[B, C, H, W]`` (H, W multiples of ``patch_size``) -> ``[B, (H/p)*(W/p), C*p*p]``."""
    _check_layout(layout)
    batch, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} (HxW) is not a multiple of the patch size {patch_size}; "
            "pad or resize it first (the model's image processor does this)"
        )
    rows, cols = height // patch_size, width // patch_size
    grid = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    order = (0, 2, 4, 1, 3, 5) if layout == "channels_first" else (0, 2, 4, 3, 5, 1)
    return grid.permute(*order).reshape(batch, rows * cols, channels * patch_size * patch_size)


def unpatchify(
    tokens: torch.Tensor,
    grid_size: tuple[int, int],
    patch_size: int,
    num_channels: int = 3,
    layout: str = "channels_first",
) -> torch.Tensor:
    """``[B, rows*cols, C*p*p]`` in raster order -> ``[B, C, rows*p, cols*p]``."""
    _check_layout(layout)
    batch = tokens.shape[0]
    rows, cols = grid_size
    if tokens.shape[1] != rows * cols:
        raise ValueError(f"{tokens.shape[1]} tokens do not fill a {rows}x{cols} patch grid")
    if layout == "channels_first":
        grid = tokens.reshape(batch, rows, cols, num_channels, patch_size, patch_size).permute(0, 3, 1, 4, 2, 5)
    else:
        grid = tokens.reshape(batch, rows, cols, patch_size, patch_size, num_channels).permute(0, 5, 1, 3, 2, 4)
    return grid.reshape(batch, num_channels, rows * patch_size, cols * patch_size)


def grid_positions(rows: int, cols: int, batch: int = 1, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raster-order ``(row_idx, col_idx)``, each ``[batch, rows*cols]`` int64."""
    row_idx = torch.arange(rows, device=device).repeat_interleave(cols)
    col_idx = torch.arange(cols, device=device).repeat(rows)
    return row_idx.expand(batch, -1), col_idx.expand(batch, -1)


def scatter_to_canvas(
    tokens: torch.Tensor,
    patch_mask: torch.Tensor,
    row_idx: torch.Tensor,
    col_idx: torch.Tensor,
    grid_size: tuple[int, int],
    patch_size: int,
    num_channels: int = 3,
    layout: str = "channels_first",
) -> torch.Tensor:
    """Place each valid token of a NaFlex batch at its (row, col) on a ``grid_size`` canvas.

    Uncovered cells stay 0; tokens outside the canvas are an error. Returns ``[B, C, rows*p, cols*p]``.
    """
    rows, cols = grid_size
    batch, _, dim = tokens.shape
    valid = patch_mask.bool()
    if bool(((row_idx >= rows) | (col_idx >= cols))[valid].any()):
        raise ValueError(f"token positions exceed the {rows}x{cols} canvas")
    flat_index = torch.where(valid, row_idx * cols + col_idx, rows * cols)  # invalid tokens go to a spare slot
    canvas = tokens.new_zeros(batch, rows * cols + 1, dim)
    canvas.scatter_(1, flat_index.unsqueeze(-1).expand(-1, -1, dim), tokens)
    return unpatchify(canvas[:, :-1], grid_size, patch_size, num_channels, layout)
