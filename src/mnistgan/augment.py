"""DiffAugment (Zhao et al. 2020): the same random, differentiable augmentations applied to
real and fake images before D, so D cannot overfit a small dataset and G still gets gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("translation", "cutout")


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio * size pixels, filling with the background (-1 or 0)."""
    n, _, h, w = x.shape
    s = max(1, int(h * ratio + 0.5))
    fill = x.amin().detach()  # background: -1 for tanh images, 0 for sigmoid ones
    padded = F.pad(x - fill, (s, s, s, s)) + fill  # no host sync for the fill value
    dy = torch.randint(0, 2 * s + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * s + 1, (n,), device=x.device)
    rows = (
        (dy[:, None] + torch.arange(h, device=x.device))
        .view(n, 1, h, 1)
        .expand(-1, x.shape[1], -1, w + 2 * s)
    )
    out = padded.gather(2, rows)
    cols = (
        (dx[:, None] + torch.arange(w, device=x.device))
        .view(n, 1, 1, w)
        .expand(-1, x.shape[1], h, -1)
    )
    return out.gather(3, cols)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Blank one random square of ratio * size per image (centred anywhere in the image)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + 1 - ch % 2, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + 1 - cw % 2, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    dy, dx = ys - cy + ch // 2, xs - cx + cw // 2  # position inside the square
    inside = (dy >= 0) & (dy < ch) & (dx >= 0) & (dx < cw)  # may be clipped at the border
    fill = x.amin().detach()
    return torch.where(inside.unsqueeze(1), fill, x)


def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    for name in filter(None, policy.split(",")):
        x = {"translation": translation, "cutout": cutout}[name](x)
    return x
