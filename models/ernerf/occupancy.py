"""Occupancy grid over [-bound, bound]^3 for empty-space skipping (instant-ngp / torch-ngp style).

The grid keeps an EMA of the head's density per cell (``density``, -1 for cells no training camera
sees) and a packed bitfield of the cells whose density exceeds ``min(mean density, threshold)``.
Every ``update_every`` training steps the density is re-queried at jittered cell centres, dilated
(3x3x3 max), and merged as ``max(decay * old, new)``. Until the first update every seen cell is
occupied. Cells are indexed row-major, ``(ix * R + iy) * R + iz`` (the reference uses Morton order,
which only matters for CUDA memory locality).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.nn import functional as F


class OccupancyConfig(BaseModel):
    """Defaults: torch-ngp / ER-NeRF (grid 128^3, one cascade at bound 1, EMA 0.95, sigma 10, every 16 steps)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resolution: int = Field(128, ge=8, description="Cells per side of the occupancy grid.")
    decay: float = Field(0.95, description="EMA decay of the cell densities at each update.")
    density_threshold: float = Field(10.0, description="Cells below this density are skipped when sampling rays.")
    update_every: int = Field(16, ge=1, description="Training steps between occupancy updates.")
    dilation: int = Field(3, description="Max-pool kernel over the freshly queried densities (1: none).")
    query_chunk: int = Field(2**18, description="Points per density query during an update.")


def pack_bits(mask: Tensor) -> Tensor:
    """(M,) bool with M % 8 == 0 -> (M / 8,) uint8, bit i of byte k is mask[8k + i]."""
    bits = mask.view(-1, 8).to(torch.uint8)
    weights = torch.bitwise_left_shift(torch.ones(8, dtype=torch.uint8, device=mask.device),
                                       torch.arange(8, dtype=torch.uint8, device=mask.device))  # made on the device
    return (bits * weights).sum(dim=1, dtype=torch.uint8)


def unpack_bits(bitfield: Tensor, index: Tensor) -> Tensor:
    """bitfield (M / 8,) uint8, index (...) int64 cell indices -> (...) bool."""
    byte = bitfield[index >> 3].to(torch.int64)
    return ((byte >> (index & 7)) & 1).bool()


class OccupancyGrid(nn.Module):
    """State (all buffers, so they travel in the model's state_dict): density (R^3,),
    bitfield (R^3 / 8,) uint8, mean_density (), updates () int64."""

    def __init__(self, cfg: OccupancyConfig, bound: float = 1.0):
        super().__init__()
        if cfg.resolution % 2:
            raise ValueError(f"occupancy resolution must be even, got {cfg.resolution}")
        self.cfg = cfg
        self.bound = bound
        cells = cfg.resolution**3
        self.register_buffer("density", torch.zeros(cells))
        self.register_buffer("bitfield", torch.full((cells // 8,), 255, dtype=torch.uint8))  # all occupied
        self.register_buffer("mean_density", torch.zeros(()))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    @property
    def cell_size(self) -> float:
        return 2 * self.bound / self.cfg.resolution

    def cell_index(self, points: Tensor) -> Tensor:
        """points (..., 3) -> (...) linear cell index (points outside are clamped to the border)."""
        r = self.cfg.resolution
        ijk = ((points + self.bound) / self.cell_size).floor().long().clamp(0, r - 1)
        return (ijk[..., 0] * r + ijk[..., 1]) * r + ijk[..., 2]

    def cell_centers(self) -> Tensor:
        """(R^3, 3) world coordinates of the cell centres, in cell_index order."""
        r = self.cfg.resolution
        axis = (torch.arange(r, device=self.density.device) + 0.5) * self.cell_size - self.bound
        return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).view(-1, 3)

    def occupied(self, points: Tensor) -> Tensor:
        """points (..., 3) -> (...) bool; points outside [-bound, bound]^3 are empty."""
        inside = (points.abs() <= self.bound).all(dim=-1)
        return unpack_bits(self.bitfield, self.cell_index(points)) & inside

    def occupancy(self) -> Tensor:
        """(R^3,) bool occupancy of every cell."""
        return unpack_bits(self.bitfield, torch.arange(self.density.numel(), device=self.density.device))

    @torch.no_grad()
    def mark_unseen(self, c2w: Tensor, focal: float, cx: float, cy: float, near: float = 0.0) -> None:
        """Set cells that no camera (c2w (B, 4, 4), OpenGL axes) sees to -1: they stay empty."""
        pts = self.cell_centers()  # (M, 3)
        seen = torch.zeros(pts.shape[0], dtype=torch.bool, device=pts.device)
        margin = self.cell_size  # as the reference: a cell half-outside the frustum still counts
        for pose in c2w.to(pts.device, torch.float32):
            cam = (pts - pose[:3, 3]) @ pose[:3, :3]  # world -> camera, (M, 3)
            depth = -cam[:, 2]  # OpenGL cameras look down -z
            ok = depth > near
            ok &= cam[:, 0].abs() < cx / focal * depth + margin
            ok &= cam[:, 1].abs() < cy / focal * depth + margin
            seen |= ok
        self.density.masked_fill_(~seen, -1.0)  # no boolean indexing: no device read-back
        self._refresh_bitfield()

    @torch.no_grad()
    def update(self, density_fn: Callable[[Tensor], Tensor], generator: torch.Generator | None = None) -> None:
        """Query density_fn ((N, 3) -> (N,)) at jittered cell centres and merge it into the EMA.
        ``generator`` lives on the grid's device (the jitter is drawn there: no host round trip)."""
        pts = self.cell_centers()
        jitter = torch.rand(pts.shape, generator=generator, device=pts.device) * 2 - 1
        pts = pts + jitter * (self.cell_size / 2)
        fresh = torch.cat([density_fn(chunk).float() for chunk in pts.split(self.cfg.query_chunk)])
        if self.cfg.dilation > 1:
            r, k = self.cfg.resolution, self.cfg.dilation
            fresh = F.max_pool3d(fresh.view(1, 1, r, r, r), k, stride=1, padding=k // 2).view(-1)
        valid = (self.density >= 0) & (fresh >= 0)
        merged = torch.maximum(self.density * self.cfg.decay, fresh)
        self.density.copy_(torch.where(valid, merged, self.density))
        self.updates += 1
        self._refresh_bitfield()

    def _refresh_bitfield(self) -> None:
        self.mean_density.copy_(self.density.clamp(min=0).mean())
        threshold = torch.clamp(self.mean_density, max=self.cfg.density_threshold)
        # before the first update every seen cell is occupied (torch.where: no host synchronisation)
        occupied = torch.where(self.updates > 0, self.density > threshold, self.density >= 0)
        self.bitfield.copy_(pack_bits(occupied))
