"""A small z-buffered triangle rasterizer in plain torch (no pytorch3d): which triangle covers
each pixel centre and its screen-space barycentric weights. Used once per character to bind the
portrait's pixels to the fitted mesh; vectorised over (triangle, pixel-in-bounding-box) pairs.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _cross(u: Tensor, v: Tensor) -> Tensor:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


@torch.no_grad()
def rasterize(uv: Tensor, depth: Tensor, faces: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """uv (N, 2) px (pixel (i, j) has its centre at (j + 0.5, i + 0.5)), depth (N,) (smaller is
    nearer), faces (F, 3) -> face (H, W) long (-1: empty), bary (H, W, 3) float."""
    uv, depth = uv.double(), depth.double()
    tri = uv[faces]  # (F, 3, 2)
    lo = torch.ceil(tri.amin(1) - 0.5).clamp_min(0)  # (F, 2) first covered pixel index
    hi = torch.minimum(torch.floor(tri.amax(1) - 0.5), torch.tensor([width - 1.0, height - 1.0], dtype=uv.dtype))
    n = (hi - lo + 1).clamp_min(0).long()  # (F, 2) pixels per bbox side
    count = n[:, 0] * n[:, 1]  # (F,)
    fid = torch.repeat_interleave(torch.arange(faces.shape[0]), count)  # (P,) one per candidate pair
    k = torch.arange(fid.shape[0]) - (torch.cumsum(count, 0) - count)[fid]
    px = lo[fid, 0].long() + k % n[fid, 0]
    py = lo[fid, 1].long() + torch.div(k, n[fid, 0], rounding_mode="floor")
    p = torch.stack([px, py], -1).to(uv.dtype) + 0.5  # (P, 2)
    a, b, c = tri[fid, 0], tri[fid, 1], tri[fid, 2]
    area = _cross(b - a, c - a)
    ok = area.abs() > 1e-9
    area = torch.where(ok, area, torch.ones_like(area))
    wa, wb = _cross(b - p, c - p) / area, _cross(c - p, a - p) / area
    w = torch.stack([wa, wb, 1.0 - wa - wb], -1)  # (P, 3)
    inside = ok & (w >= -1e-7).all(-1)
    fid, w, pix = fid[inside], w[inside], (py * width + px)[inside]
    z = (w * depth[faces[fid]]).sum(-1)
    zbuf = torch.full((height * width,), float("inf"), dtype=z.dtype).scatter_reduce(0, pix, z, "amin")
    front = z <= zbuf[pix]
    face = torch.full((height * width,), -1, dtype=torch.long)
    bary = torch.zeros(height * width, 3, dtype=torch.float32)
    face[pix[front]] = fid[front]
    bary[pix[front]] = w[front].float()
    return face.view(height, width), bary.view(height, width, 3)
