"""Volume rendering of the tri-plane field along camera rays (EG3D's importance renderer).

1. **Coarse depths**: `n_coarse` depths evenly spaced in [ray_start, ray_end]; when `stratified`
   each moves forward by U(0, delta) (EG3D always jitters; here only while optimising, so that a
   rendering is deterministic).
2. **Importance depths** (optional): the coarse compositing weights of each interval are smoothed
   (max over neighbours, then a 2-tap mean, + 0.01) and `n_importance` depths are drawn from that
   piecewise-constant pdf by inverse-CDF sampling (evenly spaced quantiles when deterministic).
   Coarse and fine samples are merged in depth order and composited together.
3. **Compositing** at interval midpoints (EG3D's ray marcher): colour/density/depth averaged over
   each interval's ends, density softplus(sigma - 1), alpha = 1 - exp(-density * delta),
   weights = alpha * transmittance. Features = sum(weights * features) * 2 - 1, depth = weighted
   mean depth (clamped to the sampled range), alpha = sum(weights). No background colour: an empty
   ray gives -1 features (black).

A `PointWarp` can move the sample points before the field is queried (the expression deformation
of `deform.py`) and edit what the field returns there (density offset, feature scale); its
`moved` output (distance each sample was moved) is composited like a feature, which tells where
the image can change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F


@dataclass
class WarpResult:
    """What a point warp returns for (B, P, 3) sample points."""

    points: Tensor  # (B, P, 3) where to query the field instead
    density_offset: Tensor | None = None  # (B, P, 1) added to the raw density
    feature_scale: Tensor | None = None  # (B, P, 1) multiplies the decoded features
    moved: Tensor | None = None  # (B, P, 1) distance moved, world units


PointWarp = Callable[[Tensor], WarpResult]
Field = Callable[[Tensor], tuple[Tensor, Tensor]]  # points (B, P, 3) -> raw sigma (B, P, 1), feats (B, P, F)


@dataclass
class RayBundle:
    """The composited output of B x N rays."""

    features: Tensor  # (B, N, F) in about [-1, 1]
    depth: Tensor  # (B, N, 1)
    alpha: Tensor  # (B, N, 1) accumulated opacity
    moved: Tensor | None = None  # (B, N, 1) opacity-weighted distance the samples were moved


def coarse_depths(batch: int, n_rays: int, n: int, start: float, end: float, stratified: bool,
                  device=None, dtype=torch.float32, generator: torch.Generator | None = None) -> Tensor:
    """-> (B, N, n) depths along each ray."""
    d = torch.linspace(start, end, n, device=device, dtype=dtype).expand(batch, n_rays, n)
    if stratified and n > 1:
        jitter = torch.rand(batch, n_rays, n, device=device, dtype=dtype, generator=generator)
        d = d + jitter * ((end - start) / (n - 1))
    return d


def sample_pdf(edges: Tensor, weights: Tensor, n: int, stratified: bool,
               generator: torch.Generator | None = None) -> Tensor:
    """Inverse-CDF sampling of a piecewise-constant pdf.

    edges (..., K + 1) increasing, weights (..., K) >= 0 -> (..., n) samples (no gradient).
    """
    edges, weights = edges.detach(), weights.detach()
    pdf = weights / weights.sum(-1, keepdim=True).clamp_min(1e-8)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), pdf.cumsum(-1)], dim=-1).contiguous()  # (..., K + 1)
    shape = (*cdf.shape[:-1], n)
    if stratified:
        u = torch.rand(shape, device=cdf.device, dtype=cdf.dtype, generator=generator)
    else:
        u = ((torch.arange(n, device=cdf.device, dtype=cdf.dtype) + 0.5) / n).expand(shape)
    u = u.contiguous()
    idx = torch.searchsorted(cdf, u, right=True)
    lo = (idx - 1).clamp(0, cdf.shape[-1] - 1)
    hi = idx.clamp(0, cdf.shape[-1] - 1)
    c_lo, c_hi = cdf.gather(-1, lo), cdf.gather(-1, hi)
    e_lo, e_hi = edges.gather(-1, lo), edges.gather(-1, hi)
    denom = torch.where(c_hi - c_lo < 1e-8, torch.ones_like(c_lo), c_hi - c_lo)
    return e_lo + (u - c_lo) / denom * (e_hi - e_lo)


def smooth_weights(weights: Tensor) -> Tensor:
    """(..., K) interval weights -> (..., K): max with the neighbours, 2-tap mean, + 0.01."""
    shape = weights.shape
    w = weights.reshape(-1, 1, shape[-1])
    w = F.max_pool1d(F.pad(w, (1, 1), mode="replicate"), 3, 1)
    w = F.avg_pool1d(F.pad(w, (0, 1), mode="replicate"), 2, 1)
    return w.reshape(shape) + 0.01


def composite(feats: Tensor, sigma: Tensor, depths: Tensor, extra: Tensor | None = None
              ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Composite S samples per ray at the S - 1 interval midpoints.

    feats (B, N, S, F), sigma (B, N, S, 1) raw, depths (B, N, S, 1) increasing, extra (B, N, S, E)
    -> features (B, N, F) in [-1, 1]-ish, depth (B, N, 1), alpha (B, N, 1), weights (B, N, S - 1, 1),
    extra (B, N, E) composited without the 2x - 1 mapping.
    """
    delta = depths[:, :, 1:] - depths[:, :, :-1]

    def mid(x: Tensor) -> Tensor:
        return (x[:, :, :-1] + x[:, :, 1:]) / 2

    density = F.softplus(mid(sigma) - 1.0)
    alpha = 1.0 - torch.exp(-density * delta)  # (B, N, S-1, 1)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :, :1]), 1.0 - alpha + 1e-10], dim=2), dim=2)
    weights = alpha * trans[:, :, :-1]
    out = (weights * mid(feats)).sum(2) * 2.0 - 1.0
    total = weights.sum(2)
    d = (weights * mid(depths)).sum(2) / total.clamp_min(1e-8)
    d = torch.nan_to_num(d, float("inf")).clamp(depths.amin(), depths.amax())
    ex = None if extra is None else (weights * mid(extra)).sum(2)
    return out, d, total, weights, ex


def _query(field: Field, points: Tensor, warp: PointWarp | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """points (B, P, 3) -> raw sigma (B, P, 1), features (B, P, F), moved (B, P, 1) or None."""
    if warp is None:
        sigma, feats = field(points)
        return sigma, feats, None
    res = warp(points)
    sigma, feats = field(res.points)
    if res.density_offset is not None:
        sigma = sigma + res.density_offset
    if res.feature_scale is not None:
        feats = feats * res.feature_scale
    return sigma, feats, res.moved


def render_rays(field: Field, origins: Tensor, dirs: Tensor, ray_start: float, ray_end: float, n_coarse: int,
                n_importance: int = 0, stratified: bool = False, warp: PointWarp | None = None,
                generator: torch.Generator | None = None) -> RayBundle:
    """Render rays origins, dirs (B, N, 3) through `field` (coarse + optional importance pass)."""
    b, n, _ = origins.shape
    depths = coarse_depths(b, n, n_coarse, ray_start, ray_end, stratified, origins.device, origins.dtype,
                           generator)[..., None]  # (B, N, S, 1)

    def run(d: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        s = d.shape[2]
        pts = (origins[:, :, None] + d * dirs[:, :, None]).reshape(b, n * s, 3)
        sigma, feats, moved = _query(field, pts, warp)
        shape = (b, n, s, -1)
        return sigma.reshape(shape), feats.reshape(shape), None if moved is None else moved.reshape(shape)

    sigma, feats, moved = run(depths)
    if n_importance > 0:
        with torch.no_grad():
            _, _, _, w, _ = composite(feats, sigma, depths)
        fine = sample_pdf(depths[..., 0], smooth_weights(w[..., 0]), n_importance, stratified, generator)[..., None]
        sigma_f, feats_f, moved_f = run(fine)
        depths, order = torch.sort(torch.cat([depths, fine], dim=2), dim=2)

        def merge(a: Tensor, bb: Tensor) -> Tensor:
            x = torch.cat([a, bb], dim=2)
            return x.gather(2, order.expand(-1, -1, -1, x.shape[-1]))

        sigma, feats = merge(sigma, sigma_f), merge(feats, feats_f)
        moved = None if moved is None else merge(moved, moved_f)
    out, d, total, _, mv = composite(feats, sigma, depths, moved)
    return RayBundle(out, d, total, mv)
