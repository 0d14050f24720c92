"""Rays, sampling with empty-space skipping, volume rendering and compositing.

Conventions: cameras are camera-to-world 4x4 matrices in OpenGL axes (x right, y up, the camera
looks down -z); pixels are (column + 0.5, row + 0.5); the head lives in an axis-aligned box
(``aabb``) inside the occupancy grid's cube. Rays are marched with a fixed step from the box's
near plane; only samples in occupied cells are kept, the first ``max_samples`` of them per ray
(the reference's CUDA ray marcher does the same: fixed dt, at most max_steps occupied samples).
Volume rendering: w_i = T_i (1 - exp(-sigma_i delta_i)), T_i = exp(-sum_{j<i} sigma_j delta_j).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from models.ernerf.amp import autocast_off
from models.ernerf.fields import HeadField, TorsoField
from models.ernerf.memory import usable_device_memory
from models.ernerf.timing import timed


class RenderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # head box in world (OpenGL) axes; the reference's [-b, -b/2, -b, b, b/2, b] in its permuted
    # axes is the same box: 2 units wide and tall, 1 unit deep
    aabb: tuple[float, float, float, float, float, float] = Field(
        (-1.0, -1.0, -0.5, 1.0, 1.0, 0.5), description="The head's box (x0, y0, z0, x1, y1, z1), world units.")
    min_near: float = Field(0.05, description="Nearest sample distance along a ray, world units.")
    step_size: float = Field(2 * math.sqrt(3) / 128,
        description="Ray-marching step, world units (the reference's one-cascade 128^3 grid step).")
    max_samples: int = Field(16, ge=1, description="Occupied samples kept per ray (reference --max_steps).")
    # rays per chunk when rendering whole frames; None: on CUDA as many as memory_share of the memory
    # the process may use holds (at most 2^20), 4096 elsewhere (the reference's max_ray_batch; on the
    # CPU bigger chunks were 2x slower here)
    chunk_rays: int | None = Field(None, ge=1, description="Rays per chunk when rendering whole frames; empty: as "
                                   "memory_share allows on CUDA (at most 2^20), 4096 elsewhere.")
    memory_share: float = Field(
        0.5, gt=0, le=1,
        description="Share of the GPU memory this process may use (free plus PyTorch's cached-but-unused "
                    "memory) that one rendering chunk may fill; lower it on a GPU shared with other work.")

    # the reference's T_thresh: a ray stops once its transmittance falls below this (0: never)
    t_thresh: float = Field(1e-4, ge=0, lt=1,
        description="A ray stops once its transmittance falls below this (reference T_thresh; 0: never).")
    # evaluate every candidate slot with the mask multiplied in (no data-dependent shapes, no host
    # synchronisation); None: on CUDA only (on the CPU gathering the occupied samples is faster)
    fixed_shape: bool | None = Field(None, description="Evaluate every sample slot with the occupancy mask multiplied "
                                     "in (no host synchronisation); empty: on CUDA only.")

    def chunk_for(self, device: torch.device) -> int:
        if self.chunk_rays:
            return self.chunk_rays
        if device.type != "cuda":
            return 4096
        return rays_for_memory(int(usable_device_memory(device) * self.memory_share), self.max_samples)

    def fixed_shape_for(self, device: torch.device) -> bool:
        return self.fixed_shape if self.fixed_shape is not None else device.type == "cuda"


# Bytes one sample slot of an inference chunk holds at its peak: the tri-plane features, the MLPs'
# hidden activations and the per-sample outputs, in fp32, with room for temporaries (measured on the
# CPU with the reference model: about 1.5 KB per slot; bench/gpu_check.py measures it on a GPU).
BYTES_PER_SAMPLE = 4096


def rays_for_memory(free_bytes: int, max_samples: int, lo: int = 4096, hi: int = 2**20) -> int:
    """Rays per chunk that fit ``free_bytes``: a power of two in [lo, hi]."""
    rays = max(free_bytes // (BYTES_PER_SAMPLE * max_samples), 1)
    return int(min(max(2 ** int(math.log2(rays)), lo), hi))


# ----------------------------------------------------------------------------------------- rays
def pixel_centers(height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """(H * W, 2) pixel centres (column + 0.5, row + 0.5), row-major."""
    rows, cols = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device),
                                indexing="ij")
    return torch.stack([cols, rows], dim=-1).view(-1, 2).float() + 0.5


def camera_rays(c2w: Tensor, focal: float, cx: float, cy: float, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """c2w (B, 4, 4) OpenGL, pixels (B, R, 2) -> origins (B, R, 3), unit directions (B, R, 3), fp32."""
    with autocast_off(pixels.device):
        c2w, pixels = c2w.float(), pixels.float()
        x = (pixels[..., 0] - cx) / focal
        y = -(pixels[..., 1] - cy) / focal  # image rows go down, camera y goes up
        d_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # (B, R, 3)
        d_cam = d_cam / d_cam.norm(dim=-1, keepdim=True)
        dirs = d_cam @ c2w[:, :3, :3].transpose(1, 2)  # rotate into the world
        origins = c2w[:, None, :3, 3].expand_as(dirs)
    return origins, dirs


def image_plane_coords(pixels: Tensor, height: int, width: int) -> Tensor:
    """pixels (..., 2) -> (..., 2) in [-1, 1] (x across columns, y down rows); the torso's input."""
    return torch.stack([pixels[..., 0] / width, pixels[..., 1] / height], dim=-1) * 2 - 1


def ray_aabb(origins: Tensor, dirs: Tensor, aabb: Tensor, min_near: float) -> tuple[Tensor, Tensor]:
    """Slab test. origins, dirs (R, 3), aabb (6,) -> near (R,), far (R,); rays that miss get
    far <= near (no samples)."""
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0 = (aabb[:3] - origins) / safe
    t1 = (aabb[3:] - origins) / safe
    near = torch.minimum(t0, t1).amax(dim=-1).clamp(min=min_near)
    far = torch.maximum(t0, t1).amin(dim=-1)
    return near, far


@functools.lru_cache(maxsize=16)
def _box(aabb: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """The box as a (6,) tensor on ``device``, made once (a fresh host-to-device copy would block)."""
    return torch.tensor(aabb, dtype=dtype, device=device)


def max_candidates(aabb: tuple[float, ...], step: float) -> int:
    """Candidate samples per ray: enough to cross the box's diagonal."""
    diag = math.dist(aabb[:3], aabb[3:])
    return max(1, math.ceil(diag / step) + 1)


def sample_occupied(origins: Tensor, dirs: Tensor, near: Tensor, far: Tensor,
                    occupied: Callable[[Tensor], Tensor], step: float, num_candidates: int,
                    max_samples: int, jitter: Tensor) -> tuple[Tensor, Tensor]:
    """Uniform candidates t_k = near + (k + jitter) * step in [near, far), pruned by ``occupied``
    ((..., 3) -> (...) bool); keeps the first ``max_samples`` occupied ones per ray.

    origins, dirs (R, 3); near, far, jitter (R,) -> t (R, M), mask (R, M) with M = min(max_samples, K)."""
    k = torch.arange(num_candidates, device=origins.device)
    t = near[:, None] + (k[None, :] + jitter[:, None]) * step  # (R, K)
    pts = origins[:, None, :] + t[..., None] * dirs[:, None, :]  # (R, K, 3)
    occ = occupied(pts) & (t < far[:, None])  # (R, K)
    keep = occ & (occ.cumsum(dim=1) <= max_samples)
    m = min(max_samples, num_candidates)
    key = torch.where(keep, k, k + num_candidates)  # kept candidates first, in ray order
    order = torch.topk(key, m, dim=1, largest=False, sorted=True).indices  # (R, M)
    return t.gather(1, order), keep.gather(1, order)


# ------------------------------------------------------------------------------ volume rendering
def volume_weights(sigma: Tensor, delta: Tensor) -> Tensor:
    """sigma, delta (R, M) -> weights (R, M): T_i (1 - exp(-sigma_i delta_i))."""
    tau = sigma * delta
    before = torch.cat([torch.zeros_like(tau[:, :1]), torch.cumsum(tau, dim=1)[:, :-1]], dim=1)  # sum_{j<i}
    return torch.exp(-before) * (1 - torch.exp(-tau))  # stays finite when a sigma overflows to inf


def accumulate(weights: Tensor, values: Tensor) -> Tensor:
    """weights (R, M), values (R, M, C) or (R, M) -> (R, C) or (R,)."""
    if values.dim() == 2:
        return (weights * values).sum(dim=1)
    return (weights[..., None] * values).sum(dim=1)


def composite(rgb: Tensor, opacity: Tensor, background: Tensor) -> Tensor:
    """Premultiplied rgb (R, 3) over background (R, 3) with opacity (R,)."""
    return rgb + (1 - opacity[:, None]) * background


def _per_sample(value: Tensor, ray_id: Tensor) -> Tensor:
    """(R, C) per-ray or (1, C) shared conditioning -> (N, C) per sample."""
    return value if value.shape[0] == 1 else value[ray_id]


@dataclass
class HeadConditioning:
    """Conditioning of a bundle of rays; each tensor is per ray (R, .) or shared (1, .)."""

    audio: Tensor  # (R|1, C)
    eye: Tensor  # (R|1, E)
    appearance: Tensor | None  # (R|1, A)


def termination_mask(sigma: Tensor, delta: Tensor, t_thresh: float) -> Tensor:
    """(R, M) bool: samples reached while the transmittance before them is still >= t_thresh (the
    reference's compositing stops a ray there; ``t_thresh`` 0 keeps every sample)."""
    if t_thresh <= 0:
        return torch.ones_like(sigma, dtype=torch.bool)
    tau = (sigma * delta).detach().float()
    # exclusive sum_{j<i}, shifted rather than cumsum - tau: an infinite density would give inf - inf = NaN
    before = torch.cat([torch.zeros_like(tau[:, :1]), torch.cumsum(tau, dim=1)[:, :-1]], dim=1)
    return before <= -math.log(t_thresh)


def composite_samples(sigma: Tensor, rgb: Tensor, ambient_aud: Tensor, ambient_eye: Tensor, uncertainty: Tensor,
                      t: Tensor, mask: Tensor, step: float, t_thresh: float) -> dict[str, Tensor]:
    """Per-sample (R, M) values (rgb (R, M, 3)) of the kept samples ``mask`` -> per-ray results.

    As the reference's composite_rays_train_triplane: rgb, depth and uncertainty are weighted by
    w_i; the ambient (attention) maps are plain sums over the ray's samples, without the weights;
    a ray stops after the sample where its transmittance drops below ``t_thresh``."""
    keep = mask.to(sigma.dtype)
    sigma = torch.where(mask, sigma, torch.zeros_like(sigma))
    delta = keep * step
    keep = keep * termination_mask(sigma, delta, t_thresh).to(keep.dtype)
    weights = volume_weights(sigma, delta) * keep  # (R, M)
    return {
        "rgb": accumulate(weights, rgb),
        "opacity": weights.sum(dim=1),
        "depth": accumulate(weights, t),
        "ambient_aud": accumulate(keep, ambient_aud),
        "ambient_eye": accumulate(keep, ambient_eye),
        "uncertainty": accumulate(weights, uncertainty),
        "num_samples": mask.sum(),
    }


def _per_sample_dense(value: Tensor, r: int, m: int) -> Tensor:
    """(R, C) per-ray or (1, C) shared conditioning -> (R * M, C) per sample, without indexing."""
    if value.shape[0] == 1:
        return value
    return value[:, None, :].expand(r, m, value.shape[1]).reshape(r * m, value.shape[1])


def render_head(field: HeadField, origins: Tensor, dirs: Tensor, cond: HeadConditioning,
                occupied: Callable[[Tensor], Tensor], cfg: RenderConfig, jitter: Tensor | None = None,
                with_uncertainty: bool = True, fixed_shape: bool | None = None) -> dict[str, Tensor]:
    """origins, dirs (R, 3) -> rgb (R, 3) premultiplied, opacity, depth, ambient_aud, ambient_eye,
    uncertainty (R,), num_samples (), and the samples (x (N, 3), d (N, 3), valid (N,) bool) for
    regularisers.

    Two evaluations of the same maths: ``fixed_shape`` (default on CUDA) runs the field on all
    R x M candidate slots and multiplies the mask in, so no shape depends on the data and the host
    never waits for the device; otherwise only the occupied samples are gathered (boolean indexing:
    fewer field evaluations, the faster choice on the CPU)."""
    if fixed_shape is None:
        fixed_shape = cfg.fixed_shape_for(origins.device)
    with timed("sampling"):
        aabb = _box(cfg.aabb, origins.device, origins.dtype)
        near, far = ray_aabb(origins, dirs, aabb, cfg.min_near)
        if jitter is None:
            jitter = torch.zeros_like(near)
        t, mask = sample_occupied(origins, dirs, near, far, occupied, cfg.step_size,
                                  max_candidates(cfg.aabb, cfg.step_size), cfg.max_samples, jitter)
        r, m = t.shape
        if fixed_shape:
            x = (origins[:, None, :] + t[..., None] * dirs[:, None, :]).reshape(r * m, 3)
            d = dirs[:, None, :].expand(r, m, 3).reshape(r * m, 3)
            valid = mask.reshape(-1)

            def per_sample(v: Tensor) -> Tensor:
                return _per_sample_dense(v, r, m)

            def padded(v: Tensor) -> Tensor:  # (R * M, ...) -> (R, M, ...)
                return v.reshape((r, m) + v.shape[1:])
        else:
            ray_id = torch.arange(r, device=t.device)[:, None].expand(r, m)[mask]  # (N,)
            x = origins[ray_id] + t[mask][:, None] * dirs[ray_id]  # (N, 3)
            d = dirs[ray_id]
            valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)

            def per_sample(v: Tensor) -> Tensor:
                return _per_sample(v, ray_id)

            def padded(v: Tensor) -> Tensor:  # (N, ...) -> (R, M, ...)
                full = v.new_zeros((r, m) + v.shape[1:])
                full[mask] = v
                return full
    app = None if cond.appearance is None else per_sample(cond.appearance)
    with timed("mlp"):
        out = field(x, d, per_sample(cond.audio), per_sample(cond.eye), app, with_uncertainty)
    with timed("compositing"):
        res = composite_samples(padded(out["sigma"]), padded(out["rgb"]), padded(out["ambient_aud"]),
                                padded(out["ambient_eye"]), padded(out["uncertainty"]), t, mask,
                                cfg.step_size, cfg.t_thresh)
    res["samples"] = (x, d, valid)
    return res


def render_torso(field: TorsoField, coords: Tensor, pose_code: Tensor, appearance: Tensor | None,
                 background: Tensor) -> dict[str, Tensor]:
    """coords (R, 2) in [-1, 1], pose_code (R|1, 6), background (R, 3) ->
    alpha (R,), rgb (R, 3), image (R, 3) = torso over background, offset (R, 2)."""
    with timed("mlp"):
        out = field(coords, pose_code, appearance)
    alpha = out["alpha"][:, None]
    out["image"] = out["rgb"] * alpha + background * (1 - alpha)
    return out
