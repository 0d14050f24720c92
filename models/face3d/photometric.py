"""Photometric refinement of a landmark track (ER-NeRF's second tracking stage), CPU-capable.

Rendering (`models.face3d.render`): a batched torch rasterizer for visibility, Lambertian shading
with 9 SH coefficients per colour channel and frame, the model's albedo (mean + texture modes).
Each frame renders only a square window round its face at `render_size` px; the target frames
are resampled into the same windows (area-averaged), so the cost does not grow with S.

Two stages, both batched over frames (Adam with a cosine decay to zero):
1. **shared**: on `tex_frames` evenly spread frames, fit the texture coefficients with those
   frames' lights, poses and expressions (and the identity when `lr_id > 0`; by default it
   stays the landmark fit's, estimated on every frame); every frame then starts from the mean
   of those lights.
2. **per chunk of frames**: refine euler, trans, exp and light of `chunk` frames at a time (on
   CUDA, as many frames as the free GPU memory holds: `frames_per_chunk`)
   (identity, texture and focal now fixed) on

       sum_t w_photo * E_t + w_lmk * mean_l |proj - lms|^2 + w_exp |exp_t|^2 + temporal

   where E_t is the mean robust (Charbonnier, ~L1) RGB error over the face pixels: the rendered
   coverage eroded by one pixel, and the caller's mask when given. The temporal term
   (acceleration of euler, trans, exp, as in `fit`) also spans the last two frames of the
   previous chunk, so chunks join smoothly.
The visibility is re-rasterized every `raster_every` steps; in between, gradients flow through
recomputed barycentrics. Silhouettes give no gradient (hard rasterization).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.face3d.camera import head_to_camera, principal_point, project
from models.face3d.config import PhotoConfig  # noqa: F401  (configs live there)
from models.face3d.fit import TrackResult, check_landmarks, cpu_threads
from models.face3d.morphable import MorphableModel
from models.face3d.render import Window, default_light, face_window, project_vertices, render_window, visibility
from talkflow.errors import InputError


def frame_bytes(model: MorphableModel, render_size: int) -> int:
    """Rough peak memory of one frame in a refinement step (forward + backward): vertex-sized
    tensors, window-sized pixel tensors, and the rasterizer's (triangle, pixel) candidates
    (about 4 per pixel, ~200 bytes each)."""
    return int(4 * 40 * 3 * model.n_vertices + 4 * 80 * render_size**2 + 200 * 4 * render_size**2)


def frames_per_chunk(config: PhotoConfig, model: MorphableModel, device: torch.device, n_frames: int) -> int:
    """Frames optimised together: `config.chunk` on the CPU; on CUDA as many as
    `gpu_memory_share` of the free memory holds (`torch.cuda.mem_get_info`), at least `chunk`."""
    if torch.device(device).type != "cuda":
        return config.chunk
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(config.gpu_memory_share * free) // frame_bytes(model, config.render_size)
    return max(config.chunk, min(n_frames, fits))


def _crop_origins(window: Window, size: int) -> tuple[Tensor, int]:
    """Integer top-left corners (B, 2) and one side of square crops of the image that hold every
    bilinear tap of each frame's window (2 px of margin, kept inside the image)."""
    lo = torch.floor(torch.stack([window.x0, window.y0], -1) - 2)  # (B, 2)
    side = int(min(size, torch.ceil(window.side.max()).item() + 5))
    return (lo.clamp(0, size - side)).long().cpu(), side


def _read_ahead(images, chunks: list[Tensor]) -> Iterator[list]:
    """The frames of each chunk of indices (from a tensor, an array or a sequence that decodes
    each frame when read); the next chunk is read on a thread while the caller works."""
    def read(idx: Tensor) -> list:
        return [images[int(i)] for i in idx]

    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(read, chunks[0]) if chunks else None
        for k in range(len(chunks)):
            frames = ahead.result()
            if k + 1 < len(chunks):
                ahead = pool.submit(read, chunks[k + 1])
            yield frames


def _as_frames(frames: list, size: int, device: torch.device, origins: Tensor, side: int) -> Tensor:
    """Crops (B, side, side, 3) float [0, 1] at `origins` of (S, S, 3) uint8 / float frames."""
    def crop(frame, o):
        if frame.shape != (size, size, 3):
            raise InputError(f"frames must be {size}x{size} RGB, got shape {tuple(frame.shape)}")
        part = frame[o[1]:o[1] + side, o[0]:o[0] + side]
        return part if isinstance(part, Tensor) else torch.from_numpy(np.array(part))  # a writable copy

    batch = torch.stack([crop(frame, o.tolist()) for frame, o in zip(frames, origins)])
    if batch.dtype == torch.uint8:
        return batch.to(device).float() / 255.0
    return batch.to(device).float()


def sample_windows(images: Tensor, window: Window, origins: Tensor | None = None) -> Tensor:
    """(B, H, W, C) images -> (B, R, R, C) window contents, area-averaged (supersampled x k).
    `origins` (B, 2): the image px of each image's top-left corner when they are crops."""
    r = window.size
    k = max(1, math.ceil(float(window.side.max()) / r))  # supersampling factor
    grid = (torch.arange(r * k, dtype=images.dtype, device=images.device) + 0.5) / (r * k)  # (Rk,) in [0, 1]
    x0, y0 = window.x0, window.y0
    if origins is not None:
        o = origins.to(images.device, images.dtype)
        x0, y0 = x0 - o[:, 0], y0 - o[:, 1]
    gx = x0[:, None] + grid[None] * window.side[:, None]  # (B, Rk) px of the (cropped) images
    gy = y0[:, None] + grid[None] * window.side[:, None]
    nx, ny = 2 * gx / images.shape[2] - 1, 2 * gy / images.shape[1] - 1  # grid_sample coords (align_corners=False)
    coords = torch.stack(torch.broadcast_tensors(nx[:, None, :], ny[:, :, None]), -1)  # (B, Rk, Rk, 2)
    out = F.grid_sample(images.permute(0, 3, 1, 2), coords, mode="bilinear", padding_mode="border",
                        align_corners=False)
    return F.avg_pool2d(out, k).permute(0, 2, 3, 1)


_EPS = 0.01  # colour difference below which the photometric error is quadratic


def _erode(mask: Tensor) -> Tensor:
    """(B, R, R) bool -> the mask without its border pixels (3x3 erosion)."""
    m = (~mask).float()[:, None]
    return ~(F.max_pool2d(m, 3, stride=1, padding=1)[:, 0] > 0)


def _smooth_term(cfg: PhotoConfig, theta: Tensor, before: Tensor | None) -> Tensor:
    """Acceleration penalty on (T, P) = (euler, trans, exp), continuing from `before` (2, P)."""
    x = theta if before is None else torch.cat([before, theta])
    if x.shape[0] < 3:
        return theta.new_zeros(())
    e = x.shape[1] - 6
    w = theta.new_tensor([cfg.w_smooth_euler] * 3 + [cfg.w_smooth_trans] * 3 + [cfg.w_smooth_exp] * e)
    acc = x[2:] - 2 * x[1:-1] + x[:-2]
    return (w * acc**2).sum()


@dataclass
class _Chunk:
    """Data of the frames optimised together."""

    target: Tensor  # (B, R, R, 3)
    user_mask: Tensor | None  # (B, R, R) bool
    window: Window
    lms: Tensor  # (B, 68, 2)


def _landmark_sq(model: MorphableModel, id: Tensor, exp: Tensor, euler: Tensor, trans: Tensor,
                 focal: float, size: int, lms: Tensor) -> Tensor:
    """-> (B,) mean squared landmark distance, px^2."""
    cx, cy = principal_point(size)
    px = project(head_to_camera(model.landmarks(id, exp), euler, trans), focal, cx, cy)
    return ((px - lms) ** 2).sum(-1).mean(-1)


@dataclass
class _Pixels:
    """The pixels the photometric term sees until the next visibility refresh: covered by the
    face (eroded by one pixel) and inside the caller's mask."""

    index: Tensor  # (S,) flat indices into (B, R, R)
    frame: Tensor  # (S,) frame of each pixel
    count: Tensor  # (B,) pixels per frame, at least 1
    target: Tensor  # (S, 3) the frames' colours there

    @staticmethod
    def select(pix_to_face: Tensor, chunk: _Chunk) -> _Pixels:
        mask = _erode(pix_to_face >= 0)
        if chunk.user_mask is not None:
            mask = mask & chunk.user_mask
        b, r = mask.shape[0], mask.shape[1]
        index = mask.reshape(-1).nonzero()[:, 0]
        frame = torch.div(index, r * r, rounding_mode="floor")
        count = torch.bincount(frame, minlength=b).clamp_min(1).to(chunk.target.dtype)
        return _Pixels(index, frame, count, chunk.target.reshape(-1, 3)[index])


def _photo_l1(colour: Tensor, pixels: _Pixels) -> Tensor:
    """(S, 3) rendered colours -> (B,) mean robust RGB error over each frame's pixels
    (Charbonnier, ~absolute error)."""
    diff = colour - pixels.target
    err = (torch.sqrt(diff * diff + _EPS**2) - _EPS).sum(-1)  # Charbonnier: L1 with a smooth bottom
    return err.new_zeros(pixels.count.shape).index_add(0, pixels.frame, err) / (3.0 * pixels.count)


def _windows(model: MorphableModel, track: TrackResult, idx: Tensor, cfg: PhotoConfig) -> Window:
    _, _, px = project_vertices(model, track.id, track.exp[idx], track.euler[idx], track.trans[idx],
                                track.focal, track.image_size)
    return face_window(px, cfg.render_size, cfg.margin)


def _load_chunk(frames: list, masks, lms: Tensor, idx: Tensor, window: Window, size: int) -> _Chunk:
    """Targets of frames `idx` (CPU indices; `frames` their images) on the device of `lms`."""
    origins, side = _crop_origins(window, size)
    target = sample_windows(_as_frames(frames, size, lms.device, origins, side), window, origins)
    user = None
    if masks is not None:
        m = torch.as_tensor(masks[idx.numpy()] if isinstance(masks, np.ndarray) else masks[idx])
        user = sample_windows(m.to(lms.device).float()[..., None], window)[..., 0] > 0.5
    return _Chunk(target, user, window, lms[idx.to(lms.device)])


def _adam_frames(model: MorphableModel, track: TrackResult, chunk: _Chunk, config: PhotoConfig,
                 params: dict[str, Tensor], iters: int, before: Tensor | None = None) -> Tensor:
    """Adam on the frames of `chunk`: `params` holds euler, trans, exp, light (B, ...), and
    optionally id / tex (shared); updated in place. Returns the last per-frame L1 (B,)."""
    lrs = {"euler": config.lr_euler, "trans": config.lr_trans, "exp": config.lr_exp, "light": config.lr_light,
           "id": config.lr_id, "tex": config.lr_tex}
    start = {k: v.detach().clone() for k, v in params.items()}
    for v in params.values():
        v.requires_grad_()
    opt = torch.optim.Adam([{"params": [v], "lr": lrs[k]} for k, v in params.items()])
    base = [g["lr"] for g in opt.param_groups]
    pix = None
    l1 = None
    for k in range(iters):
        decay = 0.5 * (1.0 + math.cos(math.pi * k / iters))  # cosine to zero: no jitter at the end
        for g, lr in zip(opt.param_groups, base):
            g["lr"] = lr * decay
        id = params.get("id", track.id)
        tex = params.get("tex", track.tex) if model.n_tex else None
        e, tr, x = params["euler"], params["trans"], params["exp"]
        opt.zero_grad(set_to_none=True)
        if k % config.raster_every == 0:  # visibility refresh
            pix = visibility(model, id, x, e, tr, track.focal, track.image_size, chunk.window)
            pixels = _Pixels.select(pix, chunk)
        out = render_window(model, id, x, e, tr, track.focal, track.image_size, chunk.window, tex=tex,
                            light=params["light"], pix_to_face=pix, pixels=pixels.index)
        l1 = _photo_l1(out.image, pixels)
        sq = _landmark_sq(model, id, x, e, tr, track.focal, track.image_size, chunk.lms)
        loss = (config.w_photo * l1 + config.w_lmk * sq).sum() + config.w_exp * (x**2).sum()
        loss = loss + _smooth_term(config, torch.cat([e, tr, x], -1), before)
        if "id" in params:
            loss = loss + config.w_id * e.shape[0] * (id**2).sum()
        if tex is not None and "tex" in params:
            loss = loss + config.w_tex * e.shape[0] * (tex**2).sum()
        if not torch.isfinite(loss):
            break  # keep the last finite state rather than propagate NaN
        loss.backward()
        opt.step()
    for key, v in params.items():
        v.requires_grad_(False)
        bad = ~torch.isfinite(v)
        if bad.any():  # should not happen; never hand NaN on
            v[bad] = start[key][bad]
    return l1.detach()


def fit_shared(images, model: MorphableModel, track: TrackResult, lms: Tensor, config: PhotoConfig = PhotoConfig(),
               masks=None) -> tuple[Tensor, Tensor, Tensor]:
    """Stage 1: on `tex_frames` evenly spread frames, fit the texture coefficients and lights
    (with those frames' pose and expression, and the identity when `lr_id > 0`).
    -> id (K_id,), tex (K_tex,), mean light (9, 3)."""
    t = track.n_frames
    idx = torch.linspace(0, t - 1, min(config.tex_frames, t)).round().long().unique()  # CPU: frames to read
    di = idx.to(lms.device)
    frames = [images[int(i)] for i in idx]
    chunk = _load_chunk(frames, masks, lms, idx, _windows(model, track, di, config), track.image_size)
    params = {
        "euler": track.euler[di].clone(), "trans": track.trans[di].clone(), "exp": track.exp[di].clone(),
        "light": default_light(len(idx), device=lms.device), "tex": lms.new_zeros(model.n_tex),
    }
    if config.lr_id > 0:
        params["id"] = track.id.clone()
    _adam_frames(model, track, chunk, config, params, config.tex_iters)
    return params.get("id", track.id), params["tex"], params["light"].mean(0)


def refine_photometric(images, lms: Tensor, model: MorphableModel, track: TrackResult,
                       config: PhotoConfig = PhotoConfig(), masks=None) -> TrackResult:
    """Refine a landmark track on the frames themselves; returns a new TrackResult.

    images: (T, S, S, 3) uint8 or float in [0, 1] (tensor, array, or a sequence of frames read
    lazily chunk by chunk); lms: (T, 68, 2) the landmarks the track was fitted to; masks:
    optional (T, S, S) bool face masks (e.g. the head label of the parsing).
    """
    size = track.image_size
    lms = check_landmarks(lms, size)
    t = track.n_frames
    if lms.shape[0] != t or len(images) != t:
        raise InputError(f"got {len(images)} frames and {lms.shape[0]} landmark sets for a track of {t} frames")
    if masks is not None and len(masks) != t:
        raise InputError(f"got {len(masks)} masks for {t} frames")
    if model.n_id != track.id.shape[0] or model.n_exp != track.exp.shape[1]:
        raise InputError("the track was fitted with a different model (coefficient counts differ)")
    device = track.euler.device  # everything runs where the track is (frames are read, then moved)
    lms, model = lms.to(device), model.to(device=device)
    with cpu_threads(config.cpu_threads):
        return _refine(images, lms, model, track, config, masks)


def _refine(images, lms: Tensor, model: MorphableModel, track: TrackResult, config: PhotoConfig,
            masks) -> TrackResult:
    id, tex, light0 = fit_shared(images, model, track, lms, config, masks)
    track = replace(track, id=id, tex=tex)
    t, size = track.n_frames, track.image_size
    euler, trans, exp = track.euler.clone(), track.trans.clone(), track.exp.clone()
    light = light0.expand(t, 9, 3).clone()
    photo = lms.new_zeros(t)
    before = None
    step = frames_per_chunk(config, model, lms.device, t)
    chunks = [torch.arange(start, min(start + step, t)) for start in range(0, t, step)]  # CPU: frames to read
    for idx, frames in zip(chunks, _read_ahead(images, chunks)):
        di = idx.to(lms.device)
        win = _windows(model, replace(track, euler=euler, trans=trans, exp=exp), di, config)
        chunk = _load_chunk(frames, masks, lms, idx, win, size)
        params = {"euler": euler[di].clone(), "trans": trans[di].clone(), "exp": exp[di].clone(),
                  "light": light[di].clone()}
        photo[di] = _adam_frames(model, track, chunk, config, params, config.iters, before)
        euler[di], trans[di], exp[di], light[di] = (params[k] for k in ("euler", "trans", "exp", "light"))
        before = torch.cat([euler[di], trans[di], exp[di]], -1)[-2:]
    cx, cy = principal_point(size)
    px = project(head_to_camera(model.landmarks(id, exp), euler, trans), track.focal, cx, cy)
    err = (px - lms).norm(dim=-1).mean(-1)
    info = dict(track.info, photo_l1=photo)
    return replace(track, euler=euler, trans=trans, exp=exp, lmk_err=err, light=light, info=info)
