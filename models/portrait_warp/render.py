"""Frames of the portrait itself, warped by an expression sequence of its fitted 3DMM.

Per frame: the mesh's vertex offsets (the fit's expression -> the frame's), projected to the
image, are spread over the portrait by the rig (barycentric on the face, fading to zero across
the ring round it) into a dense forward displacement field D; each output pixel q samples the
portrait at q - D(q) (bilinear `grid_sample`; first order, exact where D is locally constant,
as on the jaw). Where the lips part, the pixels between the frame's inner lip lines (the photo's
landmarks plus the 3DMM's landmark offsets) get a synthesised interior (`models.face.mouth`),
shaded darker towards the corners and under the upper lip, with feathered edges.
At the fit's own expression every offset is zero and the frame is the portrait, bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from models.face.mouth import (
    INNER_LOWER,
    INNER_UPPER,
    interior_colour,
    lip_press,
    mouth_width,
    pressed_landmarks,
    profile,
    smoothstep,
)
from models.face3d.morphable import MorphableModel
from models.portrait_warp.config import WarpRenderConfig
from models.portrait_warp.rig import WarpRig
from talkflow.errors import InputError


def displacement(rig: WarpRig, vertex_offsets: Tensor) -> Tensor:
    """(B, N, 2) vertex offsets, px -> (B, h, w, 2) forward displacement field on the rig's box, px."""
    b, n = vertex_offsets.shape[:2]
    y0, x0, y1, x1 = rig.box()
    flat = vertex_offsets.permute(1, 0, 2).reshape(n, 2 * b)  # (N, 2B)
    w = rig.bary * rig.weight[:, None]  # (M, 3)
    d = (flat[rig.tri] * w[..., None]).sum(1)  # (M, 2B)
    field = flat.new_zeros((y1 - y0) * (x1 - x0), 2 * b)
    field[rig.box_index()] = d
    return field.view(y1 - y0, x1 - x0, b, 2).permute(2, 0, 1, 3)


def moved_box(rig: WarpRig, field: Tensor) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) image box of the pixels some frame of `field` (B, h, w, 2) moves (empty: y1 = y0)."""
    y0, x0, _, _ = rig.box()
    moved = field.abs().amax(dim=(0, 3)) > 1e-4  # (h, w)
    if not moved.any():
        return y0, x0, y0, x0
    rows, cols = moved.any(1).nonzero()[:, 0], moved.any(0).nonzero()[:, 0]
    return y0 + int(rows[0]), x0 + int(cols[0]), y0 + int(rows[-1]) + 1, x0 + int(cols[-1]) + 1


def warp_box(rig: WarpRig, field: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    """field (B, h, w, 2) on the rig's box -> (B, y1-y0, x1-x0, 3) float 0-255 of the output in
    `box` (y0, x0, y1, x1): out(q) = image(q - D(q)), D = 0 outside the rig's box."""
    s, b = rig.size, field.shape[0]
    y0, x0, y1, x1 = box
    ry0, rx0, ry1, rx1 = rig.box()
    full = field.new_zeros(b, y1 - y0, x1 - x0, 2)  # the field on `box`
    iy0, ix0, iy1, ix1 = max(y0, ry0), max(x0, rx0), min(y1, ry1), min(x1, rx1)
    if iy1 > iy0 and ix1 > ix0:
        full[:, iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = field[:, iy0 - ry0:iy1 - ry0, ix0 - rx0:ix1 - rx0]
    gy, gx = torch.meshgrid(torch.arange(y0, y1, dtype=field.dtype) + 0.5,
                            torch.arange(x0, x1, dtype=field.dtype) + 0.5, indexing="ij")
    grid = (torch.stack([gx, gy], -1)[None] - full) * (2.0 / s) - 1.0  # align_corners=False: centres at (2j+1)/S-1
    img = rig.image.permute(2, 0, 1)[None].float().expand(b, -1, -1, -1)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


def paint_mouth(frame: np.ndarray, lm: np.ndarray, lm_rest: np.ndarray, rig: WarpRig,
                config: WarpRenderConfig) -> None:
    """Paint the mouth interior, in place, into `frame` (H, W, 3) float where the inner lips
    `lm` (68, 2) of this frame stand further apart than in the portrait (`lm_rest`)."""
    upper, lower = profile(lm[INNER_UPPER]), profile(lm[INNER_LOWER])
    up0, lo0 = profile(lm_rest[INNER_UPPER]), profile(lm_rest[INNER_LOWER])
    x0, x1 = float(lm[60, 0]), float(lm[64, 0])
    if x1 - x0 < 2.0:
        return
    h, w = frame.shape[:2]
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)) + 1, w)
    xs = np.arange(c0, c1) + 0.5  # (X,) pixel centres
    rest = np.maximum(np.interp(xs, *lo0) - np.interp(xs, *up0), 0.0)  # the photo's own lip gap (its teeth)
    yu, yl = np.interp(xs, *upper) + rest, np.interp(xs, *lower)  # (X,) the new opening, under the photo's
    opening = yl - yu
    if opening.max() < 0.25:
        return
    r0, r1 = max(int(np.floor(yu.min() - 2)), 0), min(int(np.ceil(yl.max() + 2)) + 1, h)
    if r1 <= r0 or c1 <= c0:
        return
    ys = np.arange(r0, r1) + 0.5
    y, x = np.meshgrid(ys, xs, indexing="ij")  # (Y, X)
    gap = np.maximum(yl - yu, 1e-3)[None]
    inside = np.minimum(y - yu[None], yl[None] - y)  # px from the nearer lip, < 0 outside
    u = (x - 0.5 * (x0 + x1)) / (0.5 * (x1 - x0))  # -1..1 corner to corner
    fade_in = smoothstep(opening / max(config.min_opening_px, 1e-3))[None]
    alpha = np.clip(inside / config.feather_px + 0.5, 0.0, 1.0) * fade_in
    hit = alpha > 0
    if not hit.any():
        return
    depth = np.clip((y - yu[None]) / gap, 0.0, 1.0)[hit]
    centre_gap = float(np.interp(0.5 * (x0 + x1), xs, yl - yu))
    col = interior_colour(depth, u[hit], centre_gap, mouth_width(lm), float(rig.teeth_strength), rig.colours)
    shade = 1.0 - config.corner_shade * np.maximum(smoothstep((np.abs(u[hit]) - 0.35) / 0.65),
                                                   0.6 * (1.0 - smoothstep(depth / 0.15)))
    roi = frame[r0:r1, c0:c1]
    a = alpha[hit][:, None]
    roi[hit] = roi[hit] * (1.0 - a) + (col * shade[:, None]) * a


def press_box(out: np.ndarray, lm: np.ndarray, amount: float) -> None:
    """Press the lips of the frame region `out` (h, w, 3) float together, in place: `lm` (68, 2)
    its lips in region px, `amount` in [0, 1] (`models.face.mouth.lip_press`)."""
    from scipy.ndimage import map_coordinates

    h, w = out.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    d = lip_press(x, y, lm, amount)
    if not np.any(d):
        return
    coords = np.stack([y - d - 0.5, x - 0.5])
    for c in range(3):
        out[..., c] = map_coordinates(out[..., c], coords, order=1, mode="nearest")


def _mouth_box(lms: np.ndarray, size: int, margin: float = 3.0) -> tuple[int, int, int, int]:
    m = lms[:, 48:68].reshape(-1, 2)
    lo, hi = np.floor(m.min(0) - margin), np.ceil(m.max(0) + margin)
    return (int(np.clip(lo[1], 0, size)), int(np.clip(lo[0], 0, size)),
            int(np.clip(hi[1], 0, size)), int(np.clip(hi[0], 0, size)))


@torch.no_grad()
def render_warp(rig: WarpRig, model: MorphableModel, exp_seq, config: WarpRenderConfig = WarpRenderConfig(),
                progress=None, closure=None) -> np.ndarray:
    """-> (T, S, S, 3) uint8 frames of the rig's portrait making the expressions exp_seq (T, K_exp)
    (absolute coefficients, as `audio_to_expressions` gives); `closure` (T,) in [0, 1] presses the
    lips together over the portrait's own lip gap (1: closed, teeth hidden). `progress(done, total)`
    after every batch."""
    from models.face3d.fit import cpu_threads

    exp = torch.as_tensor(np.asarray(exp_seq, dtype=np.float32))
    if exp.ndim != 2 or exp.shape[1] != model.n_exp:
        raise InputError(f"exp_seq must be (T, {model.n_exp}), got {tuple(exp.shape)}")
    if not torch.isfinite(exp).all():
        raise InputError("exp_seq has NaN/inf values")
    if rig.coeffs["id"].shape[-1] != model.n_id:
        raise InputError(f"the rig was fitted with {rig.coeffs['id'].shape[-1]} identity modes, the model has "
                         f"{model.n_id}: render with the fit's morphable model")
    t, s = exp.shape[0], rig.size
    press = np.zeros(t) if closure is None else np.clip(np.asarray(closure, np.float64).reshape(-1), 0.0, 1.0)
    if press.shape[0] != t:
        raise InputError(f"closure has {press.shape[0]} frames, exp_seq {t}")
    frames = np.empty((t, s, s, 3), np.uint8)
    frames[:] = rig.image.numpy()[None]
    with cpu_threads(config.cpu_threads):
        uv0, lmk0 = rig.project(model, rig.coeffs["exp"].reshape(1, -1).float())
        lm_rest = rig.landmarks.double().numpy()
        for start in range(0, t, config.batch_frames):
            e = exp[start:start + config.batch_frames]
            b = e.shape[0]
            uv, lmk = rig.project(model, e)
            field = displacement(rig, uv - uv0)
            lms = lm_rest[None] + (lmk - lmk0).double().numpy()  # (B, 68, 2) this frame's landmarks
            y0, x0, y1, x1 = moved_box(rig, field)
            my0, mx0, my1, mx1 = _mouth_box(lms, s)
            if y1 > y0:
                y0, x0, y1, x1 = min(y0, my0), min(x0, mx0), max(y1, my1), max(x1, mx1)
            else:
                y0, x0, y1, x1 = my0, mx0, my1, mx1
            out = warp_box(rig, field, (y0, x0, y1, x1)).numpy()  # (B, h, w, 3)
            for i in range(b):
                lm_i = lms[i] - (x0, y0)
                amount = float(press[start + i])
                if amount > 1e-3:
                    press_box(out[i], lm_i, amount)
                    lm_i = pressed_landmarks(lm_i, amount)
                paint_mouth(out[i], lm_i, lm_rest - (x0, y0), rig, config)
            frames[start:start + b, y0:y1, x0:x1] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
            if progress is not None:
                progress(min(start + b, t), t)
    return frames
