"""The per-character warp rig: the portrait's pixels bound to its fitted 3DMM.

`build_rig` projects the fitted (neutral) mesh into the portrait, bends the projection so its 68
landmark vertices land exactly on dlib's landmarks (a thin-plate spline of the residuals: the
lips' line of the mesh is the photo's), and rasterizes it: each face pixel keeps its triangle and
barycentric weights. Outside the mesh a ring of width `falloff` x the face width takes the
displacement of its nearest face pixel, weighted down to zero: hair and background never move.
It also measures the mouth interior's colours on the photo (lips -> cavity and tongue, skin
brightness -> teeth). Everything is plain tensors and numbers (`state_dict`, weights_only load).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from models.checkpoint_io import save_atomic
from models.face.mouth import INNER_UPPER, MouthColours, profile, smoothstep, teeth_strength
from models.face3d.camera import head_to_camera, principal_point, project
from models.face3d.morphable import MorphableModel
from models.face3d.raster import rasterize
from models.portrait_warp.config import WarpRigConfig
from talkflow.errors import InputError

RIG_FORMAT = "talkflow.portrait_warp.rig"
RIG_VERSION = 1
_REFERENCE_SKIN = 165.0  # luminance of well-lit skin, for which MouthColours.teeth is right


@dataclass
class WarpRig:
    image: Tensor  # (S, S, 3) uint8, the portrait at the output size
    landmarks: Tensor  # (68, 2) dlib landmarks at the output size, px
    coeffs: dict[str, Tensor]  # the fit: id, exp, euler, trans, focal, image_size (fit px)
    scale: Tensor  # () output px per fit px
    pix: Tensor  # (M,) long, flat index of every pixel the warp may move
    tri: Tensor  # (M, 3) long, the mesh vertices each one follows
    bary: Tensor  # (M, 3) their weights
    weight: Tensor  # (M,) 1 on the face, falling to 0 across the ring
    cavity: Tensor  # (3,) RGB 0-255, mouth-interior colours
    tongue: Tensor
    teeth: Tensor
    teeth_strength: Tensor  # () 0..1; 0 when the photo's lips are apart already
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    @property
    def colours(self) -> MouthColours:
        return MouthColours(*(tuple(float(v) for v in c) for c in (self.cavity, self.tongue, self.teeth)))

    def face_mask(self) -> np.ndarray:
        """(S, S) float32 weight of the warp: 1 on the face, 0 where nothing ever moves."""
        m = torch.zeros(self.size * self.size)
        m[self.pix] = self.weight
        return m.view(self.size, self.size).numpy()

    def box(self) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1): the smallest box holding every pixel the warp may move."""
        if "box" not in self._cache:
            s = self.size
            r, c = self.pix // s, self.pix % s
            self._cache["box"] = ((0, 0, 0, 0) if self.pix.numel() == 0 else
                                  (int(r.min()), int(c.min()), int(r.max()) + 1, int(c.max()) + 1))
        return self._cache["box"]

    def box_index(self) -> Tensor:
        """(M,) long: each moving pixel's index in the flattened box."""
        if "box_index" not in self._cache:
            s = self.size
            y0, x0, _, x1 = self.box()
            self._cache["box_index"] = (self.pix // s - y0) * (x1 - x0) + (self.pix % s - x0)
        return self._cache["box_index"]

    def project(self, model: MorphableModel, exp: Tensor) -> tuple[Tensor, Tensor]:
        """exp (B, K_exp) -> projected vertices (B, N, 2) and landmarks (B, 68, 2), output px."""
        return project_mesh(model, self.coeffs, exp, float(self.scale))

    def state_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_cache"}
        out.update(format=RIG_FORMAT, version=RIG_VERSION)
        return out

    def save(self, path: str | Path) -> Path:
        return save_atomic(self.state_dict(), path)


def project_mesh(model: MorphableModel, coeffs: dict[str, Tensor], exp: Tensor,
                 scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """The fitted head with expressions exp (B, K_exp) -> vertices (B, N, 2), landmarks (B, 68, 2),
    in px of the fitted image times `scale`."""
    b = exp.shape[0]
    verts = model.vertices(coeffs["id"], exp)  # (B, N, 3)
    both = torch.cat([verts, verts[:, model.lmk_idx]], 1)
    cam = head_to_camera(both, coeffs["euler"].expand(b, 3), coeffs["trans"].expand(b, 3))
    cx, cy = principal_point(int(coeffs["image_size"]))
    px = project(cam, float(coeffs["focal"]), cx, cy) * scale
    return px[:, :verts.shape[1]], px[:, verts.shape[1]:]


def load_rig(path: str | Path) -> WarpRig:
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != RIG_FORMAT or data.get("version") != RIG_VERSION:
        raise InputError(f"{path} is not a talkflow warp rig (format {RIG_FORMAT} v{RIG_VERSION})")
    return WarpRig(**{f.name: data[f.name] for f in fields(WarpRig) if f.name != "_cache"})


def _polygon_pixels(image: np.ndarray, poly: np.ndarray) -> np.ndarray:
    from skimage.draw import polygon

    rr, cc = polygon(poly[:, 1] - 0.5, poly[:, 0] - 0.5, image.shape[:2])
    return image[rr, cc].reshape(-1, 3).astype(np.float32)


def mouth_colours(image: np.ndarray, lm: np.ndarray) -> MouthColours:
    """Interior colours matched to the photo: the cavity and tongue are darkened lip colour,
    the teeth the default shade scaled to the skin's brightness."""
    lips = _polygon_pixels(image, lm[48:60])
    skin = _polygon_pixels(image, lm[[27, 31, 33, 35]])  # the nose: skin in nearly every portrait
    lip = np.median(lips, 0) if len(lips) else np.array(MouthColours().tongue, np.float32) * 1.4
    lum = float(np.median(skin @ np.array([0.299, 0.587, 0.114]))) if len(skin) else _REFERENCE_SKIN
    default = MouthColours()
    cavity = 0.5 * np.asarray(default.cavity) + 0.5 * 0.2 * lip
    tongue = 0.5 * np.asarray(default.tongue) + 0.5 * 0.75 * lip
    teeth = np.asarray(default.teeth) * float(np.clip(lum / _REFERENCE_SKIN, 0.55, 1.05))
    return MouthColours(*(tuple(float(v) for v in np.clip(c, 0, 255)) for c in (cavity, tongue, teeth)))


def _align(uv: Tensor, model_lmk: Tensor, target: np.ndarray) -> Tensor:
    """Thin-plate spline bending the projected vertices (N, 2) so the landmarks land on target."""
    from scipy.interpolate import RBFInterpolator

    src = model_lmk.double().numpy()
    tps = RBFInterpolator(src, target.astype(np.float64) - src, kernel="thin_plate_spline", smoothing=1e-3)
    return uv + torch.from_numpy(tps(uv.double().numpy())).to(uv.dtype)


def _attach_interior_to_upper_lip(follow: np.ndarray, lm: np.ndarray) -> None:
    """Pixels between the photo's inner lips (its teeth, when the lips are apart) follow the upper
    lip, like the upper teeth follow the skull: the jaw's tear then runs along the lower inner lip."""
    from skimage.draw import polygon

    s = follow.shape[0]
    rr, cc = polygon(lm[60:68, 1] - 0.5, lm[60:68, 0] - 0.5, follow.shape)
    if len(rr) == 0:
        return
    up = profile(lm[INNER_UPPER])
    above = np.clip(np.floor(np.interp(cc + 0.5, *up) - 1.5), 0, s - 1).astype(np.int64)  # row above the lip
    follow[rr, cc] = follow[above, cc]


@torch.no_grad()
def build_rig(image: np.ndarray, landmarks: np.ndarray, coeffs: dict[str, Tensor], model: MorphableModel,
              config: WarpRigConfig = WarpRigConfig()) -> WarpRig:
    """image (S0, S0, 3) uint8 (the fitted portrait), its dlib landmarks (68, 2) and fit -> the rig."""
    from PIL import Image
    from scipy.ndimage import distance_transform_edt

    img = np.asarray(image)
    s0 = int(coeffs["image_size"])
    if img.dtype != np.uint8 or img.shape != (s0, s0, 3):
        raise InputError(f"the portrait must be a ({s0}, {s0}, 3) uint8 image (the fit's), got {img.shape} {img.dtype}")
    lm0 = np.asarray(landmarks, np.float64)
    if lm0.shape != (68, 2) or not np.isfinite(lm0).all():
        raise InputError(f"expected 68 finite landmarks, got shape {lm0.shape}")
    s = max(s0, config.min_size)
    scale = s / s0
    if s != s0:
        img = np.asarray(Image.fromarray(img).resize((s, s), Image.LANCZOS), dtype=np.uint8)
    lm = lm0 * scale
    coeffs = {k: v.detach().float().clone() if v.is_floating_point() else v.detach().clone()
              for k, v in coeffs.items() if k in ("id", "exp", "euler", "trans", "focal", "image_size")}
    uv, lmk = project_mesh(model, coeffs, coeffs["exp"].reshape(1, -1), scale)
    uv, lmk = uv[0], lmk[0]
    if config.align_landmarks:
        uv = _align(uv, lmk, lm)
    verts = model.vertices(coeffs["id"], coeffs["exp"].reshape(1, -1))
    depth = head_to_camera(verts, coeffs["euler"][None], coeffs["trans"][None])[0, :, 2]
    face, bary = rasterize(torch.cat([uv, depth[:, None]], -1).double(), model.faces, s, s)
    bary = bary.float()
    on_face = (face >= 0).numpy()
    if on_face.sum() < 16:
        raise InputError("the fitted face covers almost no pixel of the portrait; check the fit")
    dist, (iy, ix) = distance_transform_edt(~on_face, return_indices=True)
    width = float(np.hypot(*(lm[16] - lm[0])))
    weight = 1.0 - smoothstep(dist / max(config.falloff * width, 1.0))
    follow = iy * s + ix  # (S, S) the face pixel whose displacement each pixel takes
    _attach_interior_to_upper_lip(follow, lm)
    moving = weight > 0
    nearest = torch.from_numpy(follow[moving])  # (M,)
    colours = mouth_colours(img, lm)
    return WarpRig(
        image=torch.tensor(img), landmarks=torch.from_numpy(lm).float(), coeffs=coeffs, scale=torch.tensor(scale),
        pix=torch.from_numpy(np.flatnonzero(moving)), tri=model.faces[face.view(-1)[nearest]],
        bary=bary.view(-1, 3)[nearest], weight=torch.from_numpy(weight[moving]).float(),
        cavity=torch.tensor(colours.cavity), tongue=torch.tensor(colours.tongue), teeth=torch.tensor(colours.teeth),
        teeth_strength=torch.tensor(teeth_strength(lm)))
