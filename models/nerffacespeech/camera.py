"""Cameras of the 3D-aware generator, in EG3D's conventions.

- **World frame** (the generator's): y up, the face looking towards +z, the head round the
  origin; EG3D's FFHQ cameras sit `EG3D_RADIUS` = 2.7 units from the look-at pivot (0, 0, 0.2).
  It has the axes of the head frame of `models.face3d.camera` (x to the subject's left).
- **Camera frame**: OpenCV axes (x right, y down, z forward). `c2w` (4, 4) maps camera to world.
- **Intrinsics**, normalised by the image side: K = [[f, 0, 0.5], [0, f, 0.5], [0, 0, 1]]. The
  pixel in row i, column j of an R x R image has its centre at ((j + 0.5) / R, (i + 0.5) / R).
  EG3D measures its field of view along the image diagonal: f = 1 / (sqrt(2) tan(fov / 2)), so
  the FFHQ models' 18.837 degrees give f = 4.2647 (`EG3D_FOCAL`).
- **Conditioning labels**: c = (c2w flattened row-major (16), K flattened (9)) -> (25,), the
  label EG3D's mapping network and pose conditioning take.

The constants the configs default to (radius, pivot, focal) live in the torch-free
`models.nerffacespeech.config`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from models.nerffacespeech.config import EG3D_FOCAL, EG3D_PIVOT, EG3D_RADIUS
from talkflow.errors import InputError

EG3D_FOV_DEG = 18.837
# EG3D's world: its FFHQ poses come from Deep3DFaceRecon's fits, whose BFM (front face) is centred
# on its own vertex mean, and that face centre is the world origin; the cameras look at the pivot,
# 0.2 in front of it. FACE_CENTRE_MM is the same centre in the head frame of models.face3d (the
# mean vertex of the generic face mesh, mm): the portrait's fitted face is placed with it at the origin.
FACE_CENTRE_MM = (0.0, 3.88, 87.12)
LABEL_DIM = 25


def fov_to_focal(fov_deg: float) -> float:
    """EG3D's diagonal field of view (degrees) -> normalised focal length."""
    if not 0.0 < fov_deg < 180.0:
        raise InputError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
    return 1.0 / (math.sqrt(2.0) * math.tan(math.radians(fov_deg) / 2.0))


def focal_to_fov(focal: float) -> float:
    """Normalised focal length -> EG3D's diagonal field of view in degrees."""
    return math.degrees(2.0 * math.atan(1.0 / (math.sqrt(2.0) * focal)))


@dataclass
class Camera:
    """A batch of pinhole cameras: c2w (B, 4, 4) OpenCV-axes camera-to-world, focal (B,) normalised."""

    c2w: Tensor
    focal: Tensor

    def __post_init__(self) -> None:
        c2w = torch.as_tensor(self.c2w, dtype=torch.float32)
        if c2w.shape == (4, 4):
            c2w = c2w[None]
        if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
            raise InputError(f"camera c2w must be (B, 4, 4), got {tuple(c2w.shape)}")
        focal = torch.as_tensor(self.focal, dtype=c2w.dtype, device=c2w.device).reshape(-1)
        if focal.numel() == 1:
            focal = focal.expand(c2w.shape[0]).clone()
        if focal.shape != (c2w.shape[0],) or not bool((focal > 0).all()):
            raise InputError(f"camera focal must be positive, one per camera, got {tuple(focal.shape)}")
        self.c2w, self.focal = c2w, focal

    @property
    def batch(self) -> int:
        return self.c2w.shape[0]

    @property
    def origin(self) -> Tensor:  # (B, 3)
        return self.c2w[:, :3, 3]

    def intrinsics(self) -> Tensor:
        """(B, 3, 3) normalised intrinsics."""
        k = torch.zeros(self.batch, 3, 3, dtype=self.c2w.dtype, device=self.c2w.device)
        k[:, 0, 0] = k[:, 1, 1] = self.focal
        k[:, 0, 2] = k[:, 1, 2] = 0.5
        k[:, 2, 2] = 1.0
        return k

    def labels(self) -> Tensor:
        """(B, 25) EG3D conditioning labels."""
        return torch.cat([self.c2w.reshape(self.batch, 16), self.intrinsics().reshape(self.batch, 9)], dim=1)

    @staticmethod
    def from_labels(c: Tensor) -> Camera:
        """(B, 25) or (25,) labels -> cameras (square pixels and a centred principal point assumed)."""
        c = torch.as_tensor(c, dtype=torch.float32)
        c = c[None] if c.ndim == 1 else c
        if c.ndim != 2 or c.shape[1] != LABEL_DIM:
            raise InputError(f"camera labels must be (B, 25), got {tuple(c.shape)}")
        return Camera(c[:, :16].reshape(-1, 4, 4), c[:, 16])

    def to(self, device=None, dtype=None) -> Camera:
        return Camera(self.c2w.to(device=device, dtype=dtype), self.focal.to(device=device, dtype=dtype))

    def expand(self, n: int) -> Camera:
        """n copies of a single camera (or the batch itself when it already has n)."""
        if self.batch == n:
            return self
        if self.batch != 1:
            raise InputError(f"cannot expand {self.batch} cameras to {n}")
        return Camera(self.c2w.expand(n, 4, 4), self.focal.expand(n))


def look_at_matrix(position: Tensor, target: Tensor) -> Tensor:
    """(B, 3) camera positions looking at (B, 3) targets, world y up, no roll -> (B, 4, 4) c2w.

    Columns of the rotation: right = forward x up_world, down = forward x right, forward.
    """
    forward = torch.nn.functional.normalize(target - position, dim=-1)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=position.dtype, device=position.device).expand_as(forward)
    right = torch.nn.functional.normalize(torch.cross(forward, up, dim=-1), dim=-1)
    down = torch.nn.functional.normalize(torch.cross(forward, right, dim=-1), dim=-1)
    c2w = torch.zeros(position.shape[0], 4, 4, dtype=position.dtype, device=position.device)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, down, forward, position
    c2w[:, 3, 3] = 1.0
    return c2w


def look_at(yaw: float | Tensor = 0.0, pitch: float | Tensor = 0.0, radius: float = EG3D_RADIUS,
            pivot: tuple[float, float, float] = EG3D_PIVOT, focal: float = EG3D_FOCAL) -> Camera:
    """Cameras on a sphere round `pivot`, looking at it (B = number of yaw values).

    yaw, pitch in radians: (0, 0) is the frontal camera on +z; yaw > 0 moves the camera towards
    world +x (the subject's left), pitch > 0 moves it up.
    """
    yaw_t = torch.as_tensor(yaw, dtype=torch.float32).reshape(-1)
    pitch_t = torch.as_tensor(pitch, dtype=torch.float32).reshape(-1).expand_as(yaw_t)
    if radius <= 0:
        raise InputError(f"camera radius must be positive, got {radius}")
    piv = torch.tensor(pivot, dtype=torch.float32).expand(yaw_t.shape[0], 3)
    direction = torch.stack([torch.cos(pitch_t) * torch.sin(yaw_t), torch.sin(pitch_t),
                             torch.cos(pitch_t) * torch.cos(yaw_t)], dim=-1)
    return Camera(look_at_matrix(piv + radius * direction, piv), torch.full((yaw_t.shape[0],), float(focal)))


def pixel_directions(focal: Tensor, resolution: int) -> Tensor:
    """(B,) normalised focal -> (B, R*R, 3) camera-frame ray directions (z = 1), rows then columns."""
    centres = (torch.arange(resolution, dtype=focal.dtype, device=focal.device) + 0.5) / resolution - 0.5
    v, u = torch.meshgrid(centres, centres, indexing="ij")  # (R, R): v along rows, u along columns
    uv = torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)  # (R*R, 2)
    xy = uv[None] / focal[:, None, None]  # (B, R*R, 2)
    return torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1)


def camera_rays(camera: Camera, resolution: int) -> tuple[Tensor, Tensor]:
    """-> origins (B, R*R, 3), unit directions (B, R*R, 3) in the world frame, ray r = i * R + j."""
    d_cam = pixel_directions(camera.focal, resolution)  # (B, N, 3)
    d = torch.nn.functional.normalize(d_cam @ camera.c2w[:, :3, :3].transpose(1, 2), dim=-1)
    return camera.origin[:, None].expand_as(d), d


def project_points(camera: Camera, points: Tensor) -> Tensor:
    """(B, N, 3) world points -> (B, N, 3): normalised image (u, v) in [0, 1] across the image, depth z."""
    rot, t = camera.c2w[:, :3, :3], camera.c2w[:, :3, 3]
    cam = (points - t[:, None]) @ rot  # R^T (p - t), row vectors
    z = cam[..., 2:3].clamp_min(1e-6)
    uv = cam[..., :2] / z * camera.focal[:, None, None] + 0.5
    return torch.cat([uv, cam[..., 2:3]], dim=-1)
