"""Running MediaPipe's shipped .tflite networks: the interpreter and rotated square crops.

Pure numpy/scipy + ai-edge-litert; every network takes its .tflite path as an argument.
Image coordinates are (x, y) pixels with the centre of pixel (0, 0) at (0, 0), as dlib's.
"""

from __future__ import annotations

import math
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import map_coordinates


def load_interpreter(model_path: str | Path, num_threads: int = 2):
    """A ready ai-edge-litert interpreter for ``model_path``; a missing file names itself."""
    from ai_edge_litert.interpreter import Interpreter

    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"network file {path} does not exist")
    with _quiet_native_stderr():  # TFLite's C++ logger prints "INFO: Created ... XNNPACK delegate" on fd 2
        interp = Interpreter(model_path=str(path), num_threads=num_threads)
        interp.allocate_tensors()
    return interp


_STDERR_LOCK = threading.Lock()


@contextmanager
def _quiet_native_stderr():
    """File descriptor 2 pointed at /dev/null for the block (native libraries write there directly)."""
    with _STDERR_LOCK:
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def as_rgb_u8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H,W,3) uint8 RGB image, got shape {img.shape} dtype {img.dtype}")
    return img


@dataclass(frozen=True)
class Roi:
    """A rotated square region of an image: centre (x, y) px, side px, rotation (radians,
    positive turns the region's x axis from the image's x axis towards +y, i.e. clockwise on screen)."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0

    def crop_to_image(self, pts: np.ndarray, crop_side: int) -> np.ndarray:
        """Points (N,2) in crop pixels (0..crop_side, continuous) -> image pixels (N,2)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        d = (np.asarray(pts, np.float64)[:, :2] / crop_side - 0.5) * self.side  # (N,2) from the centre
        x = self.cx + c * d[:, 0] - s * d[:, 1]
        y = self.cy + s * d[:, 0] + c * d[:, 1]
        return np.stack([x, y], -1)

    def crop(self, image: np.ndarray, crop_side: int) -> np.ndarray:
        """(crop_side, crop_side, 3) float32 0..255 bilinear samples of ``image`` in this region
        (crop pixel j is centred at j + 0.5 in crop coordinates);
        outside the image reads 0. Downscaling by more than 2x is pre-blurred against aliasing."""
        img = as_rgb_u8(image)
        u = (np.arange(crop_side, dtype=np.float64) + 0.5)  # pixel centres, continuous crop coords
        uu, vv = np.meshgrid(u, u)  # (S,S)
        pts = self.crop_to_image(np.stack([uu.ravel(), vv.ravel()], -1), crop_side)  # (S*S,2)
        step = self.side / crop_side  # image px per crop px
        src = img.astype(np.float32)
        if step > 2.0:
            from scipy.ndimage import gaussian_filter

            sigma = 0.5 * math.sqrt(step * step - 1.0)
            src = gaussian_filter(src, (sigma, sigma, 0), truncate=2.5)
        coords = [pts[:, 1], pts[:, 0]]  # (y, x) rows for map_coordinates
        out = np.stack([map_coordinates(src[..., k], coords, order=1, mode="constant", cval=0.0)
                        for k in range(3)], -1)
        return out.reshape(crop_side, crop_side, 3)


def square_roi(x0: float, y0: float, x1: float, y1: float, angle: float, scale: float) -> Roi:
    """MediaPipe's rect transformation: the box's centre, its longer side times ``scale``."""
    return Roi(0.5 * (x0 + x1), 0.5 * (y0 + y1), max(x1 - x0, y1 - y0) * scale, angle)


def rotation_from(p0: np.ndarray, p1: np.ndarray) -> float:
    """Angle (radians) that makes the p0 -> p1 direction the region's x axis (MediaPipe's
    DetectionsToRects rotation with target angle 0)."""
    return math.atan2(float(p1[1] - p0[1]), float(p1[0] - p0[0]))
