"""Training loop pieces for the three ER-NeRF stages (pure PyTorch, no orchestration).

- head: random rays over the frame, MSE + uncertainty weighting + regularisers, occupancy grid
  updated every 16 steps; the GT torso over bc.jpg is the background.
- lips: fine-tunes the head; even steps render the square around the lips as one patch and add
  the patch loss (LPIPS if registered, else the structural substitute) at weight 0.01; odd steps
  render rays_per_batch / 32^2 random 32x32 patches (64 at the reference's 65,536 rays) with the
  patch loss at weight 0.1 (the reference's --finetune_lips --patch_size 32).
- torso: trains the torso field only (head frozen) on the GT torso composited over bc.jpg.

Every stage keeps an EMA of its trained weights (the reference's torch_ema, decay 0.95 with its
warm-up min(decay, (1 + n) / (10 + n)), updated every 1,000 steps): the saved checkpoint holds both,
``load_model`` and ``evaluate`` use the EMA once it has been updated, a resume restores both.

GPU hot path: the training images, torso images and background live on the device (``DeviceData``;
frames that do not fit ``device_data_share`` of the GPU stay in pinned host memory and a step
uploads its frame asynchronously) and a step gathers its rays there; pixels, jitter, eye noise and
occupancy jitter are drawn by a generator on the device; losses stay on the device (``step``
returns tensors, ``train`` reads them back every ``sync_every`` steps); on CUDA the fused AdamW
takes the grad scaler's inf check on the device. The frame index is drawn on the host (a CPU
generator, no device round trip).

``Trainer.state_dict()`` holds everything a resume needs (model with occupancy grid, EMA, optimiser,
grad scaler, step, both generators' states).
Checkpoints are written locally with ``save``; every ``checkpoint_every`` steps the trainer saves
to ``checkpoint_dir/<stage>.pt`` and calls ``on_checkpoint(step, path)`` (the caller stores it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from models.checkpoint_io import save_atomic
from models.ernerf.dataset import ERNeRFDataset
from models.ernerf.losses import (
    PatchLoss,
    ambient_losses,
    make_patch_loss,
    mouth_landmark_distance,
    opacity_entropy,
    psnr,
    ssim,
    uncertainty_weighted_loss,
)
from models.ernerf.memory import usable_device_memory
from models.ernerf.model import ERNeRF, ModelConfig, autocast_for
from models.ernerf.rendering import HeadConditioning, camera_rays, composite, image_plane_coords
from models.ernerf.timing import timed
from models.ernerf.train_config import (  # noqa: F401  (the configs live there)
    HeadTrainConfig,
    LipsTrainConfig,
    TorsoTrainConfig,
    TrainConfig,
    stage_config,
)
from talkflow.errors import InputError

CHECKPOINT_VERSION = 2
OnCheckpoint = Callable[[int, Path], None]
Landmarker = Callable[[np.ndarray], np.ndarray]  # (H, W, 3) uint8 -> (68, 2) landmarks












def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def generator_on(device: torch.device) -> torch.Generator:
    """A generator that draws on ``device``; meta tensors (the CPU sync check, models/ernerf/syncguard.py)
    hold no values, so a host generator serves them."""
    return torch.Generator("cpu" if device.type == "meta" else device)


def read_checkpoint(path: Path) -> dict:
    """A trainer checkpoint, every tensor on the CPU whatever device wrote it: the RNG states must be
    CPU ByteTensors, and ``load_state_dict`` copies the rest onto the trainer's device."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _rect_pixels(rect: Tensor, device: torch.device | str = "cpu") -> tuple[Tensor, int, int]:
    """(row0, row1, col0, col1) -> pixel centres (h*w, 2) row-major (built on ``device``), h, w."""
    r0, r1, c0, c1 = (int(v) for v in rect)
    rows, cols = torch.meshgrid(torch.arange(r0, r1, device=device), torch.arange(c0, c1, device=device),
                                indexing="ij")
    return torch.stack([cols, rows], dim=-1).view(-1, 2).float() + 0.5, r1 - r0, c1 - c0


def _patch_pixels(corners: Tensor, side: int) -> Tensor:
    """corners (P, 2) (col, row) of the top-left pixels -> (P * side^2, 2) pixel centres, each patch
    row-major (the reference's random patches)."""
    k = torch.arange(side, device=corners.device)
    rows, cols = torch.meshgrid(k, k, indexing="ij")
    offsets = torch.stack([cols, rows], dim=-1).view(1, -1, 2)  # (1, side^2, 2)
    return (corners[:, None, :] + offsets).view(-1, 2).float() + 0.5


def _in_rect(pixels: Tensor, rect: Tensor) -> Tensor:
    r0, r1, c0, c1 = (int(v) for v in rect)
    col, row = pixels[:, 0].long(), pixels[:, 1].long()
    return (row >= r0) & (row < r1) & (col >= c0) & (col < c1)


def frames_on_device(nbytes: int, device: torch.device, share: float) -> bool:
    """Whether ``nbytes`` of training frames go to ``device``: on CUDA when they fit ``share`` of the
    memory the process may use; elsewhere always (on the CPU they are views), unless share is 0."""
    if share <= 0:
        return False
    if device.type != "cuda":
        return True
    return nbytes <= share * usable_device_memory(device)


@dataclass
class DeviceData:
    """The training split for the trainer's device (the reference's preload): a step gathers its rays'
    targets on the device. The frames are on the device when they fit its budget (``resident``; on
    the CPU these are views of the dataset's tensors, no copy); otherwise they stay on the host
    (pinned on CUDA) and a step uploads its frame without blocking. The rest is always on the device."""

    images: Tensor  # (N, H*W, 3) uint8
    torso: Tensor  # (N, H*W, 4) uint8 RGBA
    background: Tensor  # (H*W, 3) uint8
    poses: Tensor  # (N, 4, 4) float32, the model's world (scaled translations)
    eye: Tensor  # (N, 1) float32
    audio: Tensor  # (T, 16, D) float32
    aud_ids: Tensor  # (N,) int64
    resident: bool = True  # images and torso on the device
    _cached: tuple[int, Tensor, Tensor] | None = None  # (frame, images, torso) last uploaded

    @classmethod
    def load(cls, data: ERNeRFDataset, model: ERNeRF, device: torch.device, share: float = 1.0) -> DeviceData:
        n, hw = len(data), data.height * data.width
        images, torso = data.images.reshape(n, hw, 3), data.torso.reshape(n, hw, 4)
        resident = frames_on_device(images.nbytes + torso.nbytes, device, share)
        if resident:
            images, torso = images.to(device), torso.to(device)
        elif device.type == "cuda":  # page-locked: uploads run asynchronously
            images, torso = images.pin_memory(), torso.pin_memory()
        return cls(images=images, torso=torso, background=data.background.reshape(hw, 3).to(device),
                   poses=model.world_pose(data.poses).to(device), eye=data.eye.float().to(device),
                   audio=data.audio.float().to(device), aud_ids=data.aud_ids.long().to(device), resident=resident)

    def frame(self, i: int) -> tuple[Tensor, Tensor]:
        """Frame i's (H*W, 3) image and (H*W, 4) torso on the device."""
        if self.resident:
            return self.images[i], self.torso[i]
        if self._cached is None or self._cached[0] != i:
            device = self.background.device
            self._cached = (i, self.images[i].to(device, non_blocking=True),
                            self.torso[i].to(device, non_blocking=True))
        return self._cached[1], self._cached[2]

    def target(self, i: int, flat: Tensor) -> Tensor:
        """(R,) pixel indices of frame i -> (R, 3) gt_imgs colours in [0, 1]."""
        return self.frame(i)[0][flat].float() / 255

    def background_rgb(self, flat: Tensor) -> Tensor:
        """(R,) pixel indices -> (R, 3) bc.jpg colours in [0, 1]."""
        return self.background[flat].float() / 255

    def torso_over_background(self, i: int, flat: Tensor) -> Tensor:
        """(R,) pixel indices of frame i -> (R, 3): its torso_imgs over bc.jpg (the head stages'
        background; ERNeRFDataset.torso_over_background's formula, per gathered pixel)."""
        rgba = self.frame(i)[1][flat].float() / 255
        bg = self.background_rgb(flat)
        return rgba[:, :3] * rgba[:, 3:] + bg * (1 - rgba[:, 3:])


class WeightEMA:
    """Exponential moving average of parameters (the reference's torch_ema.ExponentialMovingAverage):
    shadow <- shadow - (1 - d) (shadow - param) with d = min(decay, (1 + n) / (10 + n)) at the n-th
    update. Unlike torch_ema, the shadow starts as the parameters at the FIRST update, not at the
    EMA's creation: else a schedule of a few EMA intervals keeps a tenth of the random initial
    weights in its final model (the first update's d is 1/10)."""

    def __init__(self, named: dict[str, Tensor], decay: float):
        self.decay = decay
        self.params = named
        self.shadow = {k: p.detach().clone() for k, p in named.items()}
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.updates else 0.0
        for k, p in self.params.items():
            self.shadow[k].sub_((1 - d) * (self.shadow[k] - p.detach()))
        self.updates += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Swap the shadow into the parameters for the duration (no-op before the first update)."""
        if not self.updates:
            yield
            return
        saved = {k: p.detach().clone() for k, p in self.params.items()}
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(self.shadow[k])
        try:
            yield
        finally:
            with torch.no_grad():
                for k, p in self.params.items():
                    p.copy_(saved[k])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


def _pad_patch(x: Tensor, side: int) -> Tensor:
    """(1, 3, h, w) -> padded with mid-grey to at least side x side (as the reference's zero in [-1, 1])."""
    ph, pw = max(0, side - x.shape[-2]), max(0, side - x.shape[-1])
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.5) if ph or pw else x


class Trainer:
    def __init__(self, model: ERNeRF, data: ERNeRFDataset, config: TrainConfig, *,
                 device: torch.device | str | None = None, checkpoint_dir: Path | None = None,
                 on_checkpoint: OnCheckpoint | None = None, patch_loss: PatchLoss | None = None,
                 lpips: Path | None = None):
        if data.audio_dim != model.cfg.audio.in_dim:
            raise InputError(
                f"the dataset's audio features have D={data.audio_dim} ({data.audio_kind}) but the model "
                f"expects D={model.cfg.audio.in_dim}; build the model with AudioConfig(in_dim={data.audio_dim})"
            )
        if len(data) > model.cfg.num_appearance_codes:
            raise InputError(f"{len(data)} training frames exceed num_appearance_codes="
                             f"{model.cfg.num_appearance_codes}; raise it in the ModelConfig")
        if config.stage == "torso" and model.torso is None:
            raise InputError("the torso stage needs a model built with with_torso=True")
        if config.checkpoint_every and checkpoint_dir is None:
            raise InputError("checkpoint_every needs a checkpoint_dir")
        self.device = torch.device(device) if device is not None else default_device()
        fresh_grid = int(model.grid.updates) == 0  # read before the move: no device read-back
        self.model = model.to(self.device)
        self.data = data
        self.cfg = config
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.on_checkpoint = on_checkpoint
        self.step_count = 0
        self.generator = torch.Generator().manual_seed(config.seed)  # host draws (frame indices)
        self.device_generator = generator_on(self.device).manual_seed(config.seed + 1)  # per-ray draws
        self.mp = config.mixed_precision and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.mp)
        cuda = self.device.type == "cuda"  # fused AdamW: the grad scaler's inf check stays on the device
        self.optimizer = torch.optim.AdamW(self._param_groups(), betas=config.betas, eps=config.eps,
                                           fused=True if cuda else None)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.patch_loss_kind, self.patch_loss = ("none", None)
        if config.stage == "lips":
            if patch_loss is not None:
                self.patch_loss_kind, self.patch_loss = "custom", patch_loss
            else:  # LPIPS-Alex when its weights are given, else the structural substitute
                self.patch_loss_kind, self.patch_loss = make_patch_loss(lpips, self.device)
        with torch.no_grad():
            self.model.eye_default.fill_(float(data.eye.mean()))
            if config.stage == "head" and fresh_grid:
                self.model.grid.mark_unseen(self.model.world_pose(data.poses), data.focal, data.cx, data.cy)
        self.dev = DeviceData.load(data, self.model, self.device, config.device_data_share)
        trained = {k: p for k, p in self.model.named_parameters() if p.requires_grad}
        self.ema = WeightEMA(trained, config.ema_decay) if config.ema_every else None

    # ------------------------------------------------------------------------------ optimiser
    def _param_groups(self) -> list[dict]:
        m, c = self.model, self.cfg
        for p in m.parameters():
            p.requires_grad_(False)
        if c.stage == "torso":
            groups = [
                {"params": [m.torso.grid.table], "lr": c.lr, "weight_decay": c.table_weight_decay},
                {"params": [*m.torso.deform_net.parameters(), *m.torso.color_net.parameters(), m.torso.anchors]
                 + ([m.torso_codes] if m.torso_codes.shape[1] else []), "lr": c.lr_net, "weight_decay": 0.0},
            ]
        else:
            h = m.head
            groups = [
                {"params": list(h.encoding.parameters()), "lr": c.lr, "weight_decay": c.table_weight_decay},
                {"params": [*m.audio.encoder.parameters(), *m.eye.parameters(), *h.sigma_net.parameters(),
                            *h.color_net.parameters(), *h.audio_att.parameters(), *h.eye_att.parameters(),
                            *h.uncertainty_net.parameters()]
                 + ([m.head_codes] if m.head_codes.shape[1] else []), "lr": c.lr_net, "weight_decay": 0.0},
            ]
            if m.audio.attention is not None:
                groups.append({"params": list(m.audio.attention.parameters()), "lr": c.lr_net * c.attention_lr_mult,
                               "weight_decay": c.attention_weight_decay})
        for g in groups:
            for p in g["params"]:
                p.requires_grad_(True)
        return [g for g in groups if g["params"]]

    def _set_lr(self) -> float:
        factor = self.cfg.lr_final_ratio ** min(self.step_count / self.cfg.steps, 1.0)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * factor
        return self.base_lrs[0] * factor

    # ------------------------------------------------------------------------------ sampling
    def _rand(self, *shape: int) -> Tensor:
        """U(0, 1) on the device."""
        return torch.rand(shape, generator=self.device_generator, device=self.device)

    def _randint(self, high: int, *shape: int) -> Tensor:
        """Integers in [0, high) on the device."""
        return torch.randint(high, shape, generator=self.device_generator, device=self.device)

    def _frame(self) -> int:
        """A random training frame, drawn on the host."""
        return int(torch.randint(len(self.data), (1,), generator=self.generator))

    def _frame_conditioning(self, i: int, train: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
        """audio (1, C), eye (1, E), head appearance (1, A) of training frame i."""
        m, dev = self.model, self.dev
        warm_up = train and self.step_count < self.cfg.attention_warmup_steps
        audio = m.audio_codes(dev.audio, dev.aud_ids[i:i + 1], centre_only=warm_up)
        eye = dev.eye[i:i + 1]
        if train and self.cfg.eye_noise:
            eye = eye + (self._rand(1, 1) - 0.5) * self.cfg.eye_noise
        index = torch.arange(i, i + 1, device=self.device)
        return audio, m.eye_codes(eye, 1), m.appearance(m.head_codes, index, 1)

    @torch.no_grad()
    def update_grid(self) -> None:
        """Re-query the head density (random training frame's audio and eye) into the occupancy grid."""
        j = self._frame()
        with autocast_for(self.device, self.mp):
            audio, eye, _ = self._frame_conditioning(j, train=False)
            self.model.grid.update(lambda x: self.model.head.density(x, audio, eye), self.device_generator)

    def _pixels(self, i: int, lips_step: bool, patch_step: bool) -> tuple[Tensor, tuple[int, ...] | None]:
        """The step's pixel centres (R, 2) on the device and, for patch losses, the image shape
        (patches, h, w) they form."""
        c, d = self.cfg, self.data
        if lips_step:
            pixels, ph, pw = _rect_pixels(d.lips_rects[i], self.device)
            return pixels, (1, ph, pw)
        if patch_step:
            side = min(c.random_patch_size, d.height, d.width)
            count = max(1, c.rays_per_batch // side**2)
            corners = torch.stack([self._randint(d.width - side + 1, count),
                                   self._randint(d.height - side + 1, count)], dim=-1)
            return _patch_pixels(corners, side), (count, side, side)
        flat = self._randint(d.height * d.width, c.rays_per_batch)
        return torch.stack([flat % d.width, flat // d.width], dim=-1).float() + 0.5, None

    # ----------------------------------------------------------------------------------- step
    def step(self) -> dict[str, Tensor | float]:
        """One optimisation step; returns loss, psnr (of the batch), samples_per_ray (and
        patch_loss) as 0-d tensors on the device (read them when needed: ``train`` does it every
        ``sync_every`` steps), and lr as a float."""
        c, m, d = self.cfg, self.model, self.data
        m.train()
        if c.stage != "torso" and self.step_count % m.cfg.occupancy.update_every == 0:
            self.update_grid()
        lr = self._set_lr()
        i = self._frame()
        lips_step = c.stage == "lips" and (not c.alternate_lips or self.step_count % 2 == 0)
        patch_step = c.stage == "lips" and not lips_step and c.random_patch_size > 0
        pixels, patch = self._pixels(i, lips_step, patch_step)
        flat = pixels[:, 1].long() * d.width + pixels[:, 0].long()  # (R,)
        with autocast_for(self.device, self.mp):
            if c.stage == "torso":
                loss, pred, target, extra = self._torso_loss(i, pixels, flat)
            else:
                weight = c.patch_weight if lips_step else c.random_patch_weight
                loss, pred, target, extra = self._head_loss(i, pixels, flat, patch, weight)
        with timed("backward"):  # backward pass and optimiser update
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.step_count += 1
        if self.ema is not None and self.step_count % c.ema_every == 0:
            self.ema.update()
        if c.checkpoint_every and self.step_count % c.checkpoint_every == 0:
            self._checkpoint()
        return {"loss": loss.detach(), "psnr": psnr(pred.detach(), target), "lr": lr, **extra}

    def _head_loss(self, i: int, pixels: Tensor, flat: Tensor, patch: tuple[int, ...] | None,
                   patch_weight: float = 0.0):
        c, m, d = self.cfg, self.model, self.data
        audio, eye, app = self._frame_conditioning(i)
        origins, dirs = camera_rays(self.dev.poses[i:i + 1], d.focal, d.cx, d.cy, pixels[None])
        origins, dirs = origins[0], dirs[0]  # (R, 3)
        target = self.dev.target(i, flat)  # (R, 3)
        bg = self.dev.torso_over_background(i, flat)
        face = _in_rect(pixels, d.face_rects[i])
        jitter = self._rand(origins.shape[0])
        unc = c.uncertainty_loss and patch is None
        out = m.render_head_rays(origins, dirs, HeadConditioning(audio, eye, app), jitter, with_uncertainty=unc)
        pred = composite(out["rgb"].float(), out["opacity"].float(), bg)
        err = (pred - target).pow(2).mean(dim=-1)  # (R,)
        if c.mouth_weight != 1.0 and patch is None:
            err = err * (1.0 + (c.mouth_weight - 1.0) * _in_rect(pixels, d.lips_rects[i]).to(err.dtype))
        sf = min(self.step_count / c.steps, 1.0)
        if unc:
            err = uncertainty_weighted_loss(err, pred, target, out["uncertainty"], face, sf)
        loss = err.mean() + c.lambda_entropy * opacity_entropy(out["opacity"])
        outside, overlap = ambient_losses(out["ambient_aud"], out["ambient_eye"], face, m.cfg.render.max_samples)
        loss = loss + sf * c.lambda_ambient * (outside + overlap)
        extra = {"samples_per_ray": out["num_samples"] / max(origins.shape[0], 1)}
        if patch is not None:
            n, h, w = patch
            to_img = lambda x: _pad_patch(x.view(n, h, w, 3).permute(0, 3, 1, 2), c.min_patch)  # noqa: E731
            patch_loss = self.patch_loss(to_img(pred), to_img(target))
            loss = loss + patch_weight * patch_loss
            extra["patch_loss"] = patch_loss.detach()
        if c.stage == "head" and c.lambda_smooth and self.step_count % c.smooth_every == 0:
            loss = loss + sf * c.lambda_smooth * self._smoothness(out["samples"], audio, eye, app)
        return loss, pred, target, extra

    def _smoothness(self, samples: tuple[Tensor, Tensor, Tensor], audio: Tensor, eye: Tensor,
                    app: Tensor | None) -> Tensor:
        """Attention maps and uncertainty should not change under a 1e-3 jitter of the points."""
        x, d, valid = samples  # (N, 3), (N, 3), (N,) bool: the mean runs over the valid samples
        head = self.model.head
        delta = (self._rand(*x.shape) * 2 - 1) * 1e-3
        app = None if app is None else app.detach()
        with torch.no_grad():
            ref = head(x, d, audio.detach(), eye.detach(), app)
        moved = head(x + delta, d, audio.detach(), eye.detach(), app)
        w = valid.to(x.dtype)
        count = w.sum().clamp(min=1)
        keys = ("uncertainty", "ambient_aud", "ambient_eye")
        return sum(((moved[k] - ref[k]).pow(2) * w).sum() / count for k in keys)

    def _torso_loss(self, i: int, pixels: Tensor, flat: Tensor):
        c, m, d = self.cfg, self.model, self.data
        pose = self.dev.poses[i:i + 1]
        coords = image_plane_coords(pixels, d.height, d.width)
        bg = self.dev.background_rgb(flat)
        target = self.dev.torso_over_background(i, flat)  # GT torso over bc.jpg
        app = m.appearance(m.torso_codes, torch.arange(i, i + 1, device=self.device), 1)
        out = m.render_torso_rays(coords, m.torso.pose_code(pose), app, bg)
        pred = out["image"].float()
        loss = (pred - target).pow(2).mean()
        loss = loss + c.lambda_anchor * (1 - m.torso.anchors[:, 3]).pow(2).mean()
        loss = loss + c.lambda_entropy * opacity_entropy(out["alpha"].float())
        return loss, pred, target, {}

    def train(self, steps: int | None = None, progress: Callable[[int, dict], None] | None = None) -> list[dict]:
        """Run until ``steps`` more steps (default: up to config.steps) are done; returns the step
        logs as floats. The device's figures are read back every ``sync_every`` steps (one host
        synchronisation per block) and before each checkpointing step, and ``progress(step, log)``
        is then called for each step of the block (so a checkpoint sees the progress of every step
        before it, as when logs were read every step)."""
        c = self.cfg
        end = c.steps if steps is None else self.step_count + steps
        logs: list[dict] = []
        pending: list[tuple[int, dict]] = []
        while self.step_count < end:
            pending.append((self.step_count + 1, self.step()))
            # the next step checkpoints: the caller's progress is brought up to date before it
            before_checkpoint = c.checkpoint_every and (self.step_count + 1) % c.checkpoint_every == 0
            if len(pending) >= c.sync_every or self.step_count >= end or before_checkpoint:
                for step, log in read_logs(pending):
                    logs.append(log)
                    if progress is not None:
                        progress(step, log)
                pending = []
        return logs

    # --------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "version": CHECKPOINT_VERSION,
            "ema": None if self.ema is None else self.ema.state_dict(),
            "device_rng": self.device_generator.get_state(),
            "stage": self.cfg.stage,
            "train_config": self.cfg.model_dump(mode="json"),
            "model_config": self.model.cfg.model_dump(mode="json"),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step_count,
            "rng": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") not in (1, CHECKPOINT_VERSION):  # 1: before the EMA and the device generator
            raise InputError(f"checkpoint version {state.get('version')} is not {CHECKPOINT_VERSION}")
        if state["stage"] != self.cfg.stage:
            raise InputError(f"checkpoint is from the {state['stage']} stage, this trainer runs {self.cfg.stage}; "
                             "load it with load_model() to start the next stage")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step_count = int(state["step"])
        self.generator.set_state(state["rng"].cpu())  # a state dict may come from any device map
        if "device_rng" in state:
            self.device_generator.set_state(state["device_rng"].cpu())
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])

    def save(self, path: Path) -> Path:
        """Write the trainer state to ``path`` atomically (temp file + rename)."""
        return save_atomic(self.state_dict(), path)

    def load(self, path: Path) -> None:
        self.load_state_dict(read_checkpoint(path))

    def _checkpoint(self) -> None:
        path = self.save(self.checkpoint_dir / f"{self.cfg.stage}.pt")
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.step_count, path)

    # ---------------------------------------------------------------------------- evaluation
    def render_frames(self, aud_feats: Tensor, poses: Tensor, *, eye: Tensor | None = None,
                      aud_index: Tensor | None = None, background: Tensor | None = None,
                      with_torso: bool | None = None, frames_per_batch: int | None = None) -> np.ndarray:
        """Render (F, H, W, 3) uint8 frames with the training camera intrinsics; background defaults
        to bc.jpg; the torso field is composited when the model has one (unless with_torso=False)."""
        d = self.data
        with self.final_weights():
            return self.model.render_frames(
                torch.as_tensor(aud_feats, dtype=torch.float32), torch.as_tensor(poses, dtype=torch.float32),
                focal=d.focal, cx=d.cx, cy=d.cy, height=d.height, width=d.width,
                background=d.background if background is None else background, aud_index=aud_index, eye=eye,
                with_torso=with_torso, frames_per_batch=frames_per_batch, mixed_precision=self.mp,
            )

    def final_weights(self):
        """Context in which the model holds the EMA weights (once the EMA has been updated)."""
        return self.ema.applied() if self.ema is not None else nullcontext()

    @torch.no_grad()
    def evaluate(self, val: ERNeRFDataset, *, max_frames: int | None = None,
                 landmarker: Landmarker | None = None) -> dict[str, float]:
        """PSNR, SSIM and LMD of rendered validation frames against gt_imgs.

        The head stages are evaluated over the GT torso (as the reference), the torso stage with the
        torso field. LMD needs ``landmarker`` (e.g. models.face.landmarks.largest_face_landmarks) for
        the rendered frames (ground truth: the dataset's .lms); it is NaN without one or when no face
        is found in any frame."""
        if val.audio_dim != self.model.cfg.audio.in_dim:
            raise InputError(f"validation audio features have D={val.audio_dim} but the model expects "
                             f"D={self.model.cfg.audio.in_dim}")
        n = len(val) if max_frames is None else min(max_frames, len(val))
        torso = self.cfg.stage == "torso"
        bgs = None if torso else torch.stack([val.torso_over_background(k) for k in range(n)])
        with self.final_weights():
            frames = self.model.render_frames(
                val.audio, val.poses[:n], focal=val.focal, cx=val.cx, cy=val.cy, height=val.height,
                width=val.width, background=val.background if torso else bgs, aud_index=val.aud_ids[:n],
                eye=val.eye[:n], with_torso=torso, mixed_precision=self.mp,
            )
        pred = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        gt = val.images[:n].permute(0, 3, 1, 2).float() / 255
        psnrs = [float(psnr(p, g)) for p, g in zip(pred, gt)]
        ssims = ssim(pred, gt).tolist()
        lmds = []
        if landmarker is not None:
            for k in range(n):
                try:
                    lms = torch.as_tensor(landmarker(frames[k]), dtype=torch.float32)
                except InputError:
                    continue
                lmds.append(float(mouth_landmark_distance(lms, val.landmarks[k])))
        return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
                "lmd": float(np.mean(lmds)) if lmds else math.nan}


def load_model(path: Path, device: torch.device | str = "cpu") -> ERNeRF:
    """Rebuild the final model of a trainer checkpoint (e.g. the head stage's, to start the lips
    stage, or to render): its EMA weights where the EMA has been updated, else the trained ones."""
    state = read_checkpoint(path)  # the optimiser's moments stay on the host; only the model moves
    model = ERNeRF(ModelConfig.model_validate(state["model_config"]))
    weights = dict(state["model"])
    ema = state.get("ema")
    if ema is not None and ema["updates"] > 0:
        weights.update(ema["shadow"])
    model.load_state_dict(weights)
    return model.to(device)


def read_logs(pending: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """Step logs holding 0-d device tensors -> the same logs with floats, in one device-to-host copy."""
    keys = [[k for k, v in log.items() if isinstance(v, Tensor)] for _, log in pending]
    flat = [log[k].float().reshape(()) for (_, log), ks in zip(pending, keys) for k in ks]
    values = iter(torch.stack(flat).tolist() if flat else [])
    return [(step, {k: (next(values) if k in ks else v) for k, v in log.items()})
            for (step, log), ks in zip(pending, keys)]
