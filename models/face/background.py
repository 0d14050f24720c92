"""Background plate of a static-camera clip (ER-NeRF's ``bc.jpg``).

ER-NeRF takes, for every pixel, the colour from the sampled frame in which that pixel lies
farthest from the person (and more than 5 px away), then copies the nearest such pixel into
places the person never uncovers. Here every pixel gets the temporal MEDIAN of the frames in
which it is background (more robust to noise and to a single bad parsing), person masks are
grown by ``margin_px`` first (the same 5 px safety band), and pixels never seen as background
take the colour of the nearest pixel that was (``scipy.ndimage.distance_transform_edt``).
Without masks it is a plain per-pixel median, right where the person moves enough.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from models.face.config import BackgroundConfig  # noqa: F401  (configs live there)
from talkflow.errors import InputError


def _pick(n: int, k: int) -> np.ndarray:
    """k evenly spaced indices (K,) in [0, n)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


def _person_mask(mask: np.ndarray) -> np.ndarray:
    """(S,S) bool person mask from a bool mask (True = person) or a label map (nonzero = person)."""
    m = np.asarray(mask)
    return m if m.dtype == bool else m != 0


def masked_median(stack: np.ndarray, valid: np.ndarray, rows_per_chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median over axis 0 of ``stack`` (N,H,W,3) uint8 using only ``valid`` (N,H,W) samples.

    Returns (median (H,W,3) float32, seen (H,W) bool); unseen pixels are 0. The median of an
    even count is the mean of the two middle values.
    """
    n, h, w, _ = stack.shape
    med = np.zeros((h, w, 3), np.float32)
    count = valid.sum(axis=0)  # (H,W)
    sentinel = np.uint16(65535)  # sorts after every uint8 value
    for r0 in range(0, h, rows_per_chunk):
        r1 = min(r0 + rows_per_chunk, h)
        vals = stack[:, r0:r1].astype(np.uint16)  # (N,R,W,3)
        vals[~valid[:, r0:r1]] = sentinel
        vals.sort(axis=0)
        c = count[r0:r1]  # (R,W)
        lo = np.clip((c - 1) // 2, 0, n - 1)[None, ..., None]  # (1,R,W,1)
        hi = np.clip(c // 2, 0, n - 1)[None, ..., None]
        lo_v = np.take_along_axis(vals, np.broadcast_to(lo, (1, *vals.shape[1:])), 0)[0]
        hi_v = np.take_along_axis(vals, np.broadcast_to(hi, (1, *vals.shape[1:])), 0)[0]
        chunk = 0.5 * (lo_v.astype(np.float32) + hi_v.astype(np.float32))
        chunk[c == 0] = 0.0
        med[r0:r1] = chunk
    return med, count > 0


def fill_unseen(image: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Copy of ``image`` (H,W,C) where pixels with ``seen`` False take the nearest seen pixel's value."""
    if seen.all() or not seen.any():
        return image.copy()
    _, (iy, ix) = ndimage.distance_transform_edt(~seen, return_indices=True)  # nearest seen pixel
    return image[iy, ix]


def estimate_background(
    frames: Sequence[np.ndarray] | np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray | None = None,
    config: BackgroundConfig | None = None,
    *,
    return_seen: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Background (S,S,3) uint8 of ``frames`` (T,S,S,3) uint8, see the module docstring.

    ``masks`` (T,S,S): bool person masks or label maps (nonzero = person), aligned with
    ``frames``. With ``return_seen`` also returns (S,S) bool: pixels seen as background at least once.
    """
    cfg = config or BackgroundConfig()
    t = len(frames)
    if t == 0:
        raise InputError("no frames to estimate the background from")
    if masks is not None and len(masks) != t:
        raise InputError(f"{len(masks)} masks for {t} frames; give one person mask per frame")
    idx = _pick(t, cfg.max_frames)
    stack = np.stack([np.asarray(frames[i]) for i in idx])  # (N,S,S,3)
    if stack.dtype != np.uint8 or stack.ndim != 4 or stack.shape[-1] != 3:
        raise InputError(f"expected (H,W,3) uint8 frames, got {stack.shape[1:]} {stack.dtype}")
    if masks is None:
        valid = np.ones(stack.shape[:3], bool)
    else:
        grow = ndimage.generate_binary_structure(2, 1)
        valid = np.empty(stack.shape[:3], bool)
        for k, i in enumerate(idx):
            person = _person_mask(masks[i])
            if person.shape != stack.shape[1:3]:
                raise InputError(f"mask {i} has shape {person.shape}, frames are {stack.shape[1:3]}")
            if cfg.margin_px > 0 and person.any():
                person = ndimage.binary_dilation(person, grow, iterations=cfg.margin_px)
            valid[k] = ~person
    med, seen = masked_median(stack, valid, cfg.rows_per_chunk)
    if not seen.any():
        raise InputError("the person covers every pixel in every frame; the background cannot be estimated")
    bg = np.clip(fill_unseen(med, seen) + 0.5, 0, 255).astype(np.uint8)
    return (bg, seen) if return_seen else bg
