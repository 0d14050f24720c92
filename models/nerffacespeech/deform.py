"""Expression-driven deformation of the generator's ray samples with the 3DMM (NeRFFaceSpeech's
ray deformation), plus a simple mouth-interior substitute.

The tri-planes after PTI hold the portrait's face: the *fitted* (neutral for this image) 3DMM
surface. To render expression e_t, a sample point x of the ray is moved back to where the same
material sits on the fitted face, and the field is read there:

    d(x) = sum_k w_k (V_fit[k] - V_t[k]),   w_k ~ 1 / |x - V_t[k]|^2 over the k nearest expressed
    vertices V_t (head frame, mm),  x' = x + fade(|x - V_t[nearest]|) d(x)

fade = exp(-r^2 / (2 falloff^2)) and 0 beyond `cutoff_mm`, so samples on and near the moving
surface follow it while samples far from it (background, hair, the static parts of the head) stay
put. Only vertices that move in some frame of the batch take part (at most `max_vertices`,
evenly strided), which also keeps the k-NN cheap; points are processed in chunks.

`FaceRig` places the head frame of the fit in the generator's world: a head point p (mm) is
x = A p + b with A = s Rc diag(1, 1, k) FLIP R and b = s Rc diag(1, 1, k) trans + o, where
(Rc, o) is the camera the portrait was inverted with, R / trans the fitted head pose, k the ratio
of that camera's focal to the fit's (1 with `face_fit`'s default) and s the world units per mm
that put the head at the camera's pivot depth. With `face_fit.portrait_camera` this is simply
x = pivot + s p.

Mouth interior (NeRFFaceSpeech fills it with a learned LipaintNet; the substitute here): samples
whose head-frame (x, y) lies inside the expressed inner-lip polygon (landmarks 60-67) but not
inside the fitted one, within `mouth_depth_mm` behind the lips, get their features scaled by
(1 - mouth_darken) and `mouth_density` added to their raw density: an opaque dark cavity where
the mouth opens wider than in the portrait. No teeth or tongue.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.face3d.camera import euler_to_matrix
from models.face3d.morphable import MorphableModel
from models.nerffacespeech.camera import FACE_CENTRE_MM, Camera
from models.nerffacespeech.config import DeformConfig
from models.nerffacespeech.volume import WarpResult
from talkflow.errors import InputError

_FLIP = (1.0, -1.0, -1.0)
INNER_LIPS = slice(60, 68)  # iBUG inner-lip landmarks, a closed loop


@dataclass
class FaceRig:
    """The fitted face in the generator's world (see the module doc)."""

    model: MorphableModel
    id: Tensor  # (K_id,)
    exp: Tensor  # (K_exp,) the portrait's own expression
    matrix: Tensor  # (3, 3) A: head mm -> world
    offset: Tensor  # (3,) b

    @staticmethod
    def from_fit(coeffs: dict[str, Tensor], model: MorphableModel, camera: Camera,
                 face_centre: tuple[float, float, float] = FACE_CENTRE_MM) -> FaceRig:
        """`coeffs` from `face_fit.fit_portrait`, `camera` the (single) camera PTI used: the fitted
        face's centre (`face_centre`, head mm) lands at the depth of the world origin, where EG3D's
        face is; with the camera of `face_fit.portrait_camera`, at the origin itself."""
        for key in ("id", "exp", "euler", "trans", "focal", "image_size"):
            if key not in coeffs:
                raise InputError(f"fitted_coeffs lack {key!r}; fit the portrait with face_fit.fit_portrait")
        if coeffs["id"].shape[-1] != model.n_id or coeffs["exp"].shape[-1] != model.n_exp:
            raise InputError(f"fitted_coeffs were fitted with another face model ({coeffs['id'].shape[-1]} identity / "
                             f"{coeffs['exp'].shape[-1]} expression modes; this one has {model.n_id} / {model.n_exp})")
        if camera.batch != 1:
            raise InputError("the rig needs the one camera the portrait was inverted with")
        cam = camera.to("cpu")
        rc, o = cam.c2w[0, :3, :3], cam.c2w[0, :3, 3]
        rot = euler_to_matrix(coeffs["euler"].float().reshape(3))
        trans = coeffs["trans"].float().reshape(3)
        flip = torch.tensor(_FLIP)
        k = float(cam.focal[0]) * float(coeffs["image_size"]) / float(coeffs["focal"])
        depth = torch.tensor([1.0, 1.0, k])
        centre = flip * (rot @ torch.tensor(face_centre, dtype=rot.dtype)) + trans  # tracker camera, mm
        origin_depth = float(cam.c2w[0, :3, 2] @ -o)
        if origin_depth <= 0 or float(centre[2]) <= 0:
            raise InputError("the camera looks away from the world origin, or the fitted face is behind the camera")
        s = origin_depth / (k * float(centre[2]))
        a = s * rc @ (depth[:, None] * (flip[:, None] * rot))
        b = s * rc @ (depth * trans) + o
        return FaceRig(model, coeffs["id"].float().reshape(-1), coeffs["exp"].float().reshape(-1), a, b)

    @property
    def units_per_mm(self) -> float:
        return float(torch.linalg.det(self.matrix).abs() ** (1 / 3))

    def to_world(self, p: Tensor) -> Tensor:  # (..., 3) head mm -> world
        return p @ self.matrix.T.to(p) + self.offset.to(p)

    def to_head(self, x: Tensor) -> Tensor:  # (..., 3) world -> head mm
        return (x - self.offset.to(x)) @ torch.linalg.inv(self.matrix).T.to(x)

    def surface_points(self) -> Tensor:
        """(M, 3) world points covering the fitted face: vertices, edge midpoints, triangle centroids."""
        v = self.model.vertices(self.id, self.exp[None])[0]  # (N, 3) mm
        tri = v[self.model.faces]  # (F, 3, 3)
        mids = (tri + tri.roll(1, dims=1)) / 2
        pts = torch.cat([v, mids.reshape(-1, 3), tri.mean(1)])
        return self.to_world(pts)

    def depth_map(self, camera: Camera, resolution: int) -> tuple[Tensor, Tensor]:
        """Ray depth of the fitted face surface as the generator renders depth (distance along the
        unit ray from the camera centre) -> depth (1, 1, r, r), mask (1, 1, r, r) bool.

        A z-buffer of dense surface points, small holes closed, the border pixel of the face dropped.
        """
        from models.nerffacespeech.camera import project_points

        cam = camera.to("cpu")
        pts = self.surface_points()  # (M, 3)
        uvz = project_points(cam, pts[None])[0]
        dist = (pts - cam.origin[0]).norm(dim=-1)
        ij = (uvz[:, :2] * resolution).floor().long()
        ok = (ij >= 0).all(1) & (ij < resolution).all(1) & (uvz[:, 2] > 0)
        flat = ij[ok, 1] * resolution + ij[ok, 0]
        depth = torch.full((resolution * resolution,), float("inf"))
        depth = depth.scatter_reduce(0, flat, dist[ok], reduce="amin")
        depth = depth.view(1, 1, resolution, resolution)
        hit = torch.isfinite(depth)
        # Close one-pixel holes (neighbour minimum), then drop the outline.
        near = -torch.nn.functional.max_pool2d(-torch.where(hit, depth, torch.full_like(depth, 1e9)), 3, 1, 1)
        closed = torch.nn.functional.max_pool2d(hit.float(), 3, 1, 1) > 0
        closed = -torch.nn.functional.max_pool2d(-closed.float(), 3, 1, 1) > 0  # erosion
        depth = torch.where(hit, depth, near)
        mask = closed & (depth < 1e8)
        mask = -torch.nn.functional.max_pool2d(-mask.float(), 3, 1, 1) > 0
        return torch.where(mask, depth, torch.zeros_like(depth)), mask


def _inside_polygon(pts: Tensor, poly: Tensor) -> Tensor:
    """pts (B, P, 2), poly (B, V, 2) closed -> (B, P) bool (even-odd rule)."""
    a = poly[:, None]  # (B, 1, V, 2)
    b = torch.roll(poly, -1, dims=1)[:, None]
    p = pts[:, :, None]  # (B, P, 1, 2)
    crosses = (a[..., 1] > p[..., 1]) != (b[..., 1] > p[..., 1])
    dy = b[..., 1] - a[..., 1]
    xi = a[..., 0] + (p[..., 1] - a[..., 1]) * (b[..., 0] - a[..., 0]) / torch.where(dy.abs() < 1e-9,
                                                                                     torch.full_like(dy, 1e-9), dy)
    return ((crosses & (p[..., 0] < xi)).sum(-1) % 2) == 1


class ExpressionWarp:
    """A volume.PointWarp for a batch of B frames with expressions exp (B, K_exp)."""

    def __init__(self, rig: FaceRig, exp: Tensor, config: DeformConfig = DeformConfig()):
        cfg = self.cfg = config
        m = rig.model
        self.rig = rig
        exp = exp.detach().float().cpu().reshape(-1, m.n_exp)  # the 3DMM lives on the CPU; samples may not
        self.batch = exp.shape[0]
        v_fit = m.vertices(rig.id, rig.exp[None])[0]  # (N, 3)
        v_t = m.vertices(rig.id, exp)  # (B, N, 3)
        disp = v_fit[None] - v_t  # (B, N, 3) expressed -> fitted
        moving = (disp.norm(dim=-1) > cfg.moving_mm).any(0).nonzero()[:, 0]
        if moving.numel() > cfg.max_vertices:
            moving = moving[torch.linspace(0, moving.numel() - 1, cfg.max_vertices).round().long()]
        self.verts = v_t[:, moving]  # (B, M, 3)
        self.disp = disp[:, moving]  # (B, M, 3)
        lm_t = m.landmarks(rig.id, exp)[:, INNER_LIPS]  # (B, 8, 3)
        lm_fit = m.landmarks(rig.id, rig.exp[None])[:, INNER_LIPS]  # (1, 8, 3)
        self.poly_t, self.poly_fit = lm_t[..., :2], lm_fit[..., :2].expand(self.batch, -1, -1)
        self.lip_z = lm_t[..., 2].mean(1)  # (B,)

    def displacement(self, p: Tensor) -> Tensor:
        """p (B, P, 3) head mm -> (B, P, 3) displacement, mm.

        Only samples inside the moving vertices' bounding box grown by `cutoff_mm` are looked up
        (the rest cannot move); squared distances as |q|^2 + |v|^2 - 2 q.v in chunks.
        """
        cfg = self.cfg
        out = torch.zeros_like(p)
        if self.verts.shape[1] == 0:
            return out
        verts, disp = self.verts.to(p), self.disp.to(p)
        k = min(cfg.k, verts.shape[1])
        lo = verts.amin(1, keepdim=True) - cfg.cutoff_mm  # (B, 1, 3)
        hi = verts.amax(1, keepdim=True) + cfg.cutoff_mm
        near_box = ((p >= lo) & (p <= hi)).all(-1)  # (B, P)
        for b in range(p.shape[0]):
            idx = near_box[b].nonzero()[:, 0]
            v, dv = verts[b], disp[b]  # (M, 3)
            v2 = v.square().sum(-1)  # (M,)
            for i in range(0, idx.numel(), cfg.chunk):
                sel = idx[i:i + cfg.chunk]
                q = p[b, sel]  # (c, 3)
                d2 = (q.square().sum(-1, keepdim=True) + v2 - 2.0 * q @ v.T).clamp_min(0.0)  # (c, M)
                near, nn_idx = torch.topk(d2, k, dim=-1, largest=False)  # (c, k)
                w = 1.0 / (near + 1e-2)
                w = w / w.sum(-1, keepdim=True)
                d = (w[..., None] * dv[nn_idx]).sum(1)  # (c, 3)
                r2 = near[:, :1]
                fade = torch.exp(-0.5 * r2 / cfg.falloff_mm**2) * (r2 < cfg.cutoff_mm**2)
                out[b, sel] = d * fade
        return out

    def mouth_mask(self, p: Tensor) -> Tensor:
        """p (B, P, 3) head mm -> (B, P) float: inside the newly opened mouth gap."""
        inside = _inside_polygon(p[..., :2], self.poly_t.to(p)) & ~_inside_polygon(p[..., :2], self.poly_fit.to(p))
        z = p[..., 2]
        lip_z = self.lip_z.to(p)[:, None]
        band = (z < lip_z + 2.0) & (z > lip_z - self.cfg.mouth_depth_mm)
        return (inside & band).to(p.dtype)

    def __call__(self, points: Tensor) -> WarpResult:
        """points (B, P, 3) world -> WarpResult (see volume.PointWarp)."""
        if points.shape[0] != self.batch:
            raise ValueError(f"warp built for {self.batch} frames got {points.shape[0]}")
        rig = self.rig
        p = rig.to_head(points)
        d = self.displacement(p)
        new = rig.to_world(p + d)
        moved = (new - points).norm(dim=-1, keepdim=True)
        mouth = self.mouth_mask(p)[..., None]
        cfg = self.cfg
        return WarpResult(new, density_offset=mouth * cfg.mouth_density,
                          feature_scale=1.0 - cfg.mouth_darken * mouth, moved=moved)
