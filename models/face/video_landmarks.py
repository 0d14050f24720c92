"""68-point landmarks over a whole video: detect per frame, fill gaps, smooth in time.

ER-NeRF runs a landmark detector on every frame independently and keeps the raw points.
Here each frame goes through dlib (HOG face box -> 68-point shape predictor, iBUG order),
then:

* several faces in a frame: the largest is used and a warning is recorded;
* frames with no usable face are listed, and their landmarks are interpolated linearly
  from the nearest frames that have one (before the first / after the last: copied from
  the nearest); past ``max_missing_share`` of the clip the video is rejected with
  ``FaceNotFound`` (``FaceTooSmall`` when the faces are there but under ``min_face_px``);
* temporal smoothing removes the detector's frame-to-frame jitter but keeps fast lip motion.
  The default is a zero-phase One-Euro filter (Casiez et al., CHI 2012): a first-order
  low-pass whose cutoff rises with the point's speed (``min_cutoff_hz + beta * speed``),
  so a still point is smoothed strongly (1-2 Hz cutoff) while a moving lip passes almost
  unfiltered; run forwards and backwards and averaged so it adds no lag. Speeds are measured
  in face widths per second (the clip's median jaw width, points 0-16) so the defaults do not
  depend on the resolution. A Savitzky-Golay filter (short window, quadratic) is the
  alternative; ``smooth=None`` keeps the raw detections.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from models.face.config import LandmarkConfig, SmoothConfig  # noqa: F401  (configs live there)
from models.face.face_mesh import FaceMesh
from models.face.landmarks import FaceBox, detect_faces, landmarks68
from models.face.mesh_landmarks import MeshMouth, MeshRescue
from talkflow.contract import VIDEO_FPS
from talkflow.errors import FaceNotFound, FaceTooSmall, InputError

Progress = Callable[[int, int | None], None]  # (frames done, total or None)

# dlib's detector and shape predictor release the GIL: frames are decoded and detected on a few
# threads, in order, while the loop below consumes them (the results do not depend on it)
DETECT_THREADS = min(4, os.cpu_count() or 1)






@dataclass
class VideoLandmarks:
    """Per-frame landmarks of one face over a clip."""

    lms: np.ndarray  # (T,68,2) float32 x, y pixels, gaps filled and smoothed
    detected: np.ndarray  # (T,) bool, False where the landmarks were interpolated
    warnings: list[str] = field(default_factory=list)
    raw: np.ndarray | None = None  # (T,68,2) float32 before smoothing (gaps filled)

    @property
    def missing(self) -> np.ndarray:
        """Indices (M,) of the frames whose landmarks were interpolated."""
        return np.flatnonzero(~self.detected)


# --------------------------------------------------------------------------- detection


def _as_frame(frame: np.ndarray, index: int) -> np.ndarray:
    img = np.asarray(frame)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise InputError(
            f"frame {index}: expected an (H,W,3) uint8 RGB image, got shape {img.shape} dtype {img.dtype}"
        )
    return img


def _detect(img: np.ndarray, cfg: LandmarkConfig) -> list[FaceBox]:
    """Faces in a frame (H,W,3), largest first, boxes in frame pixels.

    Detection runs on a copy downscaled to ``detect_max_side`` (HOG at upsample 0 finds
    faces from ~80 px at that scale); when that finds nothing the full frame is tried.
    """
    h, w = img.shape[:2]
    scale = min(1.0, cfg.detect_max_side / max(h, w))
    if scale < 1.0:
        small = np.asarray(Image.fromarray(img).resize((round(w * scale), round(h * scale)), Image.BILINEAR))
        boxes = detect_faces(small, upsample=0, min_score=cfg.min_score, min_size=1)
        if boxes:
            s = 1.0 / scale
            return [
                FaceBox(round(b.left * s), round(b.top * s), round(b.right * s), round(b.bottom * s), b.score)
                for b in boxes
            ]
    return detect_faces(img, upsample=0, min_score=cfg.min_score, min_size=1)


def _dlib_points(img: np.ndarray, cfg: LandmarkConfig) -> tuple[list[FaceBox], np.ndarray | None]:
    """dlib's faces in a frame and the 68 points of the largest, unless it is under min_face_px."""
    boxes = _detect(img, cfg)
    if boxes and min(boxes[0].width, boxes[0].height) >= cfg.min_face_px:
        return boxes, landmarks68(img, boxes[0])
    return boxes, None


def _detected_in_order(frames: Iterable[np.ndarray],
                       cfg: LandmarkConfig) -> Iterator[tuple[np.ndarray, list[FaceBox], np.ndarray | None]]:
    """(frame, faces, points) per frame, computed ahead on DETECT_THREADS threads (frames of a
    sequence are also read there), yielded in order."""
    if hasattr(frames, "__getitem__") and hasattr(frames, "__len__"):
        seq = frames
        items: Iterable = range(len(seq))  # type: ignore[arg-type]
        read = lambda i: _as_frame(seq[i], i)  # noqa: E731
    else:
        items = frames
        read = None

    def work(i: int, item) -> tuple[np.ndarray, list[FaceBox], np.ndarray | None]:
        img = read(item) if read is not None else _as_frame(item, i)
        return (img, *_dlib_points(img, cfg))

    pending: deque = deque()
    pool = ThreadPoolExecutor(DETECT_THREADS)
    try:
        for i, item in enumerate(items):
            pending.append(pool.submit(work, i, item))
            if len(pending) > 2 * DETECT_THREADS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # also when the consumer stops early (an error, too many faceless frames)
        pool.shutdown(cancel_futures=True)


def _probe_small_face(frames: list[np.ndarray], cfg: LandmarkConfig) -> int | None:
    """Side (px) of a face found in faceless frames by a 2x-upsampled search, or None."""
    for img in frames:
        boxes = detect_faces(img, upsample=1, min_score=cfg.min_score, min_size=1)
        if boxes:
            return min(boxes[0].width, boxes[0].height)
    return None


def _too_small(side: int, n: int, t: str, cfg: LandmarkConfig) -> FaceTooSmall:
    return FaceTooSmall(
        f"the face is too small: about {side} px wide, at least {cfg.min_face_px} px are needed "
        f"(seen in {n} of {t} frames); crop the video closer around the face (it should fill about "
        "a third of the square frame) or use a higher-resolution source"
    )


def _not_found(n: int, seen: int, total: int | None, cfg: LandmarkConfig) -> FaceNotFound:
    where = f"{n} of {seen} frames" if total in (None, seen) else f"{n} of the first {seen} frames ({total} in all)"
    return FaceNotFound(
        f"no usable face in {where}, more than the allowed {cfg.max_missing_share:.0%} "
        f"(max_missing_share); use a clip where one frontal, well-lit face is visible in nearly every "
        "frame (cut the parts without it), or raise max_missing_share"
    )


# --------------------------------------------------------------------------- filling and smoothing


def interpolate_missing(lms: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Fill frames where ``detected`` (T,) is False in ``lms`` (T,68,2): linear in time between
    detected frames, nearest detected frame before the first / after the last one."""
    t = np.arange(lms.shape[0])
    have = np.flatnonzero(detected)
    if have.size == 0:
        raise FaceNotFound("no face in any frame; nothing to interpolate from")
    flat = lms.reshape(lms.shape[0], -1)  # (T,136)
    out = np.empty_like(flat, dtype=np.float32)
    for k in range(flat.shape[1]):
        out[:, k] = np.interp(t, have, flat[have, k])  # np.interp holds the edge values
    return out.reshape(lms.shape)


def _one_euro_pass(x: np.ndarray, fps: float, scale: float, cfg: SmoothConfig) -> np.ndarray:
    """Causal One-Euro filter along axis 0 of ``x`` (T,K,2); speed adapts per point (K,)."""

    def alpha(cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau * fps)

    a_d = alpha(cfg.d_cutoff_hz)
    out = np.empty_like(x)
    out[0] = x[0]
    dx = np.zeros_like(x[0])  # (K,2) filtered velocity, px/s
    for i in range(1, x.shape[0]):
        dx = a_d * (x[i] - out[i - 1]) * fps + (1.0 - a_d) * dx
        speed = np.linalg.norm(dx, axis=-1) / scale  # (K,) face widths per second
        a = alpha(cfg.min_cutoff_hz + cfg.beta * speed)[:, None]  # (K,1)
        out[i] = a * x[i] + (1.0 - a) * out[i - 1]
    return out


def smooth_landmarks(lms: np.ndarray, cfg: SmoothConfig, fps: float = VIDEO_FPS) -> np.ndarray:
    """Smoothed copy of ``lms`` (T,68,2) float32 (see the module docstring)."""
    x = np.asarray(lms, dtype=np.float64)
    if x.shape[0] < 3:
        return x.astype(np.float32)
    if cfg.method == "savgol":
        from scipy.signal import savgol_filter

        win = min(cfg.savgol_window | 1, x.shape[0] if x.shape[0] % 2 else x.shape[0] - 1)
        if win <= cfg.savgol_order:
            return x.astype(np.float32)
        return savgol_filter(x, win, cfg.savgol_order, axis=0, mode="interp").astype(np.float32)
    scale = float(np.median(np.linalg.norm(x[:, 16] - x[:, 0], axis=-1))) if x.shape[1] == 68 else 1.0
    scale = max(scale, 1.0)
    fwd = _one_euro_pass(x, fps, scale, cfg)
    bwd = _one_euro_pass(x[::-1], fps, scale, cfg)[::-1]
    return (0.5 * (fwd + bwd)).astype(np.float32)


# --------------------------------------------------------------------------- the tracker


def track_video_landmarks(
    frames: Iterable[np.ndarray],
    config: LandmarkConfig | None = None,
    *,
    fps: float = VIDEO_FPS,
    progress: Progress | None = None,
    mesh: str | Path | None = None,
    detector: str | Path | None = None,
    **overrides,
) -> VideoLandmarks:
    """Landmarks (T,68,2) of the main face in ``frames`` ((T,H,W,3) uint8 array or an iterable
    of (H,W,3) uint8 frames) of a clip at ``fps`` (the smoothing's time base); ``overrides``
    replace fields of ``config``, e.g.
    ``track_video_landmarks(frames, max_missing_share=0.1, smooth=None)``. MediaPipe's networks
    (paths of face_landmark.tflite, ``mesh``, and face_detection_short_range.tflite, ``detector``)
    give the lips when ``config.mouth == "mesh"`` (mesh) and the points of frames where dlib finds
    no face when ``config.mesh_fallback`` (mesh and detector).

    Raises FaceNotFound past ``max_missing_share`` faceless frames (as soon as that is certain
    when ``frames`` has a length), FaceTooSmall when the faces are under ``min_face_px``.
    """
    cfg = LandmarkConfig.model_validate({**(config or LandmarkConfig()).model_dump(), **overrides})
    total = len(frames) if hasattr(frames, "__len__") else None  # type: ignore[arg-type]
    allowed = math.floor(cfg.max_missing_share * total) if total is not None else None

    lms: list[np.ndarray] = []
    detected: list[bool] = []
    multi: list[int] = []
    small_sides: list[int] = []
    probes: list[np.ndarray] = []  # a few faceless frames, searched again for tiny faces on failure
    shape = None
    face_mesh = FaceMesh(mesh) if mesh is not None else None
    mouth = MeshMouth(face_mesh) if face_mesh is not None and cfg.mouth == "mesh" else None
    rescue = (MeshRescue(detector, face_mesh) if face_mesh is not None and detector is not None
              and cfg.mesh_fallback else None)
    rescued: list[int] = []

    def fail(n_bad: int, seen: int, t_all: int | None) -> Exception:
        side = int(np.median(small_sides)) if small_sides else _probe_small_face(probes, cfg)
        if side is not None and side < cfg.min_face_px:
            return _too_small(side, n_bad, str(t_all or seen), cfg)
        return _not_found(n_bad, seen, t_all, cfg)

    for i, (img, boxes, pts) in enumerate(_detected_in_order(frames, cfg)):
        if shape is None:
            shape = img.shape
        elif img.shape != shape:
            raise InputError(f"frame {i} has shape {img.shape}, frame 0 had {shape}; all frames must match")
        if boxes and pts is None:
            small_sides.append(min(boxes[0].width, boxes[0].height))
        elif boxes:
            if len(boxes) > 1:
                multi.append(i)
            pts = mouth(img, pts) if mouth is not None else pts
        elif rescue is not None and (found := rescue(img)) is not None:
            if found[0] < cfg.min_face_px:
                small_sides.append(int(found[0]))
            else:
                pts = found[1]
                rescued.append(i)
                if mouth is not None:
                    mouth.reset()
        ok = pts is not None
        if ok:
            lms.append(pts)
        else:
            lms.append(np.full((68, 2), np.nan, np.float32))
            if mouth is not None:
                mouth.reset()
            if len(probes) < cfg.small_face_probes:
                probes.append(img.copy())
        detected.append(ok)
        n_bad = len(detected) - sum(detected)
        if allowed is not None and n_bad > allowed:
            raise fail(n_bad, len(detected), total)
        if progress is not None:
            progress(i + 1, total)

    t = len(detected)
    if t == 0:
        raise InputError("the video has no frames; give a clip of at least one second")
    det = np.asarray(detected, dtype=bool)  # (T,)
    n_bad = int((~det).sum())
    if n_bad > math.floor(cfg.max_missing_share * t) or n_bad == t:
        raise fail(n_bad, t, t)

    warnings: list[str] = []
    if multi:
        warnings.append(
            f"several faces in {len(multi)} of {t} frames (first at frame {multi[0]}); the largest was used"
        )
    if rescued:
        warnings.append(f"dlib found no face in {len(rescued)} of {t} frames (first at frame {rescued[0]}); "
                        "the face mesh's points were used there")
    if n_bad:
        idx = np.flatnonzero(~det)
        listed = ", ".join(map(str, idx[:20])) + (", ..." if idx.size > 20 else "")
        warnings.append(f"no usable face in {n_bad} of {t} frames ({listed}); landmarks interpolated there")

    raw = interpolate_missing(np.stack(lms), det)  # (T,68,2)
    out = smooth_landmarks(raw, cfg.smooth, fps) if cfg.smooth is not None else raw.copy()
    return VideoLandmarks(lms=out, detected=det, warnings=warnings, raw=raw)


# --------------------------------------------------------------------------- .lms files


def write_lms(path: str | Path, lms: np.ndarray) -> None:
    """Write (68,2) landmarks as ER-NeRF's ``<i>.lms``: one ``x y`` line per point, pixels."""
    pts = np.asarray(lms, dtype=np.float64)
    if pts.shape != (68, 2):
        raise InputError(f"expected (68,2) landmarks, got {pts.shape}")
    np.savetxt(path, pts, fmt="%.2f")


def read_lms(path: str | Path) -> np.ndarray:
    """Read a ``.lms`` file into (68,2) float32."""
    pts = np.loadtxt(path, dtype=np.float32, ndmin=2)
    if pts.shape != (68, 2):
        raise InputError(f"{path}: expected 68 lines of 'x y', got an array of shape {pts.shape}")
    return pts
