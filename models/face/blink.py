"""Blinks from landmarks: an AU45-like eye-closure intensity per frame, without OpenFace.

ER-NeRF reads OpenFace's ``AU45_r`` (0 eyes open .. 5 fully closed; ER-NeRF clips it to 0..2
and scales it to 0..1 as its eye input). Here the eye aspect ratio (Soukupova & Cech, 2016)

    EAR = (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)

is computed per eye from the 68 landmarks (right eye 36-41, left eye 42-47, p1..p6 in that
order) and averaged over both eyes. EAR depends on the face (eye shape, landmark style), so
it is calibrated per video: the OPEN level is a high percentile of the clip's EAR (eyes are
open most of the time; blinks are short), floored at ``min_open_ear`` so a clip filmed with
eyes mostly shut is not taken as "open"; the CLOSED level is a low percentile, but at most
``closed_ratio`` x open (dlib never reaches 0 on a shut eye, and a clip without blinks must
not stretch its noise to the full scale). Then

    AU45 = 5 * clip((open - EAR) / (open - closed), 0, 1)

so open eyes give ~0 and fully closed ones 5.
"""

from __future__ import annotations

import numpy as np

from models.face.config import BlinkConfig  # noqa: F401  (configs live there)
from talkflow.errors import InputError

RIGHT_EYE = (36, 37, 38, 39, 40, 41)  # the subject's right eye, p1..p6
LEFT_EYE = (42, 43, 44, 45, 46, 47)
AU_MAX = 5.0  # OpenFace's intensity scale




def _eye_ear(eye: np.ndarray) -> np.ndarray:
    """EAR (T,) of one eye's points (T,6,2)."""
    p1, p2, p3, p4, p5, p6 = (eye[:, i] for i in range(6))
    vertical = np.linalg.norm(p2 - p6, axis=-1) + np.linalg.norm(p3 - p5, axis=-1)
    horizontal = np.linalg.norm(p1 - p4, axis=-1)
    return vertical / np.maximum(2.0 * horizontal, 1e-6)


def eye_aspect_ratio(lms: np.ndarray) -> np.ndarray:
    """Mean EAR of both eyes, (T,) float32, from landmarks (T,68,2) (or one frame (68,2) -> (1,))."""
    x = np.asarray(lms, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1:] != (68, 2):
        raise InputError(f"expected landmarks (T,68,2), got {x.shape}")
    ear = 0.5 * (_eye_ear(x[:, list(RIGHT_EYE)]) + _eye_ear(x[:, list(LEFT_EYE)]))
    return ear.astype(np.float32)


def au45_from_ear(ear: np.ndarray, config: BlinkConfig | None = None) -> np.ndarray:
    """AU45-like intensity (T,) float32 in [0, 5] from the EAR (T,) of one clip (see module docstring)."""
    cfg = config or BlinkConfig()
    e = np.asarray(ear, dtype=np.float64).reshape(-1)
    if e.size == 0:
        return np.zeros(0, np.float32)
    if not np.isfinite(e).all():
        raise InputError("the eye aspect ratio has NaN/inf values; fill missing landmarks first")
    open_level = max(float(np.percentile(e, cfg.open_percentile)), cfg.min_open_ear)
    closed_level = min(float(np.percentile(e, cfg.closed_percentile)), cfg.closed_ratio * open_level)
    closure = (open_level - e) / max(open_level - closed_level, 1e-6)
    return (AU_MAX * np.clip(closure, 0.0, 1.0)).astype(np.float32)


def au45_from_landmarks(lms: np.ndarray, config: BlinkConfig | None = None) -> np.ndarray:
    """AU45-like eye closure (T,) float32, 0 open .. 5 closed, from a clip's landmarks (T,68,2)."""
    return au45_from_ear(eye_aspect_ratio(lms), config)


# ------------------------------------------------------------------------------- au.csv
# OpenFace's CSV: a header of ", "-separated names (so every name after the first has a leading
# space: ER-NeRF reads the column ' AU45_r'), frames numbered from 1, one row per video frame.
AU_CSV_COLUMNS = ("frame", "timestamp", "AU45_r")


def write_au_csv(path, au45: np.ndarray, fps: float) -> None:
    """Write eye closure (T,) as OpenFace's au.csv (frame from 1, timestamp in s, AU45_r)."""
    values = np.asarray(au45, dtype=np.float64).reshape(-1)
    lines = [", ".join(AU_CSV_COLUMNS)]
    lines += [f"{i + 1}, {i / fps:.3f}, {v:.4f}" for i, v in enumerate(values)]
    with open(path, "w", newline="") as f:
        f.write("\n".join(lines) + "\n")


def read_au45(path) -> np.ndarray:
    """AU45_r (T,) float32 of an au.csv, row i being video frame i (as ER-NeRF indexes it).

    Reads OpenFace's own files (hundreds of columns, names with a leading space) and talkflow's."""
    import csv

    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if not rows:
        raise InputError(f"{path} is empty; it needs an AU45_r column (OpenFace's au.csv)")
    header = [h.strip() for h in rows[0]]
    if "AU45_r" not in header:
        raise InputError(f"{path} has no AU45_r column (columns: {', '.join(header[:8])}...); give OpenFace's "
                         "au.csv, or let preprocessing write it")
    col = header.index("AU45_r")
    try:
        return np.array([float(r[col]) for r in rows[1:]], dtype=np.float32)
    except (ValueError, IndexError) as exc:
        raise InputError(f"{path}: an AU45_r value is missing or not a number ({exc})") from exc
