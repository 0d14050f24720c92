"""Input encodings: 2D multi-resolution hash grids, the tri-plane hash encoding, frequency and
spherical-harmonics encodings.

Hash grid (instant-ngp style, torch-ngp's level geometry):
- level ``l`` has scale ``s_l = base * b**l - 1`` with ``b = (desired / base) ** (1 / (L - 1))`` and
  ``s_l + 1`` cells per side, i.e. ``ceil(s_l) + 2`` vertices per side;
- a level stores ``min(table_size, vertices**2)`` entries (rounded up to a multiple of 8);
- a level whose vertices fit in its table is a dense grid (index ``x + y * vertices``); otherwise
  vertices are hashed with ``(x * 1) xor (y * 2654435761)`` in uint32 arithmetic ("hash" grids)
  or wrapped modulo the table ("tiled" grids, used by the reference for the torso);
- features are bilinearly interpolated from the four vertices around ``x * s_l + 0.5``;
  points outside ``[0, 1]^2`` encode to zeros.

Everything here is vectorised over points, levels and corners at once; ``hash_grid_reference`` is a
scalar Python re-statement used only by the tests. On CUDA the grids run the fused Triton kernels of
``hashgrid_triton`` instead (``backend="auto"``); the torch code here is the CPU path and the
reference those kernels are tested against.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from models.ernerf.amp import autocast_off
from models.ernerf.timing import timed

HASH_PRIMES = (1, 2654435761)  # instant-ngp's first two primes (the first is 1 on purpose)
UINT32_MASK = 0xFFFFFFFF
CORNERS_2D = ((0, 0), (1, 0), (0, 1), (1, 1))  # (dx, dy) per corner


class HashGridConfig(BaseModel):
    """One multi-resolution grid. Defaults are instant-ngp's / torch-ngp's GridEncoder defaults;
    the head and torso fields override them with ER-NeRF's values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_levels: int = Field(16, ge=1, description="Resolution levels of the grid.")
    features_per_level: int = Field(2, ge=1, description="Features stored per vertex and level.")
    base_resolution: int = Field(16, ge=2, description="Coarsest level's resolution (cells per side).")
    desired_resolution: int = Field(2048, ge=2,
        description="Finest level's resolution; sets the per-level growth factor.")
    log2_hashmap_size: int = Field(19, ge=6, le=24,
        description="log2 of the table entries per level (reference 14..19); finer levels hash into it.")
    grid_type: Literal["hash", "tiled"] = Field("hash",
        description="hash: finer levels hashed into the table; tiled: wrapped (the torso's grid).")
    init_range: float = Field(1e-4, description="Table entries start uniform in +-init_range (torch-ngp's 1e-4).")


@dataclass(frozen=True)
class LevelLayout:
    """Per-level geometry of a 2D grid (all tuples have one entry per level)."""

    scales: tuple[float, ...]  # s_l: x in [0,1] maps to x * s_l + 0.5
    vertices: tuple[int, ...]  # vertices per side (resolution + 1)
    sizes: tuple[int, ...]  # table entries of the level
    offsets: tuple[int, ...]  # first row of the level in the shared table
    hashed: tuple[bool, ...]  # True: hashed (or wrapped, for tiled grids); False: dense
    total: int  # rows of the shared table


def level_layout(cfg: HashGridConfig, dim: int = 2) -> LevelLayout:
    """Geometry of every level: scales, vertices, table sizes, offsets, hashed-or-dense."""
    levels = cfg.num_levels
    log2_scale = math.log2(cfg.desired_resolution / cfg.base_resolution) / max(levels - 1, 1)
    max_size = 2**cfg.log2_hashmap_size
    scales, vertices, sizes, offsets, hashed = [], [], [], [], []
    offset = 0
    for level in range(levels):
        scale = 2.0 ** (level * log2_scale) * cfg.base_resolution - 1.0
        n_vert = math.ceil(scale) + 2  # resolution = ceil(scale) + 1 cells, one more vertex
        dense = n_vert**dim
        size = min(max_size, dense)
        size = int(math.ceil(size / 8) * 8)
        scales.append(scale)
        vertices.append(n_vert)
        sizes.append(size)
        offsets.append(offset)
        hashed.append(dense > size)
        offset += size
    return LevelLayout(tuple(scales), tuple(vertices), tuple(sizes), tuple(offsets), tuple(hashed), offset)


def _corner_indices(cell: Tensor, vertices: Tensor, offsets: Tensor, num_dense: int, mask: int,
                    grid_type: str) -> Tensor:
    """Table rows of the 4 corners (CORNERS_2D order). cell: (N, L, 2) int64 lower-left vertex;
    levels [0, num_dense) are dense, the others hashed (or wrapped); mask = table size - 1 of the
    hashed levels (a power of two, so ``& mask`` is ``% size``) -> (N, L, 4).
    Corners are built by broadcasting (N, L, 1, 2) x-terms against (N, L, 2, 1) y-terms."""
    n, levels = cell.shape[:2]
    x0, y0 = cell[..., 0], cell[..., 1]  # (N, L)
    parts = []
    if num_dense > 0:  # dense levels: the row-major vertex index always fits the level's table
        v = vertices[:num_dense]
        base = x0[:, :num_dense] + y0[:, :num_dense] * v  # (N, Ld)
        steps = torch.stack([torch.zeros_like(v), torch.ones_like(v), v, v + 1], dim=-1)  # (Ld, 4)
        parts.append(base[..., None] + steps)
    if num_dense < levels:
        xh, yh = x0[:, num_dense:], y0[:, num_dense:]  # (N, Lh)
        xs = torch.stack([xh, xh + 1], dim=-1)[..., None, :]  # (N, Lh, 1, 2)
        if grid_type == "hash":  # uint32 xor-hash (prime 1 for x); only the low bits survive the mask
            ya = yh * HASH_PRIMES[1]
            ys = torch.stack([ya, ya + HASH_PRIMES[1]], dim=-1)[..., :, None]  # (N, Lh, 2, 1)
            rows = torch.bitwise_xor(xs * HASH_PRIMES[0], ys)
        else:  # tiled: the dense index wrapped around the table
            ys = torch.stack([yh, yh + 1], dim=-1)[..., :, None] * vertices[num_dense:, None, None]
            rows = xs + ys
        parts.append(rows.view(n, levels - num_dense, 4).bitwise_and_(mask))
    index = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return index.add_(offsets[:, None])


def _bilinear_weights(frac: Tensor) -> Tensor:
    """frac: (N, L, 2) position inside the cell -> (N, L, 4) corner weights (CORNERS_2D order)."""
    fx, fy = frac[..., 0], frac[..., 1]
    wx = torch.stack([1 - fx, fx], dim=-1)[..., None, :]  # (N, L, 1, 2)
    wy = torch.stack([1 - fy, fy], dim=-1)[..., :, None]  # (N, L, 2, 1)
    return (wy * wx).flatten(-2)


class _HashGridInterp(torch.autograd.Function):
    """Bilinear lookup whose backward recomputes corner rows and weights from the points, so only
    the (N, 2) points are kept for backward (not (N, L, 4) indices and weights). No gradient flows
    to the points (as torch-ngp's default); the table gets the scattered weighted gradients."""

    @staticmethod
    def forward(ctx, x01: Tensor, table: Tensor, grid: HashGrid2D) -> Tensor:
        index, weights = grid.corners(x01)  # (N, L, 4) each
        feats = table.index_select(0, index.view(-1)).view(*index.shape, table.shape[1])  # (N, L, 4, F)
        ctx.save_for_backward(x01)
        ctx.grid, ctx.table_shape = grid, table.shape
        return (weights[..., None] * feats).sum(dim=2)  # (N, L, F)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x01,) = ctx.saved_tensors
        index, weights = ctx.grid.corners(x01)
        contrib = (weights[..., None] * grad[:, :, None, :]).reshape(-1, ctx.table_shape[1])  # (N*L*4, F)
        grad_table = grad.new_zeros(ctx.table_shape).index_add_(0, index.view(-1), contrib)
        return None, grad_table, None


class HashGrid2D(nn.Module):
    """Multi-resolution 2D grid: (N, 2) in [0, 1] -> (N, L * F)."""

    def __init__(self, cfg: HashGridConfig):
        super().__init__()
        self.cfg = cfg
        self.layout = level_layout(cfg, dim=2)
        self.output_dim = cfg.num_levels * cfg.features_per_level
        table = torch.empty(self.layout.total, cfg.features_per_level)
        self.table = nn.Parameter(table.uniform_(-cfg.init_range, cfg.init_range))  # (T, F)
        lay = self.layout
        self.register_buffer("scales", torch.tensor(lay.scales, dtype=torch.float64), persistent=False)
        self.register_buffer("vertices", torch.tensor(lay.vertices), persistent=False)
        self.register_buffer("offsets", torch.tensor(lay.offsets), persistent=False)
        self.register_buffer("scales_f32", torch.tensor(lay.scales, dtype=torch.float32), persistent=False)
        self.num_dense = sum(not h for h in lay.hashed)  # dense levels come first (resolution grows)
        self.hash_mask = 2**cfg.log2_hashmap_size - 1
        self.backend: Backend = "auto"

    def corners(self, x01: Tensor) -> tuple[Tensor, Tensor]:
        """x01 (N, 2) -> table rows (N, L, 4) int64 and bilinear weights (N, L, 4); points outside
        [0, 1]^2 get zero weights."""
        inside = ((x01 >= 0) & (x01 <= 1)).all(dim=-1)  # (N,)
        pos = x01.clamp(0, 1)[:, None, :] * self.scales.to(x01.dtype)[None, :, None] + 0.5  # (N, L, 2)
        cell = torch.floor(pos)
        index = _corner_indices(cell.long(), self.vertices, self.offsets, self.num_dense, self.hash_mask,
                                self.cfg.grid_type)
        weights = _bilinear_weights(pos - cell)
        return index, weights * inside[:, None, None].to(weights.dtype)

    def forward(self, x01: Tensor) -> Tensor:
        """x01: (N, 2) in [0, 1] -> (N, L * F) in the table's dtype (autocast is off inside)."""
        return encode_planes(x01, ((0, 1),), (self,))

    def lookup(self, x01: Tensor) -> Tensor:
        """The pure-torch lookup (the reference): x01 (N, 2) -> (N, L * F). Without autograd
        (rendering) the dense levels are read by `grid_sample` (`_lookup_no_grad`)."""
        if torch.is_grad_enabled() and self.table.requires_grad:
            out = _HashGridInterp.apply(x01.detach().to(self.table.dtype), self.table, self)
            return out.reshape(x01.shape[0], self.output_dim)
        return self._lookup_no_grad(x01.detach().to(self.table.dtype))

    @torch.no_grad()
    def _lookup_no_grad(self, x01: Tensor) -> Tensor:
        """The same lookup for inference: each dense level is its (V, V) vertex grid read by
        `F.grid_sample` (bilinear, align_corners: vertex k sits at k), the hashed levels as in
        `corners`; equal to `_HashGridInterp` to float rounding (tested)."""
        n, f, d = x01.shape[0], self.cfg.features_per_level, self.num_dense
        inside = ((x01 >= 0) & (x01 <= 1)).all(dim=-1)  # (N,)
        pos = x01.clamp(0, 1)[:, None, :] * self.scales.to(x01.dtype)[None, :, None] + 0.5  # (N, L, 2)
        out = x01.new_empty(n, self.cfg.num_levels, f)
        lay = self.layout
        for level in range(d):
            v, start = lay.vertices[level], lay.offsets[level]
            image = self.table[start:start + v * v].view(v, v, f).permute(2, 0, 1)[None]  # (1, F, y, x)
            grid = (pos[:, level] * (2.0 / (v - 1)) - 1.0).view(1, 1, n, 2)
            out[:, level] = torch.nn.functional.grid_sample(image, grid, mode="bilinear", align_corners=True)[0, :, 0].T
        if d < self.cfg.num_levels:
            hashed = pos[:, d:]
            cell = torch.floor(hashed)
            index = _corner_indices(cell.long(), self.vertices[d:], self.offsets[d:], 0, self.hash_mask,
                                    self.cfg.grid_type)
            feats = self.table.index_select(0, index.view(-1)).view(*index.shape, f)  # (N, Lh, 4, F)
            out[:, d:] = (_bilinear_weights(hashed - cell)[..., None] * feats).sum(dim=2)
        return (out * inside[:, None, None].to(out.dtype)).reshape(n, self.output_dim)


Backend = Literal["auto", "torch", "triton"]


def on_gpu(x: Tensor) -> bool:
    return x.is_cuda


def use_fused(grid: HashGrid2D, x: Tensor) -> bool:
    """Whether ``grid`` runs the Triton kernels: backend "triton", or "auto" on CUDA with fp32 tables
    (unless the kernels could not be built in this process: ``FusedState``)."""
    if grid.backend == "auto":
        return on_gpu(x) and grid.table.dtype == torch.float32 and FUSED.broken is None
    return grid.backend == "triton"


class FusedState:
    """Whether the fused kernels work in this process. Until a launch has succeeded, a failure of
    the "auto" backend (Triton missing, or unable to build its launcher: no C compiler) switches
    every grid to the torch lookup with one warning; after a success, an error is a real one."""

    def __init__(self):
        self.ran = False
        self.broken: str | None = None

    def run(self, grid: HashGrid2D, launch: Callable[[], Tensor]) -> Tensor | None:
        """launch() -> its result, or None once the fused path is known not to work here."""
        try:
            out = launch()
        except Exception as exc:  # ImportError, Triton's compiler or driver errors
            if grid.backend == "triton" or self.ran:
                raise
            self.broken = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            warnings.warn(f"the fused Triton hash-grid kernels cannot run here ({self.broken}); "
                          "the torch lookup takes over (slower). Install a C compiler (gcc) for Triton to "
                          "build its kernels.", RuntimeWarning, stacklevel=3)
            return None
        self.ran = True
        return out


FUSED = FusedState()


def _fused(x01: Tensor, planes: tuple[tuple[int, int], ...], grids: tuple[HashGrid2D, ...]) -> Tensor:
    from models.ernerf.hashgrid_triton import fused_planes

    return fused_planes(x01, planes, grids)


def encode_planes(x01: Tensor, planes: tuple[tuple[int, int], ...], grids: tuple[HashGrid2D, ...]) -> Tensor:
    """Grid k reads columns planes[k] of x01 (N, D) in [0, 1] -> (N, sum of grid widths), the grids'
    features side by side; one fused kernel launch per grid on CUDA, else the torch lookups."""
    with timed("encoding"), autocast_off(x01.device):
        if use_fused(grids[0], x01):
            out = FUSED.run(grids[0], lambda: _fused(x01, planes, grids))
            if out is not None:
                return out
        parts = [grid.lookup(torch.stack([x01[:, a], x01[:, b]], dim=-1)) for grid, (a, b) in zip(grids, planes)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def hash_grid_reference(x01: Tensor, table: Tensor, cfg: HashGridConfig) -> Tensor:
    """Scalar re-statement of HashGrid2D (loops over points, levels, corners); for tests only."""
    lay = level_layout(cfg, dim=2)
    feats = cfg.features_per_level
    out = torch.zeros(x01.shape[0], cfg.num_levels * feats, dtype=table.dtype)
    for n, (x, y) in enumerate(x01.tolist()):
        if not (0 <= x <= 1 and 0 <= y <= 1):
            continue
        for level in range(cfg.num_levels):
            px, py = x * lay.scales[level] + 0.5, y * lay.scales[level] + 0.5
            cx, cy = math.floor(px), math.floor(py)
            fx, fy = px - cx, py - cy
            acc = torch.zeros(feats, dtype=table.dtype)
            for dx, dy in CORNERS_2D:
                ix, iy = cx + dx, cy + dy
                if cfg.grid_type == "hash" and lay.hashed[level]:
                    row = ((ix * HASH_PRIMES[0]) ^ (iy * HASH_PRIMES[1])) & UINT32_MASK
                else:
                    row = ix + iy * lay.vertices[level]
                row = row % lay.sizes[level] + lay.offsets[level]
                w = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
                acc += w * table[row]
            out[n, level * feats:(level + 1) * feats] = acc
    return out


class TriPlaneHashEncoding(nn.Module):
    """Three 2D hash grids on the xy, yz and xz planes; (N, 3) in [-bound, bound] -> (N, 3 * L * F)."""

    def __init__(self, cfg: HashGridConfig, bound: float = 1.0):
        super().__init__()
        self.bound = bound
        self.xy, self.yz, self.xz = HashGrid2D(cfg), HashGrid2D(cfg), HashGrid2D(cfg)
        self.output_dim = 3 * self.xy.output_dim

    def forward(self, xyz: Tensor) -> Tensor:
        x01 = (xyz + self.bound) / (2 * self.bound)  # (N, 3) in [0, 1]
        return encode_planes(x01, ((0, 1), (1, 2), (0, 2)), (self.xy, self.yz, self.xz))


class FrequencyEncoding(nn.Module):
    """[x, sin(2^k x), cos(2^k x) for k < num_frequencies]: (N, D) -> (N, D * (1 + 2K))."""

    def __init__(self, input_dim: int, num_frequencies: int):
        super().__init__()
        self.output_dim = input_dim * (1 + 2 * num_frequencies)
        self.register_buffer("freqs", 2.0 ** torch.arange(num_frequencies), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        scaled = x[..., None, :] * self.freqs[:, None].to(x.dtype)  # (N, K, D)
        parts = [x, torch.sin(scaled).flatten(-2), torch.cos(scaled).flatten(-2)]
        return torch.cat(parts, dim=-1)


def spherical_harmonics(d: Tensor, degree: int = 4) -> Tensor:
    """Real spherical harmonics of unit directions up to ``degree`` bands: (N, 3) -> (N, degree**2)."""
    if not 1 <= degree <= 4:
        raise ValueError(f"spherical harmonics degree must be 1..4, got {degree}")
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.4886025119029199 * y, 0.4886025119029199 * z, -0.4886025119029199 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [1.0925484305920792 * x * y, -1.0925484305920792 * y * z,
                0.31539156525252005 * (2 * zz - xx - yy), -1.0925484305920792 * x * z,
                0.5462742152960396 * (xx - yy)]
    if degree > 3:
        out += [-0.5900435899266435 * y * (3 * xx - yy), 2.890611442640554 * x * y * z,
                -0.4570457994644658 * y * (4 * zz - xx - yy), 0.3731763325901154 * z * (2 * zz - 3 * xx - 3 * yy),
                -0.4570457994644658 * x * (4 * zz - xx - yy), 1.445305721320277 * z * (xx - yy),
                -0.5900435899266435 * x * (xx - 3 * yy)]
    return torch.stack(out, dim=-1)
