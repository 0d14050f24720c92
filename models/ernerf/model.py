"""ER-NeRF as one module: audio/eye conditioning, head field, occupancy grid, torso field,
per-frame appearance codes; rendering of ray bundles and of whole frames in batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from models.ernerf.amp import autocast_for
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

    audio: AudioConfig = Field(AudioConfig(),
        description="Audio conditioning: features -> per-frame code, smoothed by attention.")
    head: HeadFieldConfig = Field(HeadFieldConfig(), description="The head field (tri-plane hash grids and MLPs).")
    torso: TorsoFieldConfig = Field(TorsoFieldConfig(),
        description="The torso field (2D hash grid deformed by the head pose).")
    render: RenderConfig = Field(RenderConfig(), description="Ray marching and frame rendering.")
    occupancy: OccupancyConfig = Field(OccupancyConfig(), description="The occupancy grid that skips empty space.")
    num_appearance_codes: int = Field(10000, ge=1,
        description="Per-frame appearance codes (reference ind_num); must exceed the training frames.")
    with_torso: bool = Field(True, description="Build the torso field.")
    pose_scale: float = Field(4.0, description="Camera translations are multiplied by this (reference --scale).")


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

    def audio_codes(self, feats: Tensor, index: Tensor, centre_only: bool = False) -> Tensor:
        """feats (T, 16, D), index (B,) frame indices -> (B, C) attention-smoothed audio codes;
        centre_only: each frame's own code, the attention skipped (training's warm-up)."""
        if feats.dim() != 3 or feats.shape[1] != self.cfg.audio.window:
            raise InputError(
                f"audio features must have shape (T, {self.cfg.audio.window}, D), got {tuple(feats.shape)}"
            )
        if feats.shape[2] != self.cfg.audio.in_dim:
            raise InputError(
                f"audio features have dimension D={feats.shape[2]} but the model expects D={self.cfg.audio.in_dim}; "
                "use the feature kind the model was trained with (see aud_feats.json)"
            )
        win = self.cfg.audio.att_window if self.cfg.audio.use_attention and not centre_only else 1
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
        Every frame's conditioning goes to the device once; frames are then rendered
        ``frames_per_batch`` at a time (None: as many as one chunk holds, at least one), their rays in
        chunks of render.chunk_for(device) (on CUDA: sized to the memory the process may use), each
        batch downloaded while the next one renders (``HostFrames``).
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
        hw = height * width
        bg = background.to(dev)
        bg = (bg.float() / 255.0 if bg.dtype == torch.uint8 else bg.float()).reshape(-1, 3)  # (H*W | F*H*W, 3)
        per_frame_bg = background.dim() == 4  # (F, H, W, 3): one background per frame
        inputs = self.frame_inputs(feats, c2w, aud_index, eye, use_torso, mixed_precision)
        view = FrameView(focal, cx, cy, height, width)
        chunk = self.cfg.render.chunk_for(dev)
        frames_per_batch = frames_per_batch or max(1, chunk // hw)
        sink = HostFrames(n_frames, height, width, dev)
        for start in range(0, n_frames, frames_per_batch):
            stop = min(start + frames_per_batch, n_frames)
            back = bg[start * hw:stop * hw] if per_frame_bg else bg
            rgb = self.render_batch(inputs.frames(start, stop), view, back, chunk, mixed_precision)
            sink.put(start, rgb_to_uint8(rgb).view(stop - start, height, width, 3))
        self.train(was_training)
        return sink.finish()

    def frame_inputs(self, feats: Tensor, c2w: Tensor, aud_index: Tensor, eye: Tensor | None, use_torso: bool,
                     mixed_precision: bool = True, group: int = 1024) -> FrameInputs:
        """Every frame's conditioning on the device (audio codes computed ``group`` frames at a time)."""
        dev, n = self.device, c2w.shape[0]
        with autocast_for(dev, mixed_precision):
            audio = torch.cat([self.audio_codes(feats, aud_index[s:s + group]) for s in range(0, n, group)])
        poses = self.world_pose(c2w.to(dev))
        return FrameInputs(
            audio=audio, eye=self.eye_codes(None if eye is None else eye, n), poses=poses,
            appearance=self.appearance(self.head_codes, None, 1),
            pose_code=self.torso.pose_code(poses) if use_torso else None,
            torso_appearance=self.appearance(self.torso_codes, None, 1) if use_torso else None,
        )

    def render_batch(self, inputs: FrameInputs, view: FrameView, background: Tensor, chunk: int,
                     mixed_precision: bool = True) -> Tensor:
        """b frames' rays in chunks, on the device only -> (b * H * W, 3) float rgb over ``background``
        ((H * W, 3) shared or (b * H * W, 3) per frame); the torso is composited when
        ``inputs.pose_code`` is set. No host synchronisation (tests/test_ernerf_fast.py checks it)."""
        dev, hw = self.device, view.height * view.width
        b = inputs.poses.shape[0]
        pixels = pixel_centers(view.height, view.width, dev)  # (H*W, 2)
        origins, dirs = camera_rays(inputs.poses, view.focal, view.cx, view.cy, pixels.expand(b, -1, -1))
        origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)  # (b*HW, 3)
        coords = image_plane_coords(pixels, view.height, view.width)
        frame_of_ray = torch.arange(b, device=dev).repeat_interleave(hw)  # (b*HW,)
        per_ray_bg = background.shape[0] == b * hw
        rgb = torch.empty(b * hw, 3, device=dev)
        for s in range(0, b * hw, chunk):
            sl = slice(s, min(s + chunk, b * hw))
            f = frame_of_ray[sl]
            pix = torch.arange(sl.start, sl.stop, device=dev) % hw
            app = inputs.appearance
            cond = HeadConditioning(inputs.audio[f], inputs.eye[f], None if app is None else app.expand(b, -1)[f])
            with autocast_for(dev, mixed_precision):
                head = self.render_head_rays(origins[sl], dirs[sl], cond)
                back = background[sl] if per_ray_bg else background[pix]
                if inputs.pose_code is not None:
                    t_app = inputs.torso_appearance
                    t_app = None if t_app is None else t_app.expand(b, -1)[f]
                    back = self.render_torso_rays(coords[pix], inputs.pose_code[f], t_app, back)["image"]
            with timed("compositing"):
                rgb[sl] = composite(head["rgb"].float(), head["opacity"].float(), back.float())
        return rgb


@dataclass
class FrameView:
    """The training camera's intrinsics and the frame size."""

    focal: float
    cx: float
    cy: float
    height: int
    width: int


@dataclass
class FrameInputs:
    """Per-frame conditioning of F frames on the device: audio (F, C), eye (F, E), poses (F, 4, 4)
    in the model's world, pose_code (F, 6) or None (no torso); appearance codes (1, A) or None."""

    audio: Tensor
    eye: Tensor
    poses: Tensor
    appearance: Tensor | None
    pose_code: Tensor | None
    torso_appearance: Tensor | None

    def frames(self, start: int, stop: int) -> FrameInputs:
        """Frames [start, stop) (slices: views, no copy)."""
        def cut(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[start:stop]

        return FrameInputs(self.audio[start:stop], self.eye[start:stop], self.poses[start:stop], self.appearance,
                           cut(self.pose_code), self.torso_appearance)


def rgb_to_uint8(rgb: Tensor) -> Tensor:
    return (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8)


class HostFrames:
    """Collects rendered (b, H, W, 3) uint8 batches from the device into one (F, H, W, 3) array.
    On CUDA each batch is copied asynchronously into pinned memory and moved into the array only
    when the next batch has been queued, so the host waits for a batch while the GPU renders the
    following one; elsewhere the copy is immediate."""

    def __init__(self, n_frames: int, height: int, width: int, device: torch.device):
        self.out = np.empty((n_frames, height, width, 3), dtype=np.uint8)
        self.cuda = device.type == "cuda"
        self.pending: list[tuple[int, Tensor, torch.cuda.Event]] = []

    def put(self, start: int, frames: Tensor) -> None:
        if not self.cuda:
            self.out[start:start + frames.shape[0]] = frames.cpu().numpy()
            return
        host = torch.empty(frames.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(frames, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        self.pending.append((start, host, done))
        self._drain(keep=1)

    def _drain(self, keep: int) -> None:
        while len(self.pending) > keep:
            start, host, done = self.pending.pop(0)
            done.synchronize()
            self.out[start:start + host.shape[0]] = host.numpy()

    def finish(self) -> np.ndarray:
        self._drain(keep=0)
        return self.out
