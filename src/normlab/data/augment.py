"""On-device image augmentation for a whole batch at once: random crop with padding + flip.

The per-sample crop offsets and flip bits are drawn ahead (once per epoch, by the loader), so
one gather does the work for the batch on whatever device it lives on: no per-sample loop and
no host synchronization.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def draw_crop_flip(n: int, padding: int, generator: torch.Generator) -> torch.Tensor:
    """`(n, 3)` int64 rows `(dy, dx, flip)`: offsets in `[0, 2 * padding]`, flip in {0, 1}."""
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flips = torch.randint(0, 2, (n, 1), generator=generator)
    return torch.cat([offsets, flips], dim=1)


def crop_flip(x: torch.Tensor, params: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad `x` `(B, C, H, W)` by `padding`, crop `H x W` at `(dy, dx)`, mirror if `flip`.

    `params` is `(B, 3)` int64 from `draw_crop_flip`, on `x`'s device. The padding is zeros in
    the units of `x` (black for pixel/255 images, as torchvision's `RandomCrop(padding=4)`).
    Returns a new `(B, C, H, W)` tensor; labels are untouched, so they stay aligned.
    """
    if x.ndim != 4:
        raise ValueError(f"crop_flip expects image batches (B, C, H, W), got {x.ndim}D input of shape {tuple(x.shape)}")
    batch, channels, height, width = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    dy, dx, flip = params[:, 0], params[:, 1], params[:, 2].bool()
    rows = dy[:, None] + torch.arange(height, device=x.device)  # (B, H)
    cols = torch.arange(width, device=x.device).expand(batch, width)
    cols = torch.where(flip[:, None], width - 1 - cols, cols) + dx[:, None]  # (B, W)
    b = torch.arange(batch, device=x.device)[:, None, None, None]
    c = torch.arange(channels, device=x.device)[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]
