"""Differentiable rendering of a morphable model, with pytorch3d's mesh rasterizer (CPU or GPU).

pytorch3d's CPU rasterizer visits every face for every pixel (no coarse binning on the CPU), so
the cost grows with pixels x faces. Two choices keep it small:

- a **window**: each frame renders only a square around the face (`Window`), at `size` px;
- **visibility from the rasterizer, gradients from us**: `rasterize` (no gradient) says which
  triangle covers each pixel; `barycentric` recomputes the perspective-correct barycentric
  weights of the pixel centres from the projected vertices in plain torch, so gradients reach
  the pose and the coefficients, and the visibility can be reused for a few optimiser steps.

Shading is Lambertian with 9 spherical-harmonics coefficients per colour channel
(`light (B, 9, 3)`), evaluated at the vertices (Gouraud) in the OpenCV camera frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.face3d.camera import head_to_camera, principal_point, project, rotate_normals
from models.face3d.morphable import MorphableModel


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


def rasterize(uvz: Tensor, faces: Tensor, size: int, cull_backfaces: bool = True, tile: int = 24) -> Tensor:
    """(B, N, 3) window px (u, v) + depth z, (F, 3) faces -> (B, size, size) face index, -1 empty.

    No gradient. The window pixel (i, j) has its centre at (j + 0.5, i + 0.5); pytorch3d's NDC
    has +x to the left and +y up, so x_ndc = 1 - 2u / size and y_ndc = 1 - 2v / size.
    The window is cut into `tile` px tiles, each rasterized (in one batched call) with only the
    faces whose bounding box meets it: the binning pytorch3d's CPU rasterizer does not do.
    """
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    b, n = uvz.shape[:2]
    g = max(1, -(-size // tile))  # tiles per side
    t = -(-size // g)  # tile side, px
    with torch.no_grad():
        uvz = uvz.detach().float()
        tri = uvz[:, faces]  # (B, F, 3, 3)
        lo = tri[..., :2].amin(2)  # (B, F, 2)
        hi = tri[..., :2].amax(2)
        edges = torch.arange(g, device=uvz.device, dtype=uvz.dtype) * t
        # (B, F, G) overlap of each face's bbox with each tile column / row (pixel centres).
        col = (hi[..., None, 0] >= edges + 0.5) & (lo[..., None, 0] <= edges + t - 0.5)
        row = (hi[..., None, 1] >= edges + 0.5) & (lo[..., None, 1] <= edges + t - 0.5)
        hit = (row[:, :, :, None] & col[:, :, None, :]).permute(0, 2, 3, 1).reshape(b * g * g, -1)  # (M, F)
        count = hit.sum(1)  # (M,)
        fmax = max(int(count.max().item()), 1)
        order = torch.argsort((~hit).to(torch.int8), dim=1, stable=True)[:, :fmax]  # hit faces first
        valid = torch.arange(fmax, device=uvz.device)[None] < count[:, None]  # (M, Fmax)
        tile_faces = torch.where(valid[..., None], faces[order], torch.full_like(faces[order], -1))
        # A tile without faces would be an empty mesh, which pytorch3d's packing rejects: give it
        # one degenerate triangle (zero area, never covers a pixel).
        tile_faces[:, 0] = torch.where((count == 0)[:, None], torch.zeros_like(tile_faces[:, 0]), tile_faces[:, 0])
        ty = torch.arange(g, device=uvz.device).repeat_interleave(g) * t  # (G*G,)
        tx = torch.arange(g, device=uvz.device).repeat(g) * t
        u = uvz[:, None, :, 0] - tx[None, :, None]  # (B, G*G, N)
        v = uvz[:, None, :, 1] - ty[None, :, None]
        z = uvz[:, None, :, 2].expand_as(u)
        ndc = torch.stack([1.0 - 2.0 * u / t, 1.0 - 2.0 * v / t, z], -1).reshape(b * g * g, n, 3)
        pix, _, _, _ = rasterize_meshes(
            Meshes(verts=ndc, faces=tile_faces), image_size=t, blur_radius=0.0, faces_per_pixel=1,
            bin_size=0, perspective_correct=False, cull_backfaces=cull_backfaces,
        )
        pix = pix[..., 0].view(b * g * g, t * t)  # packed index into the tiles' faces
        m = torch.arange(b * g * g, device=uvz.device)[:, None]
        packed = count.clamp_min(1)  # faces each tile mesh holds (the degenerate one included)
        first = torch.cumsum(packed, 0) - packed  # packed offset of each tile's faces
        local = (pix - first[:, None]).clamp(0, fmax - 1)
        face = torch.where(pix >= 0, order[m, local], torch.full_like(pix, -1))  # (M, t*t)
        face = face.view(b, g, g, t, t).permute(0, 1, 3, 2, 4).reshape(b, g * t, g * t)
    return face[:, :size, :size].contiguous()


def barycentric(uvz: Tensor, faces: Tensor, pix_to_face: Tensor) -> Tensor:
    """Perspective-correct barycentric weights of the pixel centres, differentiable in `uvz`.

    uvz (B, N, 3) window px + depth, faces (F, 3), pix_to_face (B, R, R) -> (B, R, R, 3).
    Pixels without a face get weights of face 0 (mask them with `pix_to_face >= 0`).
    """
    b, r = pix_to_face.shape[0], pix_to_face.shape[1]
    face = pix_to_face.clamp_min(0).view(b, -1)  # (B, P)
    vidx = faces[face]  # (B, P, 3)
    tri = torch.gather(uvz, 1, vidx.view(b, -1, 1).expand(-1, -1, 3)).view(b, -1, 3, 3)  # (B, P, 3 verts, 3)
    grid = torch.arange(r, dtype=uvz.dtype, device=uvz.device) + 0.5
    py, px = torch.meshgrid(grid, grid, indexing="ij")
    p = torch.stack([px, py], -1).view(1, -1, 2)  # (1, P, 2)
    a, bb, c = tri[..., 0, :2], tri[..., 1, :2], tri[..., 2, :2]

    def cross(u: Tensor, v: Tensor) -> Tensor:
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    area = cross(bb - a, c - a)
    # A triangle seen edge-on (possible while the visibility is reused for a few steps) gets the
    # centroid, without gradient; other pixels may drift a little outside their triangle, so the
    # weights are bounded to [-0.5, 1.5] before the perspective correction.
    flat = area.abs() < 1e-4
    area = torch.where(flat, torch.ones_like(area), area)
    wa = cross(bb - p, c - p) / area
    wb = cross(c - p, a - p) / area
    w = torch.stack([wa, wb, 1.0 - wa - wb], -1).clamp(-0.5, 1.5)  # (B, P, 3) screen space
    w = torch.where(flat[..., None], torch.full_like(w, 1.0 / 3.0), w)
    w = w / tri[..., 2].clamp_min(1e-6)  # perspective correction: divide by depth, renormalise
    total = w.sum(-1, keepdim=True)
    w = w / torch.where(total.abs() < 1e-12, torch.full_like(total, 1e-12), total)
    return w.view(b, r, r, 3)


def interpolate(values: Tensor, faces: Tensor, pix_to_face: Tensor, bary: Tensor) -> Tensor:
    """values (B, N, C) per vertex -> (B, R, R, C) at the pixel centres (zeros where empty)."""
    b, r = pix_to_face.shape[0], pix_to_face.shape[1]
    c = values.shape[-1]
    vidx = faces[pix_to_face.clamp_min(0).view(b, -1)]  # (B, P, 3)
    vals = torch.gather(values, 1, vidx.view(b, -1, 1).expand(-1, -1, c)).view(b, -1, 3, c)
    out = (vals * bary.view(b, -1, 3, 1)).sum(2).view(b, r, r, c)
    return out * (pix_to_face >= 0)[..., None].to(out.dtype)


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """(B, N, 3), (F, 3) -> (B, N, 3) unit normals, area-weighted over the adjacent faces."""
    v0, v1, v2 = verts[:, faces[:, 0]], verts[:, faces[:, 1]], verts[:, faces[:, 2]]
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
    image: Tensor  # (B, R, R, 3) RGB, zeros where empty
    mask: Tensor  # (B, R, R) bool, pixels covered by the face
    pix_to_face: Tensor  # (B, R, R) long


def render_window(model: MorphableModel, id: Tensor, exp: Tensor, euler: Tensor, trans: Tensor,
                  focal: float | Tensor, image_size: int, window: Window, tex: Tensor | None = None,
                  light: Tensor | None = None, pix_to_face: Tensor | None = None) -> Rendered:
    """Render the model inside each frame's window (differentiable in everything but visibility).

    id (K_id,) or (B, K_id), exp (B, K_exp), euler / trans (B, 3), tex (K_tex,) or (B, K_tex),
    light (B, 9, 3). Pass `pix_to_face` to reuse the visibility of an earlier call.
    """
    verts, cam, px = project_vertices(model, id, exp, euler, trans, focal, image_size)
    b = verts.shape[0]
    uvz = torch.cat([window.to_window(px), cam[..., 2:]], -1)
    if pix_to_face is None:
        pix_to_face = rasterize(uvz, model.faces, window.size)
    bary = barycentric(uvz, model.faces, pix_to_face)
    albedo = model.colors(tex).expand(b, -1, -1)
    if light is None:
        light = default_light(b, verts.dtype, verts.device)
    normals = rotate_normals(vertex_normals(verts, model.faces), euler)
    color = shade(albedo, normals, light)
    return Rendered(interpolate(color, model.faces, pix_to_face, bary), pix_to_face >= 0, pix_to_face)


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
