"""Audio-driven frames: the tuned generator, its pivot, the fitted 3DMM and an expression sequence.

For every batch of frames the tri-planes (computed once for the pivot) are rendered with the
expression deformation of `deform.ExpressionWarp` (the 3DMM moves the ray samples), then
super-resolved. With `paste_static` (default) each frame keeps its rendering only where the
deformation moved something (the composited sample displacement, thresholded, grown by
`grow_px` low-resolution pixels and feathered) and takes the static frame `background` (PTI's
bg_PTI, or the undeformed rendering) elsewhere, so the background and the still parts of the head
do not flicker with the super-resolution network's response to the mouth.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from models.face3d.morphable import MorphableModel
from models.nerffacespeech.camera import Camera
from models.nerffacespeech.config import RenderConfig
from models.nerffacespeech.deform import ExpressionWarp, FaceRig
from models.nerffacespeech.generator import TriplaneGenerator, to_uint8
from talkflow.errors import InputError


def _as_ws(w: Tensor, generator: TriplaneGenerator) -> Tensor:
    w = torch.as_tensor(w, dtype=torch.float32)
    n, d = generator.num_ws, generator.cfg.w_dim
    if w.shape == (d,):
        w = w[None, None]
    elif w.ndim == 2 and w.shape[1] == d:
        w = w[None]
    if w.ndim != 3 or w.shape[0] != 1 or w.shape[2] != d or w.shape[1] not in (1, n):
        raise InputError(f"w must be (1, {n}, {d}) (or one w), got {tuple(w.shape)}")
    return w.expand(1, n, d).to(generator.device)


def _blur(mask: Tensor, sigma: float) -> Tensor:
    if sigma <= 0:
        return mask
    r = max(1, int(round(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=mask.dtype, device=mask.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    m = F.conv2d(F.pad(mask, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(m, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def motion_mask(motion: Tensor, size: int, threshold: float, grow: int, feather: float) -> Tensor:
    """(B, 1, r, r) composited displacement (world units) -> (B, 1, size, size) soft mask in [0, 1]."""
    m = (motion > threshold).to(motion.dtype)
    if grow > 0:
        m = F.max_pool2d(m, 2 * grow + 1, stride=1, padding=grow)
    m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
    return _blur(m, feather * size / motion.shape[-1]).clamp(0, 1)


@torch.no_grad()
def render_frames(generator: TriplaneGenerator, w: Tensor, coeffs: dict[str, Tensor], exp_seq, camera: Camera,
                  *, model: MorphableModel | None = None, portrait_camera: Camera | None = None,
                  background: Tensor | None = None, config: RenderConfig = RenderConfig(),
                  progress=None) -> np.ndarray:
    """-> (T, S, S, 3) uint8 frames of the portrait speaking `exp_seq` (T, K_exp).

    generator: G_PTI; w: the pivot (1, num_ws, w_dim); coeffs: `fit_portrait(...).coeffs`;
    camera: the view to render (1 camera); portrait_camera: the camera PTI inverted with (default
    `camera`), which places the 3DMM in the world; model: the morphable model of the fit (default
    face3d's `default_model()`); background: bg_PTI (3, S, S) in [-1, 1] (default: rendered here
    without deformation). `progress(done, total)` is called after every batch.
    """
    from models.face3d.fit import cpu_threads

    with cpu_threads(config.cpu_threads if generator.device.type == "cpu" else None):
        return _render_frames(generator, w, coeffs, exp_seq, camera, model, portrait_camera, background, config,
                              progress)


def _render_frames(generator: TriplaneGenerator, w: Tensor, coeffs: dict[str, Tensor], exp_seq, camera: Camera,
                   model: MorphableModel | None, portrait_camera: Camera | None, background: Tensor | None,
                   config: RenderConfig, progress) -> np.ndarray:
    from models.face3d.morphable import default_model

    model = model if model is not None else default_model()
    exp = torch.as_tensor(np.asarray(exp_seq, dtype=np.float32))
    if exp.ndim != 2 or exp.shape[1] != model.n_exp:
        raise InputError(f"exp_seq must be (T, {model.n_exp}), got {tuple(exp.shape)}")
    if not torch.isfinite(exp).all():
        raise InputError("exp_seq has NaN/inf values")
    camera = camera.to(generator.device)
    if camera.batch != 1:
        raise InputError(f"render_frames renders one view; got {camera.batch} cameras")
    rig = FaceRig.from_fit(coeffs, model, portrait_camera if portrait_camera is not None else camera)
    ws = _as_ws(w, generator)
    cfg = config
    s = generator.cfg.img_resolution
    t = exp.shape[0]
    frames = np.empty((t, s, s, 3), np.uint8)
    if t == 0:
        return frames
    generator = generator.eval()
    planes = generator.planes(ws, "const")  # (1, 3, C, R, R)
    kw = dict(resolution=cfg.neural_rendering_resolution, depth_resolution=cfg.depth_resolution,
              depth_resolution_importance=cfg.depth_resolution_importance)
    if cfg.paste_static:
        if background is None:
            background = generator.render(planes, ws, camera, **kw).image[0]
        background = background.to(generator.device)
        if background.shape != (3, s, s):
            raise InputError(f"background must be (3, {s}, {s}), got {tuple(background.shape)}")
    threshold = cfg.motion_threshold_mm * rig.units_per_mm
    for start in range(0, t, cfg.batch_frames):
        e = exp[start:start + cfg.batch_frames]
        b = e.shape[0]
        warp = ExpressionWarp(rig, e, cfg.deform)
        out = generator.render(planes.expand(b, -1, -1, -1, -1), ws.expand(b, -1, -1), camera, warp=warp, **kw)
        img = out.image
        if cfg.paste_static:
            m = motion_mask(out.motion, s, threshold, cfg.grow_px, cfg.feather_px)
            img = m * img + (1 - m) * background[None]
        frames[start:start + b] = to_uint8(img)
        if progress is not None:
            progress(min(start + b, t), t)
    return frames
