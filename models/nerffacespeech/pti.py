"""Pivotal Tuning Inversion (Roich et al. 2022, "Pivotal Tuning for Latent-based Editing of Real
Images") of the tri-plane generator on one portrait, as NeRFFaceSpeech does before animating it.

(a) **Inversion** (StyleGAN2's projector, as PTI runs it): one w (broadcast to all num_ws) starts
    at w_avg (mean of `w_avg_samples` mapped z, conditioned on the portrait's camera) and is
    optimised with Adam; the learning rate ramps up over the first 5 % of the steps and down with
    a cosine over the last 25 %; Gaussian noise of w_std * 0.05 * (1 - t / 0.75)^2 is added to w
    early on. The synthesis layers' `noise_const` buffers are optimised too, re-normalised to zero
    mean and unit variance after every step, and regularised: at every scale of an average-pooling
    pyramid (down to 8 px) the squared mean products of each buffer with itself shifted by one
    pixel (x and y) are penalised (weight 1e5), so the noise cannot encode the image.
    Loss: LPIPS (AlexNet, when its weights are given: `run_pti(lpips=...)`; the
    StyleGAN2 projector uses VGG-LPIPS, which is not an asset here) at <= 256 px. Without LPIPS
    weights the documented substitute is L2 + the structural patch loss of `models.ernerf.losses`
    ((1 - SSIM) at full and half resolution + L1 of image gradients).
(b) **Pivotal tuning**: w is frozen and the generator's weights are tuned (Adam, lr 3e-4, 350
    steps) on L2 + perceptual loss of the reconstruction (stop early when LPIPS < 0.06), plus the
    locality regulariser: for z ~ N(0, I), w_z = mapping(z) with truncation 0.5, and
    w_r = w_p + alpha (w_z - w_p) / |w_z - w_p| (alpha = 30: a step of fixed length from the pivot
    towards a random w); the tuned generator's image at w_r must stay close (0.1 L2 + 0.1
    perceptual) to the original generator's (noise off). The original generator is a frozen copy
    taken before tuning (NeRFFaceSpeech's copy of the PTI code passes the tuned generator itself
    as the "original", which makes the term vanish). The PTI code ships with the regulariser off;
    the paper describes it, and it is on here (`locality_weight`).

Defaults are the PTI paper/reference values at 512 px (450 inversion steps, lr 0.01; 350 tuning
steps, lr 3e-4); `PTIConfig.tiny()` is for tests. During optimisation the ray depths are
jittered (EG3D's stratified sampling); errors are measured with deterministic depths.

Deviations: the PTI reference discards the optimised noise buffers (it inverts a copy of G); here
they are kept in the tuned generator, which is then tuned with the noise the pivot was found
with. An optional geometry prior (not in PTI, `face_depth` / `depth_weight`) pulls the rendered
depth onto the fitted 3DMM's during tuning: for the small fallback generator, which has no face
prior of its own.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from models.checkpoint_io import save_atomic
from models.nerffacespeech.camera import Camera
from models.nerffacespeech.config import PTIConfig
from models.nerffacespeech.generator import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    TriplaneGenerator,
    from_uint8,
    generator_from_checkpoint,
)
from talkflow.errors import InputError

PTI_FORMAT = "talkflow.nerffacespeech.pti"
PTI_VERSION = 1

Progress = Callable[[str, int, int, float], None]  # (stage, step, total steps, loss)
ImageLoss = Callable[[Tensor, Tensor], Tensor]  # (B, 3, h, w) pred, target in [0, 1] -> scalar


@dataclass
class PTIResult:
    """G_PTI, w_PTI and bg_PTI of one portrait.

    `background` (bg_PTI) is the tuned generator's own rendering of the pivot from the portrait's
    camera, (3, S, S) in [-1, 1]: the static frame. NeRFFaceSpeech (StyleNeRF) inverts separate
    background latents and freezes them; an EG3D-style generator has no separate background field,
    so `render.render_frames` instead pastes this frame wherever the deformation moves nothing,
    which keeps the background and every still part of the head pixel-identical from frame to frame.
    """

    w_pivot: Tensor  # (1, num_ws, w_dim)
    generator_state: dict[str, Tensor]
    generator_config: dict
    camera_labels: Tensor  # (1, 25) the portrait's camera
    background: Tensor  # (3, S, S) in [-1, 1]
    losses: dict[str, list[float]] = field(default_factory=dict)  # per step: inversion, tuning, locality
    error_initial: float = float("nan")  # MSE ([-1, 1] units) at w_avg, original generator
    error_pivot: float = float("nan")  # after the inversion, original weights
    error_final: float = float("nan")  # after pivotal tuning
    loss_kind: str = "structural"  # "lpips" or "structural" (the substitute)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def camera(self) -> Camera:
        return Camera.from_labels(self.camera_labels)

    def generator(self, device: str | torch.device = "cpu") -> TriplaneGenerator:
        """The tuned generator G_PTI."""
        data = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": self.generator_config,
                "state_dict": self.generator_state}
        return generator_from_checkpoint(data, "PTI result").to(device)

    def state(self) -> dict:
        return {
            "format": PTI_FORMAT, "version": PTI_VERSION, "w_pivot": self.w_pivot.cpu(),
            "generator_state": {k: v.cpu() for k, v in self.generator_state.items()},
            "generator_config": self.generator_config, "camera_labels": self.camera_labels.cpu(),
            "background": self.background.cpu(), "losses": self.losses, "error_initial": self.error_initial,
            "error_pivot": self.error_pivot, "error_final": self.error_final, "loss_kind": self.loss_kind,
            "seconds": self.seconds,
        }

    def save(self, path: str | Path) -> Path:
        """Atomic write (temporary file, then rename); read back with `load_pti`."""
        return save_atomic(self.state(), path)


def load_pti(path: str | Path) -> PTIResult:
    """Read a `PTIResult.save` file with weights_only=True."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path} is not a readable PTI result ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(data, dict) or data.get("format") != PTI_FORMAT or data.get("version") != PTI_VERSION:
        raise InputError(f"{path} is not a talkflow PTI result (version {PTI_VERSION}); run PTI again")
    keys = ("w_pivot", "generator_state", "generator_config", "camera_labels", "background")
    if any(k not in data for k in keys):
        raise InputError(f"{path} lacks some of {', '.join(keys)}; run PTI again")
    return PTIResult(**{k: data[k] for k in (*keys, "losses", "error_initial", "error_pivot", "error_final",
                                             "loss_kind", "seconds")})


# ------------------------------------------------------------------------------------ losses
def perceptual_loss(lpips: Path | None = None, device: torch.device | str = "cpu") -> tuple[str, ImageLoss]:
    """("lpips", LPIPS-Alex) when its weights (alex.pth) are given, else ("structural", substitute)."""
    from models.ernerf.losses import make_patch_loss

    return make_patch_loss(lpips, device)


def noise_regularization(buffers: list[Tensor]) -> Tensor:
    """StyleGAN2 projector's noise regulariser over (R, R) buffers: squared mean one-pixel
    autocorrelations (x and y) at every pyramid level down to 8 px."""
    total = buffers[0].new_zeros(())
    for buf in buffers:
        v = buf[None, None]
        while True:
            total = total + (v * torch.roll(v, 1, dims=3)).mean() ** 2 + (v * torch.roll(v, 1, dims=2)).mean() ** 2
            if v.shape[2] <= 8:
                break
            v = F.avg_pool2d(v, 2)
    return total


def _normalize_noise(buffers: list[Tensor]) -> None:
    with torch.no_grad():
        for buf in buffers:
            buf -= buf.mean()
            buf *= buf.square().mean().rsqrt()


def _down(img: Tensor, size: int) -> Tensor:
    return F.interpolate(img, size=(size, size), mode="area") if img.shape[-1] > size else img


def _lr_ramp(t: float, cfg: PTIConfig) -> float:
    ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown) if cfg.lr_rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * (min(1.0, t / cfg.lr_rampup) if cfg.lr_rampup > 0 else 1.0)


@torch.no_grad()
def reconstruction_error(generator: TriplaneGenerator, ws: Tensor, target: Tensor, camera: Camera) -> float:
    """MSE between the deterministic rendering of ws (1, num_ws, w_dim) and target (1, 3, S, S)."""
    out = generator.synthesize(ws, camera, noise_mode="const", stratified=False)
    return float(F.mse_loss(out.image, target))


# ------------------------------------------------------------------------------- the two stages
def invert(generator: TriplaneGenerator, target: Tensor, camera: Camera, config: PTIConfig,
           loss: tuple[str, ImageLoss], progress: Progress | None = None) -> tuple[Tensor, list[float], Tensor]:
    """(a) Find the pivot: target (1, 3, S, S) in [-1, 1] -> w (1, num_ws, w_dim), losses, w_avg.

    Optimises `generator`'s noise buffers in place (its weights are left unchanged).
    """
    cfg = config
    dev = target.device
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    labels = camera.labels().to(dev)
    w_avg, w_std = generator.w_stats(cfg.w_avg_samples, labels, seed=123)
    generator.requires_grad_(False)
    buffers = list(generator.synthesis.noise_buffers().values())
    with torch.no_grad():
        for buf in buffers:
            buf.copy_(torch.randn(buf.shape, generator=g).to(dev))
    for buf in buffers:
        buf.requires_grad_(True)
    w_opt = w_avg.clone().requires_grad_(True)  # (1, 1, w_dim)
    opt = torch.optim.Adam([w_opt, *buffers], lr=cfg.inversion_lr, betas=(0.9, 0.999))
    kind, perceptual = loss
    l2_w = cfg.inversion_l2_weight if cfg.inversion_l2_weight is not None else (0.0 if kind == "lpips" else 1.0)
    size = min(cfg.loss_resolution, target.shape[-1])
    tgt = _down(target, size)
    tgt01 = (tgt + 1) / 2
    rng = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
    history = []
    n = generator.num_ws
    for step in range(cfg.inversion_steps):
        t = step / max(cfg.inversion_steps, 1)
        for group in opt.param_groups:
            group["lr"] = cfg.inversion_lr * _lr_ramp(t, cfg)
        w_noise_scale = w_std * cfg.initial_noise_factor * max(0.0, 1.0 - t / cfg.noise_ramp) ** 2
        w_noise = torch.randn(w_opt.shape, generator=g).to(dev) * w_noise_scale
        ws = (w_opt + w_noise).expand(-1, n, -1)
        img = _down(generator.synthesize(ws, camera, noise_mode="const", stratified=cfg.stratified, rng=rng).image,
                    size)
        dist = perceptual((img + 1) / 2, tgt01)
        if l2_w:
            dist = dist + l2_w * F.mse_loss(img, tgt)
        total = dist + cfg.noise_reg_weight * noise_regularization(buffers)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        _normalize_noise(buffers)
        history.append(float(dist.detach()))
        if progress is not None:
            progress("inversion", step + 1, cfg.inversion_steps, history[-1])
    for buf in buffers:
        buf.requires_grad_(False)
    return w_opt.detach().expand(-1, n, -1).clone(), history, w_avg.expand(-1, n, -1).clone()


def _locality_codes(original: TriplaneGenerator, w_pivot: Tensor, labels: Tensor, cfg: PTIConfig,
                    g: torch.Generator) -> Tensor:
    """(k, num_ws, w_dim) codes at distance alpha from the pivot, towards random truncated w_z."""
    z = torch.randn(cfg.locality_samples, original.cfg.z_dim, generator=g).to(w_pivot.device)
    with torch.no_grad():
        w_z = original.mapping_forward(z, labels.expand(cfg.locality_samples, -1), truncation_psi=cfg.locality_psi)
    direction = w_z - w_pivot
    norm = direction.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None]
    return w_pivot + cfg.locality_alpha * direction / norm


def locality_codes(original: TriplaneGenerator, w_pivot: Tensor, camera: Camera, config: PTIConfig,
                   seed: int) -> Tensor:
    """Public form of the regulariser's sampling (for measuring how far the tuning reaches)."""
    g = torch.Generator().manual_seed(seed)
    return _locality_codes(original, w_pivot, camera.labels().to(w_pivot.device), config, g)


def tune(generator: TriplaneGenerator, w_pivot: Tensor, target: Tensor, camera: Camera, config: PTIConfig,
         loss: tuple[str, ImageLoss], progress: Progress | None = None,
         face_depth: tuple[Tensor, Tensor] | None = None) -> dict[str, list[float]]:
    """(b) Tune `generator`'s weights in place around the frozen pivot; -> losses per step.

    face_depth: optional (depth (1, 1, r, r), mask (1, 1, r, r)) at the neural rendering
    resolution, e.g. `deform.FaceRig.depth_map`: adds depth_weight x mean |depth - face depth|
    over the mask.
    """
    cfg = config
    dev = target.device
    original = copy.deepcopy(generator).eval().requires_grad_(False)
    generator.train().requires_grad_(True)
    opt = torch.optim.Adam(generator.parameters(), lr=cfg.tuning_lr)
    kind, perceptual = loss
    size = min(cfg.loss_resolution, target.shape[-1])
    tgt = _down(target, size)
    tgt01 = (tgt + 1) / 2
    labels = camera.labels().to(dev)
    g = torch.Generator().manual_seed(cfg.seed + 2)
    rng = torch.Generator(device=dev).manual_seed(cfg.seed + 3)
    hist: dict[str, list[float]] = {"tuning": [], "tuning_perceptual": [], "locality": [], "depth": []}
    if face_depth is not None:
        d_target, d_mask = (x.to(dev) for x in face_depth)
        d_mask = d_mask.to(d_target.dtype)
        if d_target.shape[-1] != generator.cfg.neural_rendering_resolution:
            raise InputError(f"face_depth must be at the neural rendering resolution "
                             f"{generator.cfg.neural_rendering_resolution}, got {d_target.shape[-1]}")
    for step in range(cfg.tuning_steps):
        out = generator.synthesize(w_pivot, camera, noise_mode="const", stratified=cfg.stratified, rng=rng)
        img = _down(out.image, size)
        p = perceptual((img + 1) / 2, tgt01)
        total = cfg.tuning_l2_weight * F.mse_loss(img, tgt) + cfg.tuning_perceptual_weight * p
        if face_depth is not None and cfg.depth_weight > 0:
            dl = ((out.depth - d_target).abs() * d_mask).sum() / d_mask.sum().clamp_min(1.0)
            total = total + cfg.depth_weight * dl
            hist["depth"].append(float(dl.detach()))
        if kind == "lpips" and float(p) <= cfg.lpips_threshold:
            break
        loc = None
        if cfg.locality_weight > 0 and step % cfg.locality_every == 0:
            w_r = _locality_codes(original, w_pivot, labels, cfg, g)
            new = _down(generator.synthesize(w_r, camera, noise_mode="none").image, size)
            with torch.no_grad():
                old = _down(original.synthesize(w_r, camera, noise_mode="none").image, size)
            loc = (cfg.locality_l2_weight * F.mse_loss(new, old)
                   + cfg.locality_perceptual_weight * perceptual((new + 1) / 2, (old + 1) / 2))
            total = total + cfg.locality_weight * loc
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        hist["tuning"].append(float(total.detach()))
        hist["tuning_perceptual"].append(float(p.detach()))
        hist["locality"].append(float("nan") if loc is None else float(loc.detach()))
        if progress is not None:
            progress("tuning", step + 1, cfg.tuning_steps, hist["tuning"][-1])
    generator.eval().requires_grad_(False)
    return hist


def _target_tensor(image, size: int) -> Tensor:
    if isinstance(image, Tensor):
        t = image.float()
        t = t[None] if t.ndim == 3 else t
        if t.ndim != 4 or t.shape[:2] != (1, 3):
            raise InputError(f"target tensor must be (1, 3, H, W) in [-1, 1], got {tuple(t.shape)}")
        return F.interpolate(t, size=(size, size), mode="area") if t.shape[-1] > size else (
            F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False) if t.shape[-1] < size else t)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] != arr.shape[1]:
        raise InputError(f"the portrait must be a square HxWx3 image, got shape {arr.shape}; crop it square "
                         "round the face first")
    return from_uint8(arr, size)


def run_pti(generator: TriplaneGenerator, image, camera: Camera | None = None, config: PTIConfig = PTIConfig(),
            progress: Progress | None = None, face_depth: tuple[Tensor, Tensor] | None = None,
            lpips: Path | None = None) -> PTIResult:
    """PTI of `image` ((S, S, 3) uint8, or (1, 3, S, S) in [-1, 1]) seen from `camera`
    (default: the generator's frontal camera). `generator` itself is not modified.

    face_depth: the optional geometry prior for the tuning stage (see `tune`, `PTIConfig.depth_weight`).
    lpips: LPIPS-Alex weights (alex.pth) for the perceptual loss; None: the documented substitute.
    """
    from models.face3d.fit import cpu_threads

    with cpu_threads(config.cpu_threads if generator.device.type == "cpu" else None):
        return _run_pti(generator, image, camera, config, progress, face_depth, lpips)


def _run_pti(generator: TriplaneGenerator, image, camera: Camera | None, config: PTIConfig,
             progress: Progress | None, face_depth: tuple[Tensor, Tensor] | None,
             lpips: Path | None) -> PTIResult:
    dev = generator.device
    target = _target_tensor(image, generator.cfg.img_resolution).to(dev)
    camera = (camera if camera is not None else generator.default_camera()).to(dev)
    if camera.batch != 1:
        raise InputError(f"PTI inverts one view; got {camera.batch} cameras")
    loss = perceptual_loss(lpips, dev)
    times = {}
    work = copy.deepcopy(generator).eval()
    t0 = time.perf_counter()
    w_pivot, inv_hist, w_avg = invert(work, target, camera, config, loss, progress)
    times["inversion"] = time.perf_counter() - t0
    err_initial = reconstruction_error(generator, w_avg, target, camera)
    err_pivot = reconstruction_error(work, w_pivot, target, camera)
    t0 = time.perf_counter()
    hist = tune(work, w_pivot, target, camera, config, loss, progress, face_depth)
    times["tuning"] = time.perf_counter() - t0
    with torch.no_grad():
        background = work.synthesize(w_pivot, camera, noise_mode="const").image[0]
    err_final = float(F.mse_loss(background[None], target))
    cfg_json = work.cfg.model_dump(mode="json")
    return PTIResult(
        w_pivot=w_pivot.cpu(), generator_state={k: v.detach().cpu().clone() for k, v in work.state_dict().items()},
        generator_config=cfg_json, camera_labels=camera.labels().cpu(), background=background.cpu(),
        losses={"inversion": inv_hist, **hist}, error_initial=err_initial, error_pivot=err_pivot,
        error_final=err_final, loss_kind=loss[0], seconds=times,
    )
