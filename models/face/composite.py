"""Training images built from a frame, its part labels and the background plate.

* ``gt_image``: ER-NeRF's ``gt_imgs/<i>.jpg`` is the original frame with the pixels parsed as
  background replaced by the plate (``bc.jpg``), so the NeRF's composited background matches
  the target exactly.
* ``torso_rgba``: ER-NeRF's ``torso_imgs/<i>.png``, the torso stage's target: neck and torso
  from the ``gt_image``, head removed, alpha 0 elsewhere. As in ER-NeRF, where the neck (and
  the torso) meets the head, the topmost neck colour of each column is extended upwards
  under the chin (``neck_extend_px``, darkened by ``darken`` per pixel, then blurred) so
  that the torso model learns a neck continuing under the head rather than a hole there.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from models.face.config import TorsoConfig  # noqa: F401  (configs live there)
from models.face.parsing import BG, HEAD, NECK, TORSO
from talkflow.errors import InputError


def _check(frame: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img, lab = np.asarray(frame), np.asarray(labels)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or lab.shape != img.shape[:2]:
        raise InputError(
            f"expected a (S,S,3) uint8 frame and (S,S) labels, got {img.shape} {img.dtype} and {lab.shape}"
        )
    return img, lab


def gt_image(frame: np.ndarray, labels: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(S,S,3) uint8: ``frame`` with the background-labelled pixels taken from ``background``."""
    img, lab = _check(frame, labels)
    bg = np.asarray(background)
    if bg.shape != img.shape:
        raise InputError(f"background {bg.shape} does not match the frame {img.shape}")
    return np.where((lab == BG)[..., None], bg, img)


def _extend_up(
    img: np.ndarray, part: np.ndarray, head: np.ndarray, length: int, push_down: int, darken: float
) -> np.ndarray:
    """Paint, in place, each column's top ``part`` colour upwards over ``length`` px where the
    pixel just above that top is ``head``; returns the (S,S) bool mask of painted pixels."""
    h, w = part.shape
    painted = np.zeros((h, w), bool)
    cols = np.flatnonzero(part.any(axis=0))
    if length <= 0 or cols.size == 0:
        return painted
    top = part[:, cols].argmax(axis=0)  # (C,) first part row per column
    above = top - 1
    ok = (above >= 0) & head[np.maximum(above, 0), cols]
    cols, top = cols[ok], top[ok]
    if cols.size == 0:
        return painted
    gap = (np.arange(h)[:, None] >= top[None]) & ~part[:, cols]  # (H,C) non-part rows below the top
    end = np.where(gap.any(axis=0), gap.argmax(axis=0), h)  # (C,) first such row
    count = end - top  # (C,) length of the topmost run
    src = top + np.minimum(np.maximum(count - 1, 0), push_down)  # (C,) colour source row
    colour = img[src, cols].astype(np.float32)  # (C,3)
    for k in range(length):
        rows = src - k
        keep = rows >= 0
        scale = darken**k
        img[rows[keep], cols[keep]] = np.clip(colour[keep] * scale + 0.5, 0, 255).astype(np.uint8)
        painted[rows[keep], cols[keep]] = True
    return painted


_TRUNCATE = 4.0  # scipy's gaussian_filter default: the kernel reaches 4 sigma


def _blur_where(rgb: np.ndarray, where: np.ndarray, sigma: float) -> None:
    """In place: ``rgb`` (S,S,3) uint8 at ``where`` (S,S) takes the Gaussian-blurred frame.

    Only the box round ``where`` grown by the kernel's reach is filtered: at ``where`` the result
    equals filtering the whole frame (a box edge is either that far away or the image border)."""
    reach = int(_TRUNCATE * sigma + 0.5)
    rows, cols = np.flatnonzero(where.any(1)), np.flatnonzero(where.any(0))
    h, w = where.shape
    y0, y1 = max(rows[0] - reach, 0), min(rows[-1] + reach + 1, h)
    x0, x1 = max(cols[0] - reach, 0), min(cols[-1] + reach + 1, w)
    box = rgb[y0:y1, x0:x1]
    blurred = ndimage.gaussian_filter(box.astype(np.float32), (sigma, sigma, 0), truncate=_TRUNCATE)
    m = where[y0:y1, x0:x1]
    box[m] = np.clip(blurred[m] + 0.5, 0, 255).astype(np.uint8)


def torso_rgba(frame: np.ndarray, labels: np.ndarray, config: TorsoConfig | None = None) -> np.ndarray:
    """(S,S,4) uint8 RGBA: neck + torso of ``frame`` (S,S,3) per ``labels`` (S,S), head removed,
    transparent (RGB 0, alpha 0) elsewhere; see the module docstring. (ER-NeRF starts from the
    gt image, which differs from the frame only on background pixels, transparent here anyway.)"""
    cfg = config or TorsoConfig()
    img, lab = _check(frame, labels)
    rgb = img.copy()
    head, neck, torso = lab == HEAD, lab == NECK, lab == TORSO
    painted_torso = _extend_up(rgb, torso, head, cfg.torso_extend_px, 0, cfg.darken)
    grown = _grow_vertically(neck, cfg.neck_grow_px)
    painted_neck = _extend_up(rgb, grown, head, cfg.neck_extend_px, cfg.neck_push_down_px, cfg.darken)
    if cfg.blur_sigma > 0 and painted_neck.any():
        _blur_where(rgb, painted_neck, cfg.blur_sigma)
    alpha = neck | torso | painted_neck | painted_torso  # (S,S)
    out = np.empty((*alpha.shape, 4), np.uint8)
    np.multiply(rgb, alpha[..., None], out=out[..., :3])  # 0 where transparent
    np.multiply(alpha, np.uint8(255), out=out[..., 3])
    return out


def _grow_vertically(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` (S,S) bool dilated by ``px`` rows up and down (a vertical segment)."""
    grown = mask.copy()
    for k in range(1, min(px, mask.shape[0] - 1) + 1):
        grown[k:] |= mask[:-k]
        grown[:-k] |= mask[k:]
    return grown
