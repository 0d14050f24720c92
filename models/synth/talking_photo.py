"""Animate a still portrait into a talking clip: a mouth that follows mouth-shape tracks (an
opening and a lip width per frame, as `models.audio.visemes` makes from the speech's phones),
plus slight seeded head motion. Pure numpy/scipy, deterministic for a seed.

Coordinates are (x, y) pixels with y pointing down; landmarks are dlib's 68 points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, map_coordinates

from models.face.mouth import INNER_LOWER, INNER_UPPER, interior_colour, lip_press, profile, smoothstep, teeth_strength
from talkflow.contract import VIDEO_FPS, frame_rms
from talkflow.errors import FaceNotFound, InputError

_JAW = list(range(3, 14))  # lower face contour, left to right
_WIDTH_REACH = (1.0, 0.8)  # x, y support of the lip-width warp, in mouth widths


def speech_envelope(samples: np.ndarray, sample_rate: int, fps: float = VIDEO_FPS) -> np.ndarray:
    """Loudness per video frame, (T,) float32 in [0, 1], T = the contract's frame count.

    RMS over each frame's samples (`talkflow.contract.frame_rms`), Gaussian-smoothed over ~1
    frame, divided by the 95th percentile (so normal speech reaches 1) and clipped.
    """
    if sample_rate <= 0 or fps <= 0 or sample_rate < fps:
        raise InputError(f"bad rates: sample_rate={sample_rate}, fps={fps}")
    try:
        rms = frame_rms(samples, sample_rate, fps)  # (T,)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    t = rms.shape[0]
    if t <= 0:
        return np.zeros(0, np.float32)
    smooth = gaussian_filter1d(rms, sigma=1.0, mode="nearest") if t > 1 else rms
    ref = float(np.percentile(smooth, 95))
    if ref <= 1e-6:
        return np.zeros(t, np.float32)
    return np.clip(smooth / ref, 0.0, 1.0).astype(np.float32)


def _mouth_height(lm: np.ndarray) -> float:
    """Reference mouth height: outer lip height (51 -> 57), at least a quarter of the mouth width."""
    mouth_w = float(np.hypot(*(lm[54] - lm[48])))
    return max(float(lm[57, 1] - lm[51, 1]), 0.25 * mouth_w, 1.0)


@dataclass(frozen=True)
class _MouthRig:
    """Static geometry of the mouth/jaw warp, all in face (unmoved) pixel coordinates."""

    split_x: np.ndarray  # (K,) lip-line sample x
    split_y: np.ndarray  # (K,) lip-line y (midway between the inner lips)
    jaw_x: np.ndarray  # (J,) jaw contour x
    jaw_y: np.ndarray  # (J,) jaw contour y
    mouth_cx: float  # opening centre x
    mouth_half: float  # opening half-width (inner lip corners)
    jaw_cx: float
    jaw_half: float  # half-width of the jaw at mouth level (points 5..11)
    mouth_w: float  # outer mouth width
    mouth_h: float  # reference mouth height (outer lip height, floored)
    teeth: float  # 0..1 strength of painted upper teeth; 0 when the photo already shows teeth
    ramp_len: float  # lip line -> chin distance over which the jaw drop ramps in
    fall_len: float  # below-chin distance over which the drop fades out
    lip_y: float  # lip line height at the mouth centre
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 of the region the warp touches

    @staticmethod
    def from_landmarks(lm: np.ndarray, max_drop: float) -> _MouthRig:
        upper = profile(lm[INNER_UPPER])
        lower = profile(lm[INNER_LOWER])
        split_x = np.linspace(lm[60, 0], lm[64, 0], 33)
        split_y = 0.5 * (np.interp(split_x, *upper) + np.interp(split_x, *lower))
        jaw_x, jaw_y = profile(lm[_JAW])
        mouth_w = float(np.hypot(*(lm[54] - lm[48])))
        mouth_h = _mouth_height(lm)
        chin_drop = float(lm[8, 1] - np.interp(lm[8, 0], split_x, split_y))
        ramp_len = max(0.9 * chin_drop, 2.0 * max_drop, 1.0)
        fall_len = max(0.6 * mouth_h, 2.0 * max_drop, 1.0)
        jaw_cx = 0.5 * float(lm[5, 0] + lm[11, 0])
        jaw_half = max(0.5 * float(lm[11, 0] - lm[5, 0]), 1.0)
        mouth_cx = 0.5 * float(lm[60, 0] + lm[64, 0])
        lip_y = float(np.interp(mouth_cx, split_x, split_y))
        reach_x, reach_y = (r * mouth_w for r in _WIDTH_REACH)  # the lip-width warp's support
        y0 = min(float(split_y.min()) - 2.0, lip_y - reach_y)
        y1 = max(float(jaw_y.max()) + fall_len + 2.0, lip_y + reach_y)
        x0 = min(jaw_cx - 1.1 * jaw_half, mouth_cx - reach_x)
        x1 = max(jaw_cx + 1.1 * jaw_half, mouth_cx + reach_x)
        return _MouthRig(
            split_x, split_y, jaw_x, jaw_y,
            mouth_cx=mouth_cx, lip_y=lip_y,
            mouth_half=max(0.46 * float(lm[64, 0] - lm[60, 0]), 1.0),
            teeth=teeth_strength(lm),
            jaw_cx=jaw_cx, jaw_half=jaw_half, mouth_w=mouth_w, mouth_h=mouth_h,
            ramp_len=ramp_len, fall_len=fall_len, bbox=(x0, y0, x1, y1),
        )

    def widen(self, qx: np.ndarray, qy: np.ndarray, scale: float) -> np.ndarray:
        """Backward horizontal warp at face points (N,): source x when the lips are ``scale`` x
        their width (> 1 spread, < 1 rounded), fading to no change over ``_WIDTH_REACH``."""
        reach_x, reach_y = (r * self.mouth_w for r in _WIDTH_REACH)
        dx = qx - self.mouth_cx
        wx = 1.0 - smoothstep((np.abs(dx) / reach_x - 0.5) / 0.5)  # 1 out to the corners, 0 at reach_x
        wy = 1.0 - smoothstep((np.abs(qy - self.lip_y) / reach_y - 0.3) / 0.7)
        return self.mouth_cx + dx / (1.0 + (scale - 1.0) * wx * wy)

    def warp(self, qx: np.ndarray, qy: np.ndarray, drop: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Backward vertical warp at face points (N,): (source y (N,), interior alpha (N,), depth (N,)).

        The lower lip and jaw move down by ``drop`` px. Inside the mouth the lip line
        tears open by drop * lens(x) (a lens shape just inside the inner corners); the rest
        of the drop ramps in smoothly towards the chin and fades out below it.
        alpha marks the torn-open gap; depth is the position in it (0 top, 1 bottom).
        """
        s = qy - np.interp(qx, self.split_x, self.split_y)  # below the lip line, px
        u = (qx - self.mouth_cx) / self.mouth_half
        lens = np.clip(1.0 - u * u, 0.0, 1.0) ** 0.7  # (N,) 1 at centre, tapering to 0 at the corners
        jaw = 1.0 - smoothstep((np.abs(qx - self.jaw_cx) / self.jaw_half - 0.55) / 0.5)
        lens = np.minimum(lens, jaw)
        gap = drop * lens  # (N,) opening height
        step = np.clip(s + 0.5, 0.0, 1.0)  # 1-px wide tear at the lip line
        ramp = smoothstep(s / self.ramp_len)
        below_chin = qy - np.interp(qx, self.jaw_x, self.jaw_y)
        fade = 1.0 - smoothstep(below_chin / self.fall_len)
        d = (gap * step + drop * (jaw - lens) * ramp) * fade  # (N,) downward displacement
        src_y = qy - d
        # Gap = points below the lip line whose source lies above it (duplicated upper lip).
        inside = np.minimum(s, d - s)  # px from the nearer gap edge, <0 outside
        alpha = np.clip(inside / 2.0, 0.0, 1.0) * smoothstep(lens / 0.25)
        depth = np.clip(s / np.maximum(d, 1e-3), 0.0, 1.0)
        return src_y, alpha, depth


def _track(values, low: float) -> np.ndarray:
    """A per-frame track (T,) as float64, NaN as 0, clipped to [low, 1]."""
    return np.clip(np.nan_to_num(np.asarray(values, np.float64).reshape(-1)), low, 1.0)


def _head_noise(rng: np.random.Generator, t: int, fps: float) -> np.ndarray:
    """(3,T) smooth signals in [-1, 1]: sums of three low-frequency sinusoids with seeded phases."""
    base = np.array([0.13, 0.31, 0.53])  # Hz
    time = np.arange(t) / fps  # (T,)
    out = np.empty((3, t))
    for i in range(3):
        freq = base * rng.uniform(0.8, 1.25, size=3)
        phase = rng.uniform(0.0, 2 * np.pi, size=3)
        amp = np.array([1.0, 0.5, 0.25])
        out[i] = (amp[:, None] * np.sin(2 * np.pi * freq[:, None] * time + phase[:, None])).sum(0) / amp.sum()
    return out


def animate_portrait(
    image: np.ndarray,
    landmarks: np.ndarray,
    opening: np.ndarray,
    width: np.ndarray | None = None,
    closure: np.ndarray | None = None,
    *,
    seed: int = 0,
    head_motion_px: float = 3.0,
    head_rotation_deg: float = 2.0,
    max_mouth_open: float = 1.0,
    spread: float = 0.12,
    rounding: float = 0.25,
    fps: float = VIDEO_FPS,
) -> np.ndarray:
    """Frames (T,H,W,3) uint8 of ``image`` (H,W,3) uint8 talking along mouth tracks.

    ``opening`` (T,) in [0, 1]: the lower lip and jaw drop by opening * max_mouth_open * mouth
    height and the gap is painted as a mouth interior. ``width`` (T,) in [-1, 1] (None: 0): the lips
    widen by up to ``spread`` (x mouth width) at +1 and narrow by up to ``rounding`` at -1.
    ``closure`` (T,) in [0, 1] (None: 0) presses the lips together over the photo's own gap (its
    teeth, in a smiling portrait): 1 closes them. The
    whole image rotates/translates slightly about the face centre (seeded smooth noise); ``fps``
    sets the head-motion time scale only.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"expected an HxWx3 uint8 image, got shape {img.shape} dtype {img.dtype}")
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise InputError(f"expected 68 finite (x, y) face landmarks, got shape {lm.shape}")
    if max_mouth_open < 0 or head_motion_px < 0 or not 0 <= spread < 1 or not 0 <= rounding < 1:
        raise InputError("max_mouth_open and head_motion_px must be >= 0, spread and rounding in [0, 1)")
    env = _track(opening, 0.0)  # (T,)
    t = env.shape[0]
    wid = np.zeros(t) if width is None else _track(width, -1.0)
    press = np.zeros(t) if closure is None else _track(closure, 0.0)
    if wid.shape[0] != t or press.shape[0] != t:
        raise InputError(f"width has {wid.shape[0]} frames and closure {press.shape[0]}, opening {t}")
    h, w, _ = img.shape
    frames = np.empty((t, h, w, 3), np.uint8)
    if t == 0:
        return frames

    drops = env * max_mouth_open * _mouth_height(lm)  # (T,) px
    scales = 1.0 + np.where(wid > 0, spread, rounding) * wid  # (T,) lip width factor
    rig = _MouthRig.from_landmarks(lm, max_drop=float(drops.max()))
    noise = _head_noise(np.random.default_rng(seed), t, fps)  # (3,T)
    angles = np.deg2rad(head_rotation_deg) * noise[0]
    shifts = head_motion_px * noise[1:]  # (2,T) x, y
    cx, cy = lm.mean(axis=0)

    planes = [np.ascontiguousarray(img[..., c]) for c in range(3)]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)  # (H,W)
    margin = head_motion_px + abs(np.deg2rad(head_rotation_deg)) * math.hypot(h, w) + 2.0
    x0, y0, x1, y1 = rig.bbox
    r0, r1 = max(int(y0 - margin), 0), min(int(y1 + margin) + 1, h)
    c0, c1 = max(int(x0 - margin), 0), min(int(x1 + margin) + 1, w)
    for i in range(t):
        # Backward map output -> face coords: q = R(-a) (p - c - shift) + c.
        ca, sa = math.cos(angles[i]), math.sin(angles[i])
        px, py = xx - (cx + shifts[0, i]), yy - (cy + shifts[1, i])
        qx = (ca * px + sa * py + cx).astype(np.float32)  # (H,W)
        qy = (-sa * px + ca * py + cy).astype(np.float32)
        src_y = qy.copy()
        alpha = None
        if abs(scales[i] - 1.0) > 1e-3 and r1 > r0 and c1 > c0:
            qx[r0:r1, c0:c1] = rig.widen(qx[r0:r1, c0:c1], qy[r0:r1, c0:c1], float(scales[i]))
        if drops[i] > 0.05 and r1 > r0 and c1 > c0:
            rqx, rqy = qx[r0:r1, c0:c1].ravel(), qy[r0:r1, c0:c1].ravel()  # (N,) region of interest
            sy, a, depth = rig.warp(rqx, rqy, float(drops[i]))
            src_y[r0:r1, c0:c1] = sy.reshape(r1 - r0, c1 - c0)
            hit = a > 0.0
            if hit.any():
                alpha = (hit, a[hit], depth[hit], (rqx[hit] - rig.mouth_cx) / rig.mouth_half)
        if press[i] > 1e-3 and r1 > r0 and c1 > c0:
            px_roi, sy_roi = qx[r0:r1, c0:c1], src_y[r0:r1, c0:c1]
            src_y[r0:r1, c0:c1] = sy_roi - lip_press(px_roi, sy_roi, lm, float(press[i]))
        coords = np.stack([src_y, qx])  # (2,H,W) row, col
        out = np.stack([map_coordinates(p, coords, order=1, mode="nearest", output=np.float32) for p in planes], -1)
        if alpha is not None:
            hit, a, depth, u = alpha
            roi = out[r0:r1, c0:c1].reshape(-1, 3)  # (N,3), a copy unless the ROI spans full rows
            col = interior_colour(depth, u, float(drops[i]), rig.mouth_w, rig.teeth)  # (N,3)
            roi[hit] = roi[hit] * (1.0 - a[:, None]) + col * a[:, None]
            out[r0:r1, c0:c1] = roi.reshape(r1 - r0, c1 - c0, 3)
        frames[i] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return frames


def sample_portrait(size: int = 512) -> np.ndarray:
    """A (size,size,3) uint8 portrait: skimage's public-domain NASA astronaut photo, cropped
    square around the detected face (face ~40 % of the width) and Lanczos-resized."""
    from PIL import Image
    from skimage import data

    from models.face.landmarks import detect_faces

    img = data.astronaut()  # (512,512,3) uint8
    boxes = detect_faces(img)
    if not boxes:
        raise FaceNotFound("no face found in skimage's astronaut photo; check the dlib install")
    b = boxes[0]
    side = min(int(round(max(b.width, b.height) / 0.4)), *img.shape[:2])
    cx, cy = (b.left + b.right) / 2, (b.top + b.bottom) / 2
    left = int(np.clip(round(cx - side / 2), 0, img.shape[1] - side))
    top = int(np.clip(round(cy - side / 2), 0, img.shape[0] - side))
    crop = Image.fromarray(img[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.LANCZOS), dtype=np.uint8)
