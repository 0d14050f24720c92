"""Tri-plane field: feature lookup on three axis-aligned planes and the small decoder MLP.

Planes (B, 3, C, R, R) cover the cube [-box_warp/2, box_warp/2]^3 of the world. A point p is
scaled to (2 / box_warp) p and projected onto the planes as EG3D does, which fixes the layout a
converted checkpoint expects: plane 0 reads (x, y), plane 1 (x, z), plane 2 (z, x) (EG3D's third
plane is z-x, not z-y; kept for weight compatibility). The first coordinate indexes the plane's
columns, the second its rows (`grid_sample`, bilinear, align_corners=False, zeros outside).
The three features are averaged and decoded: FC(C -> hidden), softplus, FC(hidden -> 1 + F):
raw density (before the renderer's softplus(sigma - 1)) and F features squashed to
[-0.001, 1.001] (sigmoid x 1.002 - 0.001), the first three being RGB.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.nerffacespeech.stylegan import FullyConnected


def sample_triplanes(planes: Tensor, points: Tensor, box_warp: float) -> Tensor:
    """planes (B, 3, C, R, R), points (B, P, 3) world -> features (B, 3, C, P)."""
    b, n, c, h, w = planes.shape
    coords = (2.0 / box_warp) * points  # (B, P, 3) in [-1, 1] inside the box
    x, y, z = coords.unbind(-1)
    grids = torch.stack([torch.stack(p, dim=-1) for p in ((x, y), (x, z), (z, x))], dim=1)  # (B, 3, P, 2)
    out = F.grid_sample(planes.reshape(b * n, c, h, w), grids.reshape(b * n, 1, -1, 2).to(planes.dtype),
                        mode="bilinear", padding_mode="zeros", align_corners=False)  # (B*3, C, 1, P)
    return out.reshape(b, n, c, -1)


class TriplaneDecoder(nn.Module):
    """Averaged tri-plane features (..., C) -> raw density (..., 1), features (..., F)."""

    def __init__(self, in_channels: int, hidden: int, out_features: int, lr_mul: float = 1.0):
        super().__init__()
        self.fc0 = FullyConnected(in_channels, hidden, lr_mul=lr_mul)
        self.fc1 = FullyConnected(hidden, 1 + out_features, lr_mul=lr_mul)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        x = self.fc1(F.softplus(self.fc0(features)))
        sigma = x[..., :1]
        feats = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001
        return sigma, feats


def query_field(planes: Tensor, decoder: TriplaneDecoder, points: Tensor, box_warp: float) -> tuple[Tensor, Tensor]:
    """planes (B, 3, C, R, R), points (B, P, 3) -> raw density (B, P, 1), features (B, P, F)."""
    feats = sample_triplanes(planes, points, box_warp).mean(dim=1)  # (B, C, P)
    return decoder(feats.transpose(1, 2).contiguous())
