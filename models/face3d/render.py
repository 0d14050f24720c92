"""Differentiable rendering of a morphable model (CPU or GPU), in plain torch.

Two choices keep it cheap:

- a **window**: each frame renders only a square around the face (`Window`), at `size` px;
- **visibility from the rasterizer, gradients from us**: `models.face3d.raster.rasterize` (no
  gradient; the same triangles as pytorch3d's rasterizer with back faces culled, tested) says
  which triangle covers each pixel; `shade_pixels` recomputes the perspective-correct
  barycentric weights of the pixel centres from the projected vertices, so gradients reach the
  pose and the coefficients, and the visibility can be reused for a few optimiser steps.

Shading is Lambertian with 9 spherical-harmonics coefficients per colour channel
(`light (B, 9, 3)`), evaluated at the vertices (Gouraud) in the OpenCV camera frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.face3d.camera import head_to_camera, principal_point, project, rotate_normals
from models.face3d.morphable import MorphableModel
from models.face3d.raster import rasterize


@dataclass
class Window:
    """Square image windows, one per frame, rendered at `size` x `size` pixels."""

    x0: Tensor  # (B,) left edge, image px
    y0: Tensor  # (B,) top edge, image px
    side: Tensor  # (B,) side, image px
    size: int

    def to_window(self, points_px: Tensor) -> Tensor:
        """(B, N, 2) image px -> (B, N, 2) window px."""
        origin = torch.stack([self.x0, self.y0], -1)[:, None]  # (B, 1, 2)
        return (points_px - origin) * (self.size / self.side)[:, None, None]


def face_window(points_px: Tensor, size: int, margin: float = 0.06) -> Window:
    """(B, N, 2) projected vertices -> the square window round them, enlarged by `margin`."""
    lo = points_px.amin(1)  # (B, 2)
    hi = points_px.amax(1)
    centre = (lo + hi) / 2
    side = (hi - lo).amax(-1) * (1.0 + 2.0 * margin)  # (B,)
    return Window(centre[:, 0] - side / 2, centre[:, 1] - side / 2, side, size)


def project_vertices(model: MorphableModel, id: Tensor, exp: Tensor, euler: Tensor, trans: Tensor,
                     focal: float | Tensor, image_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """-> verts (B, N, 3) head frame, cam (B, N, 3) camera frame, px (B, N, 2) image pixels."""
    verts = model.vertices(id, exp)
    cam = head_to_camera(verts, euler, trans)
    cx, cy = principal_point(image_size)
    return verts, cam, project(cam, focal, cx, cy)


def _per_corner(values: Tensor, faces: Tensor) -> Tensor:
    """(B, N, C) per vertex -> (B, F, 3, C) per triangle corner (index_select: a cheap backward)."""
    return values.index_select(1, faces.reshape(-1)).view(values.shape[0], faces.shape[0], 3, values.shape[-1])


def _bary_planes(uvz: Tensor, faces: Tensor) -> Tensor:
    """(B, N, 3) window px + depth -> (B, F, 12) per triangle: the screen-space barycentric
    weights as planes over the pixel plane, w = ax * u + ay * v + c, laid out as
    (ax_0..2, ay_0..2, c_0..2), then the inverse vertex depths (1/z_0..2).

    A triangle seen edge-on (possible while the visibility is reused for a few steps) gets the
    centroid, without gradient."""
    tri = _per_corner(uvz, faces)  # (B, F, 3, 3)
    a, b, c = tri[..., 0, :2], tri[..., 1, :2], tri[..., 2, :2]
    area = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
    flat = area.abs() < 1e-4
    area = torch.where(flat, torch.ones_like(area), area)

    def plane(p: Tensor, q: Tensor) -> Tensor:  # cross(p - x, q - x) / area as (ax, ay, c)
        return torch.stack([p[..., 1] - q[..., 1], q[..., 0] - p[..., 0],
                            p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0]], -1) / area[..., None]

    wa, wb = plane(b, c), plane(c, a)  # (B, F, 3)
    wc = -wa - wb + wa.new_tensor([0.0, 0.0, 1.0])
    planes = torch.stack([wa, wb, wc], -1)  # (B, F, 3 terms, 3 weights)
    centroid = planes.new_tensor([[0.0] * 3, [0.0] * 3, [1.0 / 3.0] * 3])
    planes = torch.where(flat[..., None, None], centroid, planes)
    return torch.cat([planes.flatten(-2), 1.0 / tri[..., 2].clamp_min(1e-6)], -1)


def shade_pixels(uvz: Tensor, faces: Tensor, pix_to_face: Tensor, colors: Tensor,
                 pixels: Tensor | None = None) -> Tensor:
    """Per-vertex colours (B, N, C) -> (B, R, R, C) at the pixel centres (zeros where empty),
    differentiable in `uvz` and `colors`; with `pixels` (S,) flat indices into (B, R, R), only
    those pixels, as (S, C).

    Perspective-correct barycentric weights of each pixel centre in its triangle (`pix_to_face`,
    (B, R, R)): the screen-space weights, bounded to [-0.5, 1.5] (a pixel may drift a little
    outside its triangle while the visibility is reused), divided by the vertex depths and
    renormalised. Everything per triangle is computed once and gathered per pixel in one go.
    """
    b, r = pix_to_face.shape[0], pix_to_face.shape[1]
    c = colors.shape[-1]
    table = torch.cat([_bary_planes(uvz, faces), _per_corner(colors, faces).flatten(-2)], -1)  # (B, F, 12 + 3C)
    f = table.shape[1]
    every = pixels is None
    if every:
        pixels = torch.arange(b * r * r, device=uvz.device)
    face = pix_to_face.reshape(-1)[pixels]  # (S,)
    image, rest = torch.div(pixels, r * r, rounding_mode="floor"), pixels % (r * r)
    ax, ay, c0, inv_z, col = table.reshape(b * f, -1).index_select(0, face.clamp_min(0) + f * image).split(
        [3, 3, 3, 3, 3 * c], -1)
    u = (rest % r).to(uvz.dtype)[:, None] + 0.5  # (S, 1) pixel centre
    v = torch.div(rest, r, rounding_mode="floor").to(uvz.dtype)[:, None] + 0.5
    w = torch.addcmul(torch.addcmul(c0, ax, u), ay, v).clamp(-0.5, 1.5) * inv_z  # (S, 3)
    total = w.sum(-1, keepdim=True)
    w = w / torch.where(total.abs() < 1e-12, torch.full_like(total, 1e-12), total)
    out = torch.addcmul(torch.addcmul(w[:, 0:1] * col[:, :c], w[:, 1:2], col[:, c:2 * c]), w[:, 2:3], col[:, 2 * c:])
    out = out * (face >= 0)[:, None].to(out.dtype)
    return out.view(b, r, r, c) if every else out


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """(B, N, 3), (F, 3) -> (B, N, 3) unit normals, area-weighted over the adjacent faces."""
    v0, v1, v2 = _per_corner(verts, faces).unbind(2)
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)  # (B, F, 3)
    normals = torch.zeros_like(verts)
    for k in range(3):
        normals = normals.index_add(1, faces[:, k], fn)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-8)


def sh_basis(normals: Tensor) -> Tensor:
    """(..., 3) unit normals -> (..., 9) real SH basis up to band constants (folded into light)."""
    x, y, z = normals.unbind(-1)
    one = torch.ones_like(x)
    return torch.stack([one, x, y, z, x * y, x * z, y * z, x * x - y * y, 3.0 * z * z - 1.0], -1)


def default_light(batch: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """(B, 9, 3): uniform white light of irradiance 1 (the albedo shows unchanged)."""
    light = torch.zeros(batch, 9, 3, dtype=dtype, device=device)
    light[:, 0] = 1.0
    return light


def shade(albedo: Tensor, normals_cam: Tensor, light: Tensor) -> Tensor:
    """albedo (B, N, 3), camera-frame normals (B, N, 3), light (B, 9, 3) -> (B, N, 3) colour."""
    irradiance = sh_basis(normals_cam) @ light  # (B, N, 3)
    return albedo * irradiance


@dataclass
class Rendered:
    image: Tensor  # (B, R, R, 3) RGB, zeros where empty; (S, 3) when rendered at chosen pixels
    mask: Tensor  # (B, R, R) bool, pixels covered by the face
    pix_to_face: Tensor  # (B, R, R) long


def _window_uvz(px: Tensor, cam: Tensor, window: Window) -> Tensor:
    """Projected vertices -> (B, N, 3) window px (u, v) and camera depth."""
    return torch.cat([window.to_window(px), cam[..., 2:]], -1)


def visibility(model: MorphableModel, id: Tensor, exp: Tensor, euler: Tensor, trans: Tensor,
               focal: float | Tensor, image_size: int, window: Window) -> Tensor:
    """(B, R, R) index of the front-facing triangle seen at each window pixel, -1 where empty."""
    with torch.no_grad():
        _, cam, px = project_vertices(model, id, exp, euler, trans, focal, image_size)
        uvz = _window_uvz(px, cam, window)
        return rasterize(uvz, model.faces, window.size, window.size, cull_backfaces=True, near=0.0)[0]


def render_window(model: MorphableModel, id: Tensor, exp: Tensor, euler: Tensor, trans: Tensor,
                  focal: float | Tensor, image_size: int, window: Window, tex: Tensor | None = None,
                  light: Tensor | None = None, pix_to_face: Tensor | None = None,
                  pixels: Tensor | None = None) -> Rendered:
    """Render the model inside each frame's window (differentiable in everything but visibility).

    id (K_id,) or (B, K_id), exp (B, K_exp), euler / trans (B, 3), tex (K_tex,) or (B, K_tex),
    light (B, 9, 3). Pass `pix_to_face` to reuse the visibility of an earlier call, and
    `pixels` (S,) flat indices into (B, R, R) to shade only those pixels (`image` is then (S, 3)).
    """
    verts, cam, px = project_vertices(model, id, exp, euler, trans, focal, image_size)
    b = verts.shape[0]
    uvz = _window_uvz(px, cam, window)
    if pix_to_face is None:
        pix_to_face, _ = rasterize(uvz, model.faces, window.size, window.size, cull_backfaces=True, near=0.0)
    albedo = model.colors(tex).expand(b, -1, -1)
    if light is None:
        light = default_light(b, verts.dtype, verts.device)
    normals = rotate_normals(vertex_normals(verts, model.faces), euler)
    color = shade(albedo, normals, light)
    return Rendered(shade_pixels(uvz, model.faces, pix_to_face, color, pixels), pix_to_face >= 0, pix_to_face)


def render_frames(model: MorphableModel, id: Tensor, exp: Tensor, euler: Tensor, trans: Tensor,
                  focal: float, image_size: int, tex: Tensor | None = None, light: Tensor | None = None,
                  background: float | Tensor = 0.5) -> tuple[Tensor, Tensor]:
    """Full frames (B, S, S, 3) and face masks (B, S, S), at the image's own resolution.

    Each frame rasterizes only the pixel-aligned square round its face and pastes it onto the
    background, so a 512 px frame costs about a 250 px render.
    """
    with torch.no_grad():
        _, _, px = project_vertices(model, id, exp, euler, trans, focal, image_size)
        lo = torch.floor(px.amin(1)) - 2  # (B, 2)
        side = int(torch.ceil((px.amax(1) - lo).amax()).item()) + 2
        lo = lo.clamp(-side, image_size)  # a face far off the image renders only partly
        win = Window(lo[:, 0], lo[:, 1], torch.full_like(lo[:, 0], float(side)), side)
        out = render_window(model, id, exp, euler, trans, focal, image_size, win, tex, light)
    b, s = px.shape[0], image_size
    canvas = torch.empty(b, s + 2 * side, s + 2 * side, 3, dtype=out.image.dtype)
    canvas[:] = torch.as_tensor(background, dtype=canvas.dtype)
    mask = torch.zeros(b, s + 2 * side, s + 2 * side, dtype=torch.bool)
    for i in range(b):  # pasting only; the rendering above is batched
        x0, y0 = int(lo[i, 0]) + side, int(lo[i, 1]) + side
        m = out.mask[i]
        region = canvas[i, y0:y0 + side, x0:x0 + side]
        region[m] = out.image[i][m]
        mask[i, y0:y0 + side, x0:x0 + side] = m
    return canvas[:, side:side + s, side:side + s], mask[:, side:side + s, side:side + s]
