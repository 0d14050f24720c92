"""Rotations, the pinhole camera of the tracker, and the NeRF camera-to-world matrices.

Conventions (every module of `models.face3d` follows them):

- **Head (model) frame**: millimetres, x towards the subject's left (the image right in a
  frontal view), y up, z out of the face. The head stays at the origin of this frame, which is
  also the NeRF world frame.
- **Euler angles** `(pitch, yaw, roll)` in radians, rotations about the head's x, y, z axes,
  composed as `R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`. Positive yaw turns the face towards the
  image right, positive pitch turns it down (the face looks at the floor), positive roll
  turns it counter-clockwise as seen from the camera.
- **Tracker camera frame**: OpenCV axes (x right, y down, z forward into the scene).
  `trans` is the head origin in this frame, so `trans[..., 2] > 0` is its depth in mm.
  A head point `p` lands at `p_cam = FLIP @ R(euler) @ p + trans` with `FLIP = diag(1, -1, -1)`:
  euler = 0 is an upright head looking straight into the camera.
- **Pixels**: `u = f * X / Z + cx`, `v = f * Y / Z + cy` (x right, y down). The pixel in row i,
  column j covers `[j, j+1) x [i, i+1)`, its centre is `(j + 0.5, i + 0.5)`, and the principal
  point of a square image of side S is its centre `(S/2, S/2)`.
- **NeRF poses**: camera-to-world 4x4 in OpenGL camera axes (x right, y up, z towards the
  viewer), world = head frame. With `W = FLIP` between the two camera conventions,
  `c2w = [[R^T, -R^T @ FLIP @ trans], [0, 1]]`: the camera sits at distance `|trans|`
  from the head origin.
"""

from __future__ import annotations

import torch
from torch import Tensor

# diag(1, -1, -1): flips y and z between the head/OpenGL axes and the OpenCV camera axes.
FLIP = (1.0, -1.0, -1.0)

# ER-NeRF's reference tracker works with the BFM divided by 1e5 (micrometres -> decimetres):
# a head ~7 units from the camera. Multiplying millimetres by this gives the same units.
ERNERF_UNITS_PER_MM = 0.01


def _flip(like: Tensor) -> Tensor:
    return torch.tensor(FLIP, dtype=like.dtype, device=like.device)


def euler_to_matrix(euler: Tensor) -> Tensor:
    """(..., 3) (pitch, yaw, roll) radians -> (..., 3, 3) `Rz(roll) @ Ry(yaw) @ Rx(pitch)`."""
    cx, cy, cz = torch.cos(euler).unbind(-1)
    sx, sy, sz = torch.sin(euler).unbind(-1)
    # Product written out (rows of R), differentiable and batched.
    r00 = cz * cy
    r01 = cz * sy * sx - sz * cx
    r02 = cz * sy * cx + sz * sx
    r10 = sz * cy
    r11 = sz * sy * sx + cz * cx
    r12 = sz * sy * cx - cz * sx
    r20 = -sy
    r21 = cy * sx
    r22 = cy * cx
    rows = [torch.stack(r, -1) for r in ((r00, r01, r02), (r10, r11, r12), (r20, r21, r22))]
    return torch.stack(rows, -2)


def euler_to_matrix_grad(euler: Tensor) -> tuple[Tensor, Tensor]:
    """(..., 3) -> R (..., 3, 3) and dR (..., 3, 3, 3) with dR[..., i, :, :] = dR / d euler_i."""
    c, s = torch.cos(euler), torch.sin(euler)
    zero, one = torch.zeros_like(c[..., 0]), torch.ones_like(c[..., 0])

    def mat(*rows: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    ca, cb, cc = c.unbind(-1)
    sa, sb, sc = s.unbind(-1)
    rx = mat((one, zero, zero), (zero, ca, -sa), (zero, sa, ca))
    ry = mat((cb, zero, sb), (zero, one, zero), (-sb, zero, cb))
    rz = mat((cc, -sc, zero), (sc, cc, zero), (zero, zero, one))
    drx = mat((zero, zero, zero), (zero, -sa, -ca), (zero, ca, -sa))
    dry = mat((-sb, zero, cb), (zero, zero, zero), (-cb, zero, -sb))
    drz = mat((-sc, -cc, zero), (cc, -sc, zero), (zero, zero, zero))
    rzy = rz @ ry
    grad = torch.stack([rzy @ drx, rz @ dry @ rx, drz @ ry @ rx], -3)
    return rzy @ rx, grad


def matrix_to_euler(rot: Tensor) -> Tensor:
    """(..., 3, 3) rotation -> (..., 3) (pitch, yaw, roll); yaw in [-pi/2, pi/2]."""
    r20 = rot[..., 2, 0].clamp(-1.0, 1.0)
    yaw = -torch.asin(r20)
    pitch = torch.atan2(rot[..., 2, 1], rot[..., 2, 2])
    roll = torch.atan2(rot[..., 1, 0], rot[..., 0, 0])
    return torch.stack([pitch, yaw, roll], -1)


def geodesic_deg(rot_a: Tensor, rot_b: Tensor) -> Tensor:
    """(..., 3, 3) x 2 -> (...,) angle of `rot_a^T rot_b` in degrees."""
    rel = rot_a.transpose(-1, -2) @ rot_b
    cos = (rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    axis = torch.stack([rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0],
                        rel[..., 1, 0] - rel[..., 0, 1]], -1)
    return torch.rad2deg(torch.atan2(axis.norm(dim=-1) / 2.0, cos))  # precise near 0, unlike acos


def head_to_camera(points: Tensor, euler: Tensor, trans: Tensor) -> Tensor:
    """(B, N, 3) head-frame points, (B, 3) euler, (B, 3) trans -> (B, N, 3) OpenCV camera frame."""
    rot = euler_to_matrix(euler)  # (B, 3, 3)
    return (points @ rot.transpose(-1, -2)) * _flip(points) + trans[..., None, :]


def rotate_normals(normals: Tensor, euler: Tensor) -> Tensor:
    """(B, N, 3) head-frame directions -> (B, N, 3) directions in the OpenCV camera frame."""
    return (normals @ euler_to_matrix(euler).transpose(-1, -2)) * _flip(normals)


def principal_point(size: int) -> tuple[float, float]:
    """(cx, cy) of a square image of side `size`: its centre."""
    return size / 2.0, size / 2.0


def project(points_cam: Tensor, focal: Tensor | float, cx: float, cy: float) -> Tensor:
    """(B, N, 3) camera-frame points -> (B, N, 2) pixels. `focal` is a float or (B,) px."""
    if isinstance(focal, Tensor) and focal.ndim > 0:
        focal = focal[..., None, None]
    z = points_cam[..., 2:3].clamp_min(1e-6)
    centre = points_cam.new_tensor([cx, cy])
    return focal * points_cam[..., :2] / z + centre


def to_nerf_transforms(euler: Tensor, trans: Tensor, scale: float = ERNERF_UNITS_PER_MM) -> Tensor:
    """(T, 3) euler, (T, 3) trans (mm) -> (T, 4, 4) camera-to-world, OpenGL camera axes.

    The head stays at the world origin and the camera moves (the inverse of the head pose);
    positions are multiplied by `scale` (default: mm -> ER-NeRF's units, 1 unit = 100 mm).
    """
    rot_t = euler_to_matrix(euler).transpose(-1, -2)  # (T, 3, 3) = R^T
    centre = -(rot_t @ (trans * _flip(trans))[..., None])[..., 0] * scale  # (T, 3)
    c2w = torch.zeros(euler.shape[:-1] + (4, 4), dtype=euler.dtype, device=euler.device)
    c2w[..., :3, :3] = rot_t
    c2w[..., :3, 3] = centre
    c2w[..., 3, 3] = 1.0
    return c2w
