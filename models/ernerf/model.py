"""ER-NeRF as one module: audio/eye conditioning, head field, occupancy grid, torso field,
per-frame appearance codes; rendering of ray bundles and of whole frames in batches."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from models.ernerf.audio import AudioConditioning, AudioConfig, EyeEncoder, audio_windows
from models.ernerf.fields import HeadField, HeadFieldConfig, TorsoField, TorsoFieldConfig
from models.ernerf.occupancy import OccupancyConfig, OccupancyGrid
from models.ernerf.rendering import (
    HeadConditioning,
    RenderConfig,
    camera_rays,
    composite,
    image_plane_coords,
    pixel_centers,
    render_head,
    render_torso,
)
from models.ernerf.timing import timed
from talkflow.errors import InputError


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    audio: AudioConfig = AudioConfig()
    head: HeadFieldConfig = HeadFieldConfig()
    torso: TorsoFieldConfig = TorsoFieldConfig()
    render: RenderConfig = RenderConfig()
    occupancy: OccupancyConfig = OccupancyConfig()
    num_appearance_codes: int = Field(10000, ge=1)  # reference ind_num; must exceed the training frames
    with_torso: bool = True
    pose_scale: float = 4.0  # camera translations are multiplied by this (reference --scale)


def autocast_for(device: torch.device, enabled: bool = True):
    """fp16 autocast on CUDA; a no-op elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled and device.type == "cuda")


class ERNeRF(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        a = cfg.audio
        self.audio = AudioConditioning(a)
        self.eye = EyeEncoder(a.eye_dim)
        self.head = HeadField(cfg.head, audio_dim=a.code_dim, eye_dim=a.eye_dim)
        self.grid = OccupancyGrid(cfg.occupancy, bound=cfg.head.bound)
        n = cfg.num_appearance_codes
        self.head_codes = nn.Parameter(torch.randn(n, cfg.head.appearance_dim) * 0.1)  # (n, A)
        self.torso = TorsoField(cfg.torso) if cfg.with_torso else None
        self.torso_codes = nn.Parameter(torch.randn(n, cfg.torso.appearance_dim) * 0.1) if cfg.with_torso else None
        self.register_buffer("eye_default", torch.zeros(1, 1))  # eye closure used when none is given

    @property
    def device(self) -> torch.device:
        return self.head_codes.device

    # ---------------------------------------------------------------------------- conditioning
    def world_pose(self, c2w: Tensor) -> Tensor:
        """(B, 4, 4) camera-to-world from transforms_*.json -> the model's world (scaled translation)."""
        out = c2w.clone().float()
        out[:, :3, 3] = out[:, :3, 3] * self.cfg.pose_scale
        return out

    def audio_codes(self, feats: Tensor, index: Tensor) -> Tensor:
        """feats (T, 16, D), index (B,) frame indices -> (B, C) attention-smoothed audio codes."""
        if feats.dim() != 3 or feats.shape[1] != self.cfg.audio.window:
            raise InputError(
                f"audio features must have shape (T, {self.cfg.audio.window}, D), got {tuple(feats.shape)}"
            )
        if feats.shape[2] != self.cfg.audio.in_dim:
            raise InputError(
                f"audio features have dimension D={feats.shape[2]} but the model expects D={self.cfg.audio.in_dim}; "
                "use the feature kind the model was trained with (see aud_feats.json)"
            )
        win = self.cfg.audio.att_window if self.cfg.audio.use_attention else 1
        windows = audio_windows(feats, index.to(feats.device), win).to(self.device)  # (B, W, 16, D)
        return self.audio(windows)

    def eye_codes(self, eye: Tensor | None, batch: int) -> Tensor:
        """eye closure (B, 1) in [0, 1] or None -> (B, E)."""
        if eye is None:
            eye = self.eye_default.expand(batch, 1)
        return self.eye(eye.to(self.device).float().view(batch, 1))

    def appearance(self, codes: Tensor | None, index: Tensor | None, batch: int) -> Tensor | None:
        """Per-frame latent codes (B, A); index None (new data) uses code 0 as the reference."""
        if codes is None or codes.shape[1] == 0:
            return None
        if index is None:
            return codes[:1].expand(batch, -1)
        return codes[index.to(self.device)]

    # ------------------------------------------------------------------------------- rendering
    def render_head_rays(self, origins: Tensor, dirs: Tensor, cond: HeadConditioning, jitter: Tensor | None = None,
                         with_uncertainty: bool = False) -> dict[str, Tensor]:
        return render_head(self.head, origins, dirs, cond, self.grid.occupied, self.cfg.render, jitter,
                           with_uncertainty)

    def render_torso_rays(self, coords: Tensor, pose_code: Tensor, appearance: Tensor | None,
                          background: Tensor) -> dict[str, Tensor]:
        if self.torso is None:
            raise InputError("this model was built without a torso field (with_torso=False)")
        return render_torso(self.torso, coords, pose_code, appearance, background)

    @torch.no_grad()
    def render_frames(self, feats: Tensor, c2w: Tensor, *, focal: float, cx: float, cy: float, height: int,
                      width: int, background: Tensor, aud_index: Tensor | None = None, eye: Tensor | None = None,
                      with_torso: bool | None = None, frames_per_batch: int | None = None,
                      mixed_precision: bool = True) -> np.ndarray:
        """Render F frames -> (F, H, W, 3) uint8.

        feats (T, 16, D) audio features of the clip; c2w (F, 4, 4) cameras (transforms_*.json axes and
        units); aud_index (F,) the audio frame of each video frame (default 0..F-1); eye (F, 1) eye
        closure or None (the training mean); background (H, W, 3) or one per frame (F, H, W, 3),
        float in [0, 1] or uint8; with_torso: composite the torso field over it (default: if built).
        Frames are rendered ``frames_per_batch`` at a time (None: as many as one chunk holds, at least
        one), their rays in chunks of render.chunk_for(device) (on CUDA: sized to the free memory).
        """
        was_training = self.training
        self.eval()
        dev = self.device
        n_frames = c2w.shape[0]
        aud_index = torch.arange(n_frames) if aud_index is None else aud_index.long()
        if aud_index.shape[0] != n_frames:
            raise InputError(f"got {n_frames} poses but {aud_index.shape[0]} audio indices; give one per frame")
        aud_index = aud_index.clamp(0, feats.shape[0] - 1)
        use_torso = (self.torso is not None) if with_torso is None else with_torso
        bg = background.to(dev)
        bg = (bg.float() / 255.0 if bg.dtype == torch.uint8 else bg.float()).reshape(-1, 3)  # (H*W | F*H*W, 3)
        per_frame_bg = background.dim() == 4  # (F, H, W, 3): one background per frame
        pixels = pixel_centers(height, width, dev)  # (H*W, 2)
        coords = image_plane_coords(pixels, height, width)
        out = np.empty((n_frames, height, width, 3), dtype=np.uint8)
        chunk = self.cfg.render.chunk_for(dev)
        frames_per_batch = frames_per_batch or max(1, chunk // (height * width))
        for start in range(0, n_frames, frames_per_batch):
            idx = torch.arange(start, min(start + frames_per_batch, n_frames))
            b = idx.shape[0]
            with autocast_for(dev, mixed_precision):
                audio = self.audio_codes(feats, aud_index[idx])  # (b, C)
            eyes = self.eye_codes(None if eye is None else eye[idx], b)
            app = self.appearance(self.head_codes, None, b)
            poses = self.world_pose(c2w[idx].to(dev))
            origins, dirs = camera_rays(poses, focal, cx, cy, pixels.expand(b, -1, -1))  # (b, HW, 3)
            pose_code = self.torso.pose_code(poses) if use_torso else None  # (b, 6)
            torso_app = self.appearance(self.torso_codes, None, b) if use_torso else None
            frame_of_ray = torch.arange(b, device=dev).repeat_interleave(height * width)  # (b*HW,)
            first_ray = idx.to(dev)[frame_of_ray] * (height * width)  # (b*HW,) start of its frame's background
            rgb = torch.empty(b * height * width, 3, device=dev)
            for s in range(0, b * height * width, chunk):
                sl = slice(s, s + chunk)
                f = frame_of_ray[sl]
                pix = torch.arange(sl.start, sl.start + f.shape[0], device=dev) % (height * width)
                cond = HeadConditioning(audio[f], eyes[f], None if app is None else app[f])
                with autocast_for(dev, mixed_precision):
                    head = self.render_head_rays(origins.reshape(-1, 3)[sl], dirs.reshape(-1, 3)[sl], cond)
                    back = bg[first_ray[sl] + pix] if per_frame_bg else bg[pix]
                    if use_torso:
                        t_app = None if torso_app is None else torso_app[f]
                        back = self.render_torso_rays(coords[pix], pose_code[f], t_app, back)["image"]
                with timed("compositing"):
                    rgb[sl] = composite(head["rgb"].float(), head["opacity"].float(), back.float())
            frames = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).view(b, height, width, 3)
            out[start:start + b] = frames.cpu().numpy()
        self.train(was_training)
        return out
