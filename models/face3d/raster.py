"""A z-buffered triangle rasterizer in plain torch, batched over images (CPU or GPU, no gradient).

Which triangle covers each pixel centre, and its screen-space barycentric weights. It is
vectorised over (triangle, pixel in the triangle's bounding box) pairs, so its cost grows with
the covered area rather than with pixels x faces (pytorch3d's CPU rasterizer visits every face
for every pixel of its bin). The nearest triangle wins one `scatter_reduce` of a key that
packs the depth's order-preserving integer bits above the triangle index.

Pixel (i, j) has its centre at (j + 0.5, i + 0.5); depth: smaller is nearer. A pixel counts as
covered when all three weights are >= 0 (edge pixels may go to either neighbour).
"""

from __future__ import annotations

import torch
from torch import Tensor

_FACE_BITS = 24  # triangle index bits in the z-buffer key (up to 16.7 M triangles)
_MAX_PAIRS = 1 << 23  # (triangle, pixel) candidates handled at once; larger batches are split


def _cross(u: Tensor, v: Tensor) -> Tensor:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _depth_key(z: Tensor, fid: Tensor) -> Tensor:
    """Order-preserving int64 key of float depth, with the triangle index in the low bits."""
    bits = z.float().view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long()  # int order == float order
    return (ordered << _FACE_BITS) + fid


@torch.no_grad()
def rasterize(uvz: Tensor, faces: Tensor, height: int, width: int, cull_backfaces: bool = False,
              near: float | None = None) -> tuple[Tensor, Tensor]:
    """uvz (B, N, 3) or (N, 3): pixel coordinates u, v and depth z per vertex; faces (F, 3).

    -> face (B, H, W) long (-1: empty) and bary (B, H, W, 3) in uvz's dtype (without the batch
    dimension when uvz has none). `cull_backfaces` drops triangles wound clockwise on screen
    (pytorch3d's back faces); `near` drops pixels whose depth is not above it.
    """
    single = uvz.ndim == 2
    uvz = uvz[None] if single else uvz
    if faces.shape[0] >= 1 << _FACE_BITS:
        raise ValueError(f"at most {1 << _FACE_BITS} triangles, got {faces.shape[0]}")
    b = uvz.shape[0]
    tri = uvz.detach()[:, faces]  # (B, F, 3 vertices, 3)
    lo = torch.ceil(tri[..., :2].amin(2) - 0.5).clamp_min(0)  # (B, F, 2) first pixel index in the bbox
    limit = uvz.new_tensor([width - 1.0, height - 1.0])
    hi = torch.minimum(torch.floor(tri[..., :2].amax(2) - 0.5), limit)
    area = _cross(tri[..., 1, :2] - tri[..., 0, :2], tri[..., 2, :2] - tri[..., 0, :2])  # (B, F)
    keep = (area < 0) if cull_backfaces else (area != 0)
    n = ((hi - lo + 1).clamp_min(0) * keep[..., None]).long()  # (B, F, 2) bbox pixels per side
    count = (n[..., 0] * n[..., 1]).view(-1)  # (B*F,)

    face = torch.full((b * height * width,), -1, dtype=torch.long, device=uvz.device)
    bary = uvz.new_zeros(b * height * width, 3)
    per_image = count.view(b, -1).sum(1)
    start = 0
    while start < b:  # images in groups of at most _MAX_PAIRS candidates
        stop = start + 1
        total = int(per_image[start])
        while stop < b and total + int(per_image[stop]) <= _MAX_PAIRS:
            total += int(per_image[stop])
            stop += 1
        _rasterize_images(tri, lo, n, count, area, range(start, stop), height, width, near, face, bary)
        start = stop
    face, bary = face.view(b, height, width), bary.view(b, height, width, 3)
    return (face[0], bary[0]) if single else (face, bary)


def _rasterize_images(tri: Tensor, lo: Tensor, n: Tensor, count: Tensor, area: Tensor, images: range,
                      height: int, width: int, near: float | None, face: Tensor, bary: Tensor) -> None:
    """Rasterize `images` into the flat `face` / `bary` buffers (in place)."""
    f = tri.shape[1]
    dev = tri.device
    sel = slice(images.start * f, images.stop * f)
    cnt = count[sel]
    pair = torch.repeat_interleave(torch.arange(sel.start, sel.stop, device=dev), cnt)  # (P,) image*F + face
    if pair.numel() == 0:
        return
    k = torch.arange(pair.shape[0], device=dev) - (torch.cumsum(cnt, 0) - cnt)[pair - sel.start]
    img, fid = torch.div(pair, f, rounding_mode="floor"), pair % f
    nx = n.view(-1, 2)[pair, 0]
    px = lo.view(-1, 2)[pair, 0].long() + k % nx
    py = lo.view(-1, 2)[pair, 1].long() + torch.div(k, nx, rounding_mode="floor")
    p = torch.stack([px, py], -1).to(tri.dtype) + 0.5  # (P, 2) pixel centres
    t = tri.view(-1, 3, 3)[pair]  # (P, 3 vertices, 3)
    a, b, c = t[:, 0, :2], t[:, 1, :2], t[:, 2, :2]
    ar = area.view(-1)[pair]
    wa, wb = _cross(b - p, c - p) / ar, _cross(c - p, a - p) / ar
    w = torch.stack([wa, wb, 1.0 - wa - wb], -1)  # (P, 3)
    inside = (w >= 0).all(-1)
    z = (w * t[..., 2]).sum(-1)
    if near is not None:
        inside &= z > near
    pix = (img * height + py) * width + px
    pix, w, fid = pix[inside], w[inside], fid[inside]
    key = _depth_key(z[inside], fid)
    best = torch.full_like(face, torch.iinfo(torch.long).max).scatter_reduce(0, pix, key, "amin")
    win = key == best[pix]  # exactly one pair per covered pixel (keys are unique per pixel)
    face[pix[win]] = fid[win]
    bary[pix[win]] = w[win]
