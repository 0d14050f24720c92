"""3DMM fit of the single portrait (NeRFFaceSpeech's `fitted_coeffs`) with `models.face3d`.

1. `load_portrait`: a path, bytes or an (S, S, 3) uint8 array -> RGB uint8, validated before any
   work: unreadable / corrupt files and images below `min_size` px raise InputError; the portrait
   must be square (the generator's training crops are; `crop_portrait` cuts one round the face).
2. dlib's 68 landmarks (`models.face.landmarks`); no face -> FaceNotFound.
3. `fit_landmarks` on the one frame (T = 1): identity, expression, pose. The focal length is, by
   default, the generator camera's (EG3D: 4.2647 x S px), so the fitted camera frame is the
   generator's camera frame up to a scale and the 3DMM can be placed in the generator's world
   (`portrait_camera`, `deform.FaceRig`). `focal="search"` runs face3d's focal search instead.
4. Optionally `refine_photometric` (models.face3d's rasterizer): albedo (texture coefficients) and 9
   SH lighting coefficients per colour, with pose and expression refined on the pixels.

`fitted_coeffs`: id (K_id,), exp (K_exp,), euler (3,) rad, trans (3,) mm (OpenCV camera frame),
focal () px, image_size (), and after the photometric stage light (9, 3) and tex (K_tex,).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from models.face3d.camera import euler_to_matrix, head_to_camera, principal_point, project
from models.face3d.morphable import MorphableModel
from models.nerffacespeech.camera import EG3D_FOCAL, EG3D_PIVOT, EG3D_RADIUS, FACE_CENTRE_MM, Camera
from models.nerffacespeech.config import FaceFitConfig
from talkflow.contract import MIN_PORTRAIT_PX
from talkflow.errors import FaceNotFound, InputError

_FLIP = (1.0, -1.0, -1.0)


@dataclass
class FaceFit:
    coeffs: dict[str, Tensor]  # fitted_coeffs, see the module doc
    reprojection_error_px: float  # mean distance of the 68 projected model landmarks to dlib's
    landmarks: np.ndarray  # (68, 2) dlib landmarks, px
    image_size: int
    model_name: str
    seconds: dict[str, float] = field(default_factory=dict)


def _check_array(image: np.ndarray, min_size: int) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"expected an HxWx3 uint8 RGB image, got shape {arr.shape} dtype {arr.dtype}")
    h, w = arr.shape[:2]
    if min(h, w) < min_size:
        raise InputError(f"the portrait is {w}x{h} px; give at least {min_size}x{min_size} px with the face "
                         "filling a good part of it")
    return arr


def load_portrait(source, min_size: int = MIN_PORTRAIT_PX, square: bool = True) -> np.ndarray:
    """A path, raw bytes or an HxWx3 uint8 array -> (H, W, 3) uint8 RGB, validated.

    Raises InputError for a missing or unreadable file, a corrupt image, one smaller than
    `min_size`, or (with `square`) a non-square one.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, np.ndarray):
        arr = _check_array(source, min_size)
    else:
        name = "the image bytes" if isinstance(source, (bytes, bytearray)) else str(source)
        if not isinstance(source, (bytes, bytearray)):
            path = Path(source)
            if not path.is_file():
                raise InputError(f"portrait file {path} not found")
            data = path.read_bytes()
        else:
            data = bytes(source)
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()  # decode now: truncated or corrupt files fail here
                arr = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise InputError(f"cannot read {name} as an image ({type(exc).__name__}: {exc}); give a PNG or JPEG "
                             "portrait") from exc
        arr = _check_array(arr, min_size)
    if square and arr.shape[0] != arr.shape[1]:
        raise InputError(f"the portrait is {arr.shape[1]}x{arr.shape[0]} px; it must be square with the face "
                         "centred (crop it with `crop_portrait`)")
    return np.ascontiguousarray(arr)


def crop_portrait(image: np.ndarray, size: int | None = None, face_fraction: float = 0.4) -> np.ndarray:
    """Square crop round the largest face (its box ~`face_fraction` of the side), resized to `size`."""
    from PIL import Image

    from models.face.landmarks import detect_faces

    arr = _check_array(image, 16)
    boxes = detect_faces(arr)
    if not boxes:
        raise FaceNotFound("no face found in the image; use a photo with a frontal, well-lit face")
    b = boxes[0]
    side = min(int(round(max(b.width, b.height) / face_fraction)), *arr.shape[:2])
    cx, cy = (b.left + b.right) / 2, (b.top + b.bottom) / 2
    left = int(np.clip(round(cx - side / 2), 0, arr.shape[1] - side))
    top = int(np.clip(round(cy - side / 2), 0, arr.shape[0] - side))
    crop = Image.fromarray(arr[top:top + side, left:left + side])
    size = size or side
    return np.asarray(crop.resize((size, size), Image.LANCZOS), dtype=np.uint8)


def reprojection_error(model: MorphableModel, coeffs: dict[str, Tensor], landmarks: np.ndarray) -> float:
    """Mean px distance between the projected model landmarks and `landmarks` (68, 2)."""
    s = int(coeffs["image_size"])
    cx, cy = principal_point(s)
    pts = model.landmarks(coeffs["id"], coeffs["exp"][None])
    px = project(head_to_camera(pts, coeffs["euler"][None], coeffs["trans"][None]), float(coeffs["focal"]), cx, cy)
    return float((px[0] - torch.as_tensor(landmarks, dtype=px.dtype)).norm(dim=-1).mean())


def fit_portrait(image, model: MorphableModel | None = None, config: FaceFitConfig = FaceFitConfig()) -> FaceFit:
    """Fit the 3DMM to a square portrait (path, bytes or (S, S, 3) uint8). See the module doc."""
    from models.face.landmarks import largest_face_landmarks
    from models.face3d.fit import fit_landmarks
    from models.face3d.morphable import default_model
    from models.face3d.photometric import PhotoConfig, refine_photometric

    img = load_portrait(image, config.min_size)
    s = img.shape[0]
    times = {}
    t0 = time.perf_counter()
    lms = largest_face_landmarks(img, upsample=config.detect_upsample)  # FaceNotFound when none
    times["landmarks"] = time.perf_counter() - t0
    model = model if model is not None else default_model()
    focal = None if config.focal == "search" else (config.generator_focal * s if config.focal == "generator"
                                                    else float(config.focal))
    lms_t = torch.from_numpy(lms)[None]  # (1, 68, 2)
    t0 = time.perf_counter()
    track = fit_landmarks(lms_t, s, model, focal=focal)
    times["landmark_fit"] = time.perf_counter() - t0
    if config.photometric:
        t0 = time.perf_counter()
        photo = PhotoConfig(iters=config.photo_iters, tex_iters=config.photo_tex_iters,
                            render_size=config.photo_render_size)
        track = refine_photometric(img[None], lms_t, model, track, photo)
        times["photometric"] = time.perf_counter() - t0
    coeffs = {
        "id": track.id.detach().clone(), "exp": track.exp[0].detach().clone(),
        "euler": track.euler[0].detach().clone(), "trans": track.trans[0].detach().clone(),
        "focal": torch.tensor(float(track.focal)), "image_size": torch.tensor(s),
    }
    if track.light is not None:
        coeffs["light"] = track.light[0].detach().clone()
    if track.tex is not None:
        coeffs["tex"] = track.tex.detach().clone()
    err = reprojection_error(model, coeffs, lms)
    return FaceFit(coeffs, err, lms, s, model.name, times)


def portrait_camera(coeffs: dict[str, Tensor], focal: float = EG3D_FOCAL, radius: float = EG3D_RADIUS,
                    pivot: tuple[float, float, float] = EG3D_PIVOT,
                    face_centre: tuple[float, float, float] = FACE_CENTRE_MM) -> Camera:
    """The generator camera that sees the generator's world as the portrait's camera saw the head.

    World = s * (head frame (mm) - face_centre): the fitted head sits upright with its face centre
    at the world origin, where EG3D's face is (see `camera.FACE_CENTRE_MM`), facing +z, and the
    camera moves instead (rotation R^T FLIP with R the head rotation, position -s (face_centre +
    R^T FLIP trans)); s puts the camera `radius` from the `pivot`, as EG3D's cameras are.
    Intrinsics: the generator's `focal`.
    """
    rot = euler_to_matrix(coeffs["euler"].float())  # (3, 3) head -> tracker camera, before FLIP
    flip = torch.tensor(_FLIP)
    rc = rot.T * flip[None, :]  # R^T @ FLIP (camera -> world)
    trans = coeffs["trans"].float()
    u = torch.tensor(face_centre) + rc @ trans  # face centre -> camera centre, head mm
    p = torch.tensor(pivot, dtype=u.dtype)
    uu, up = float(u @ u), float(u @ p)  # |s u + p| = radius, s > 0
    s = (-up + (up * up - uu * (float(p @ p) - radius * radius)) ** 0.5) / uu
    origin = -s * u
    c2w = torch.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rc, origin
    return Camera(c2w, torch.tensor([float(focal)]))
