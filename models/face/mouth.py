"""Mouth geometry and the synthesised mouth interior shared by the portrait animators.

Coordinates are (x, y) pixels with y pointing down; landmarks are dlib's 68 points.
Colours are RGB floats on the 0-255 scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INNER_UPPER = [60, 61, 62, 63, 64]
INNER_LOWER = [60, 67, 66, 65, 64]


@dataclass(frozen=True)
class MouthColours:
    """Mouth-interior colours (RGB, 0-255)."""

    cavity: tuple[float, float, float] = (28.0, 8.0, 10.0)
    tongue: tuple[float, float, float] = (125.0, 48.0, 52.0)
    teeth: tuple[float, float, float] = (222.0, 214.0, 204.0)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def profile(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points (K,2) sorted by x, duplicates in x merged, for np.interp."""
    p = points[np.argsort(points[:, 0], kind="stable")]
    xs, idx = np.unique(p[:, 0], return_index=True)
    return xs, p[idx, 1]


def interior_colour(depth: np.ndarray, u: np.ndarray, gap: float, mouth_w: float, teeth_k: float,
                    colours: MouthColours = MouthColours()) -> np.ndarray:
    """Mouth-interior RGB (N,3) at points of an opening `gap` px high in a mouth `mouth_w` px wide.

    depth (N,): position in the opening, 0 at the upper lip, 1 at the lower; u (N,): across the
    opening, 0 at the centre, +-1 at the inner corners. Upper teeth in a band under the upper
    lip (strength `teeth_k` in [0, 1]), a dark cavity, the tongue towards the bottom.
    """
    cavity, tongue_c, teeth_c = (np.asarray(c, np.float32) for c in (colours.cavity, colours.tongue, colours.teeth))
    tongue = smoothstep((depth - 0.6) / 0.4)[:, None]
    col = cavity * (1.0 - tongue) + tongue_c * tongue * 0.8
    teeth_h = min(0.22, 0.06 * mouth_w / max(gap, 1e-3))  # as a fraction of the gap
    teeth = (1.0 - smoothstep((depth - teeth_h) / max(0.5 * teeth_h, 1e-3)))
    teeth = teeth * (1.0 - smoothstep((np.abs(u) - 0.45) / 0.3)) * smoothstep((gap - 3.0) / 4.0) * teeth_k
    return col * (1.0 - teeth[:, None]) + teeth_c * teeth[:, None]


def mouth_width(lm: np.ndarray) -> float:
    """Outer mouth width (48 -> 54), px."""
    return float(np.hypot(*(lm[54] - lm[48])))


def teeth_strength(lm: np.ndarray) -> float:
    """0..1 strength of painted upper teeth: 1 for closed lips, 0 when the photo's lips are
    already apart (its own teeth or cavity show)."""
    inner_gap = float(np.mean(lm[[65, 66, 67], 1] - lm[[63, 62, 61], 1]))  # >0: lips apart
    return 1.0 - float(smoothstep(np.asarray(inner_gap / (0.08 * mouth_width(lm)))))


def lip_press(qx: np.ndarray, qy: np.ndarray, lm: np.ndarray, amount: float) -> np.ndarray:
    """Backward vertical displacement (N,) at points (N,) that presses the lips together.

    ``lm`` (68, 2): the lips where they stand now. Per column the upper inner lip moves down and
    the lower inner lip moves up by ``amount`` x half their gap (``amount`` 1: they meet on the
    midline and hide the teeth); the shift is full at the lips and fades out over one outer-lip
    height above and below. A point q samples the unpressed picture at q - returned value."""
    upper, lower = profile(lm[INNER_UPPER]), profile(lm[INNER_LOWER])
    x = np.clip(qx, float(lm[60, 0]), float(lm[64, 0]))
    yu, yl = np.interp(x, *upper), np.interp(x, *lower)
    half = 0.5 * np.maximum(yl - yu, 0.0)
    mid = yu + half
    inside = (qx >= lm[60, 0]) & (qx <= lm[64, 0])
    shift = float(np.clip(amount, 0.0, 1.0)) * half * inside  # (N,) px each lip moves
    reach = max(float(lm[57, 1] - lm[51, 1]), 2.0)  # outer lip height
    away = np.abs(qy - mid) - half  # px beyond the lip edge, < 0 between the lips
    fade = 1.0 - smoothstep(away / reach)
    return np.where(qy < mid, shift, -shift) * fade


def pressed_landmarks(lm: np.ndarray, amount: float) -> np.ndarray:
    """(68, 2) landmarks with the inner lips moved as `lip_press` moves them."""
    out = np.array(lm, dtype=np.float64, copy=True)
    upper, lower = profile(lm[INNER_UPPER]), profile(lm[INNER_LOWER])
    for i in (61, 62, 63, 65, 66, 67):
        x = lm[i, 0]
        half = 0.5 * max(float(np.interp(x, *lower) - np.interp(x, *upper)), 0.0)
        out[i, 1] += float(np.clip(amount, 0.0, 1.0)) * half * (1.0 if i in (61, 62, 63) else -1.0)
    return out
