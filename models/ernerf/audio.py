"""Audio and eye conditioning.

- ``AudioEncoder``: a window of feature frames (B, 16, D) -> per-frame audio code (B, C); a stack
  of strided 1D convolutions over the 16 feature frames then a small MLP (the reference AudioNet).
- ``AudioAttention``: smooths the codes of ``att_window`` neighbouring video frames with learned
  softmax weights (the reference AudioAttNet, bidirectional mode): (B, W, C) -> (B, C).
- ``audio_windows``: the window of neighbouring frames around each frame index; past the clip's
  ends it repeats the first / last frame (zeros there are codes no real frame has: they ghost the
  first frames of every render).
- ``eye_feature``: AU45 (OpenFace blink intensity, 0..5) -> eye closure in [0, 1];
  ``EyeEncoder`` -> the eye code fed to the head field (identity at dim 1, as the reference).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from talkflow.contract import FEATURE_DIMS  # noqa: F401 (the feature kinds' widths, re-exported)
from talkflow.errors import InputError

_LEAK = 0.02  # LeakyReLU slope of the reference audio nets


class AudioConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    in_dim: int = Field(80, ge=1,
        description="D of the audio features (aud_feats.npy): 80 log-mel by default (the reference: 29, DeepSpeech).")
    window: int = Field(16, description="Feature frames per video frame the encoder reads (16: 0.32 s at 50 Hz).")
    code_dim: int = Field(32, description="Size of the per-frame audio code (reference audio_dim).")
    att_window: int = Field(8,
        description="Neighbouring video frames the attention smooths over (reference att=2: 4 left, 4 right).")
    use_attention: bool = Field(True,
        description="Smooth the audio codes over neighbouring frames with the learnt attention.")
    eye_dim: int = Field(1, ge=1, description="Size of the eye code (the reference: the scalar eye closure itself).")


def _conv_block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv1d(c_in, c_out, kernel_size=3, stride=stride, padding=1), nn.LeakyReLU(_LEAK)]


class AudioEncoder(nn.Module):
    """(B, window, D) feature frames -> (B, code_dim). Four stride-2 convolutions halve the window
    16 -> 8 -> 4 -> 2 -> 1; channels 32, 32, 64, 64; then Linear 64-64-code_dim."""

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        if cfg.window != 16:
            raise ValueError(f"the audio encoder is built for a window of 16 feature frames, got {cfg.window}")
        self.in_dim = cfg.in_dim
        chans = [cfg.in_dim, 32, 32, 64, 64]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += _conv_block(c_in, c_out, stride=2)
        self.conv = nn.Sequential(*layers)
        self.mlp = nn.Sequential(nn.Linear(64, 64), nn.LeakyReLU(_LEAK), nn.Linear(64, cfg.code_dim))

    def forward(self, feats: Tensor) -> Tensor:
        """feats: (B, 16, D) -> (B, C)."""
        if feats.shape[-1] != self.in_dim:
            raise InputError(
                f"audio features have dimension D={feats.shape[-1]} but the model expects D={self.in_dim}; "
                "extract features of the kind the model was trained on"
            )
        h = self.conv(feats.transpose(1, 2))  # (B, D, 16) -> (B, 64, 1)
        return self.mlp(h.squeeze(-1))


class AudioAttention(nn.Module):
    """(B, W, C) codes of W neighbouring frames -> (B, C): softmax-weighted sum over the window.
    The weights come from 1D convolutions over the window (C -> 16 -> 8 -> 4 -> 2 -> 1 channels)
    and a Linear(W, W)."""

    def __init__(self, code_dim: int, window: int):
        super().__init__()
        chans = [code_dim, 16, 8, 4, 2, 1]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += _conv_block(c_in, c_out, stride=1)
        self.conv = nn.Sequential(*layers)
        self.window = window
        self.logits = nn.Linear(window, window)

    def weights(self, codes: Tensor) -> Tensor:
        """(B, W, C) codes -> (B, W) softmax weights over the window."""
        scores = self.conv(codes.transpose(1, 2)).squeeze(1)  # (B, W)
        return torch.softmax(self.logits(scores), dim=-1)

    def forward(self, codes: Tensor) -> Tensor:
        return (self.weights(codes)[..., None] * codes).sum(dim=1)  # (B, C)


def audio_windows(feats: Tensor, index: Tensor, att_window: int) -> Tensor:
    """Neighbouring frames' feature windows, the first / last frame repeated past the clip ends.

    feats: (T, 16, D); index: (B,) frame indices -> (B, att_window, 16, D) covering frames
    [i - att_window // 2, i + att_window // 2) (the reference's bidirectional window);
    att_window 1 gives just frame i.
    """
    t = feats.shape[0]
    left = att_window // 2 if att_window > 1 else 0
    offsets = torch.arange(att_window, device=index.device) - left  # (W,)
    frames = index[:, None] + offsets[None, :]  # (B, W)
    return feats[frames.clamp(0, t - 1)]  # (B, W, 16, D)


@torch.no_grad()
def attention_profile(cond: AudioConditioning, feats: Tensor, index: Tensor) -> dict:
    """How the trained attention weighs the neighbouring frames over the frames ``index`` (B,) of
    the clip's features (T, 16, D): the largest weight on any frame ("max"; near 1: collapsed onto
    one neighbour) and the mean weight per offset ("by_offset", offsets -W/2 .. W/2 - 1)."""
    window = cond.cfg.att_window if cond.cfg.use_attention else 1
    device = next(cond.parameters()).device
    w = cond.attention_weights(audio_windows(feats, index, window).to(device)).float().cpu()  # (B, W)
    return {"max": round(float(w.max()), 4), "by_offset": [round(float(v), 4) for v in w.mean(0)]}


def eye_feature(au45: Tensor) -> Tensor:
    """AU45 intensity (0 open .. 5 closed) -> eye closure in [0, 1] (reference: clip(AU45, 0, 2) / 2)."""
    return au45.clamp(0, 2) / 2


class EyeEncoder(nn.Module):
    """Eye closure (B, 1) -> eye code (B, eye_dim): identity at dim 1 (reference), else a Linear."""

    def __init__(self, eye_dim: int = 1):
        super().__init__()
        self.proj = nn.Identity() if eye_dim == 1 else nn.Linear(1, eye_dim)

    def forward(self, eye: Tensor) -> Tensor:
        return self.proj(eye)


class AudioConditioning(nn.Module):
    """Feature windows of neighbouring frames -> one smoothed audio code per frame."""

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = AudioEncoder(cfg)
        self.attention = AudioAttention(cfg.code_dim, cfg.att_window) if cfg.use_attention else None

    def forward(self, windows: Tensor) -> Tensor:
        """windows: (B, W, 16, D) -> (B, C); without attention, or given one frame (W = 1), the
        centre frame's code."""
        b, w = windows.shape[:2]
        codes = self.encoder(windows.flatten(0, 1)).view(b, w, -1)  # (B, W, C)
        if self.attention is None or w == 1:
            return codes[:, w // 2 if w > 1 else 0]
        return self.attention(codes)

    def attention_weights(self, windows: Tensor) -> Tensor:
        """(B, W, 16, D) -> (B, W) how much each neighbouring frame counts (one-hot at the centre
        without attention). A weight near 1 on one neighbour means the attention collapsed."""
        b, w = windows.shape[:2]
        if self.attention is None:
            return torch.nn.functional.one_hot(torch.full((b,), w // 2 if w > 1 else 0), w).float()
        return self.attention.weights(self.encoder(windows.flatten(0, 1)).view(b, w, -1))
