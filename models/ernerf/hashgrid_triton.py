"""Fused multi-resolution 2D hash-grid lookup (forward and backward) as Triton kernels.

The same maths as ``encodings.HashGrid2D`` (which stays the reference and the CPU path). One launch
per plane; each program takes BLOCK points and all levels and features of that plane as one
[points x levels * features] tile: the four corner rows (dense, xor-hashed or tiled), the bilinear
weights and the weighted sums are computed in registers and the tile is stored as whole row
segments of the encoding's (N, planes * L * F) output, with no (N, L, 4) index/weight tensors and no
concatenation. The backward pass recomputes rows and weights and scatters ``w * grad`` into each
table with relaxed atomic adds, skipping every zero contribution (the empty slots of fixed-shape
sampling carry a zero gradient). Triton runs these kernels on the CPU with ``TRITON_INTERPRET=1``
(set before this module is imported), which is how the tests compare them with the reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from models.ernerf.encodings import HASH_PRIMES

BLOCK = 128  # points per program; each program owns a [BLOCK x levels * features] tile


@triton.jit
def _corner(x, y, scale, verts, offset, level, num_dense, hash_mask, c: tl.constexpr, HASH: tl.constexpr):
    """Table row and bilinear weight of corner ``c`` (CORNERS_2D order) of points (x, y) in [0, 1]
    (x, y: [BLOCK, 1]; scale, verts, offset, level: [1, COLS]) -> [BLOCK, COLS] each."""
    px = tl.minimum(tl.maximum(x, 0.0), 1.0) * scale + 0.5
    py = tl.minimum(tl.maximum(y, 0.0), 1.0) * scale + 0.5
    fx0 = tl.floor(px)
    fy0 = tl.floor(py)
    fx = px - fx0
    fy = py - fy0
    ix = fx0.to(tl.int64) + (c % 2)
    iy = fy0.to(tl.int64) + (c // 2)
    dense_row = ix + iy * verts
    if HASH:
        wrapped = (ix * 1) ^ (iy * 2654435761)
    else:
        wrapped = dense_row
    row = tl.where(level < num_dense, dense_row, wrapped & hash_mask) + offset
    wx = fx if c % 2 == 1 else 1.0 - fx
    wy = fy if c // 2 == 1 else 1.0 - fy
    inside = (x >= 0.0) & (x <= 1.0) & (y >= 0.0) & (y <= 1.0)
    return row, tl.where(inside, wx * wy, 0.0)


@triton.jit
def _tile(x_ptr, scales_ptr, verts_ptr, offsets_ptr, n_points, x_stride, ax, ay,
          F: tl.constexpr, WIDTH: tl.constexpr, COLS: tl.constexpr, BLOCK: tl.constexpr):
    """This program's tile: BLOCK points by COLS >= WIDTH = levels * F columns, column j holding
    level j // F, feature j % F. -> (n64 [BLOCK, 1], col [1, COLS], feature, level, mask, x, y,
    scale, verts, offset), points [BLOCK, 1], per-column values [1, COLS]."""
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    col = tl.arange(0, COLS)
    n64 = n.to(tl.int64)[:, None]
    x = tl.load(x_ptr + n64 * x_stride + ax, mask=n[:, None] < n_points, other=0.0)
    y = tl.load(x_ptr + n64 * x_stride + ay, mask=n[:, None] < n_points, other=0.0)
    level = (tl.minimum(col, WIDTH - 1) // F)[None, :]  # padding columns repeat the last level
    scale = tl.load(scales_ptr + level)
    verts = tl.load(verts_ptr + level)
    offset = tl.load(offsets_ptr + level)
    mask = (n[:, None] < n_points) & (col[None, :] < WIDTH)
    return n64, col[None, :], (col % F)[None, :], level, mask, x, y, scale, verts, offset


@triton.jit
def _forward_kernel(x_ptr, table_ptr, out_ptr, scales_ptr, verts_ptr, offsets_ptr, n_points, x_stride,
                    ax, ay, out_stride, out_col, num_dense, hash_mask,
                    F: tl.constexpr, WIDTH: tl.constexpr, COLS: tl.constexpr, HASH: tl.constexpr,
                    BLOCK: tl.constexpr):
    n64, col, feat, level, mask, x, y, scale, verts, offset = _tile(
        x_ptr, scales_ptr, verts_ptr, offsets_ptr, n_points, x_stride, ax, ay, F, WIDTH, COLS, BLOCK)
    acc = tl.zeros([BLOCK, COLS], dtype=tl.float32)
    for c in tl.static_range(4):
        row, w = _corner(x, y, scale, verts, offset, level, num_dense, hash_mask, c, HASH)
        acc += w * tl.load(table_ptr + row * F + feat, mask=mask, other=0.0)
    tl.store(out_ptr + n64 * out_stride + out_col + col, acc, mask=mask)  # whole rows of the output


@triton.jit
def _backward_kernel(x_ptr, grad_ptr, grad_table_ptr, scales_ptr, verts_ptr, offsets_ptr, n_points, x_stride,
                     ax, ay, grad_stride, grad_col, num_dense, hash_mask,
                     F: tl.constexpr, WIDTH: tl.constexpr, COLS: tl.constexpr, HASH: tl.constexpr,
                     BLOCK: tl.constexpr):
    n64, col, feat, level, mask, x, y, scale, verts, offset = _tile(
        x_ptr, scales_ptr, verts_ptr, offsets_ptr, n_points, x_stride, ax, ay, F, WIDTH, COLS, BLOCK)
    g = tl.load(grad_ptr + n64 * grad_stride + grad_col + col, mask=mask, other=0.0)
    for c in tl.static_range(4):
        row, w = _corner(x, y, scale, verts, offset, level, num_dense, hash_mask, c, HASH)
        contrib = w * g
        # no atomic where the gradient is 0 (empty fixed-shape slots, zero weights); the sum needs no ordering
        tl.atomic_add(grad_table_ptr + row * F + feat, contrib, mask=mask & (contrib != 0.0), sem="relaxed")


def _launch(kernel, x01: Tensor, grid, a: int, b: int, buf: Tensor, col: int, table_like: Tensor) -> None:
    n = x01.shape[0]
    if n == 0:
        return
    args = (grid.scales_f32, grid.vertices, grid.offsets, n, x01.stride(0), a, b, buf.stride(0), col,
            grid.num_dense, grid.hash_mask)
    width = grid.output_dim
    meta = dict(F=grid.cfg.features_per_level, WIDTH=width, COLS=triton.next_power_of_2(width),
                HASH=grid.cfg.grid_type == "hash", BLOCK=BLOCK)
    launch = (triton.cdiv(n, BLOCK),)
    if kernel is _forward_kernel:  # buf is the output, table_like the table
        kernel[launch](x01, table_like, buf, *args, **meta)
    else:  # buf is the incoming gradient, table_like the table's gradient
        kernel[launch](x01, buf, table_like, *args, **meta)


class FusedPlanes(torch.autograd.Function):
    """x01 (N, D) in [0, 1]; planes: ((axis_a, axis_b), ...) one per grid; grids: HashGrid2D modules
    sharing one geometry; tables: their (T, F) fp32 tables -> (N, planes * L * F) fp32."""

    @staticmethod
    def forward(ctx, x01: Tensor, planes, grids, *tables: Tensor) -> Tensor:
        x01 = x01.detach().float().contiguous()
        width = grids[0].output_dim
        out = x01.new_empty(x01.shape[0], width * len(planes))
        for k, ((a, b), grid, table) in enumerate(zip(planes, grids, tables)):
            _launch(_forward_kernel, x01, grid, a, b, out, k * width, table.contiguous())
        ctx.save_for_backward(x01)
        ctx.planes, ctx.grids = planes, grids
        ctx.table_shapes = [t.shape for t in tables]
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x01,) = ctx.saved_tensors
        grad = grad.float().contiguous()
        width = ctx.grids[0].output_dim
        grads = []
        for k, ((a, b), grid, shape) in enumerate(zip(ctx.planes, ctx.grids, ctx.table_shapes)):
            if not ctx.needs_input_grad[3 + k]:
                grads.append(None)
                continue
            g = grad.new_zeros(shape)
            _launch(_backward_kernel, x01, grid, a, b, grad, k * width, g)
            grads.append(g)
        return (None, None, None, *grads)


def fused_planes(x01: Tensor, planes: tuple[tuple[int, int], ...], grids) -> Tensor:
    return FusedPlanes.apply(x01, planes, tuple(grids), *(g.table for g in grids))


assert HASH_PRIMES == (1, 2654435761), "the kernels hard-code instant-ngp's primes"
