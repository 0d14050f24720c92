"""Audio -> per-frame expression coefficients (T, K_exp) of the face3d expression basis.

NeRFFaceSpeech drives its 3DMM with SadTalker's audio-to-expression network (log-mel windows of
16 steps per video frame -> 64 BFM expression coefficients). Here the mapping is pluggable:

- `AudioToExpression`: the interface, `predict(samples, sr, fps) -> (T, K_exp)` with
  T = `talkflow.contract.frame_count` (the frame count of `speech_envelope`).
- `load_audio2exp(path)`: user weights of the small documented network `MelToExpression`
  (log-mel windows (T, 16, 80) from `models.audio.features`, normalised per band, three 1-D
  convolutions over the 16 steps (80 -> H -> H -> H, strides 1, 2, 2, leaky ReLU), mean over
  time, a linear layer -> K_exp), saved by `save_audio2exp` and read with weights_only=True.
- `PhoneticAudioToExpression` (built in, no weights): drives the mouth modes of the face3d
  expression basis (generic model and converted BFM share the names) from the speech's phones:
  the phone timeline (forced alignment when the text is known, else phone recognition;
  `models.audio.alignment`) -> coarticulated visemes per frame (`models.audio.visemes`; loudness
  only as intensity) -> jaw_open = jaw_gain x opening, lips_stretch = stretch_gain x spread,
  lips_pucker = pucker_gain x rounding. The lip closure of /p b m/ is one of its curves, for the
  warp renderer, which presses the portrait's lips together (a smiling photo shows its teeth).
  Both renderers (the generator's ray deformation and the portrait warp) take these coefficients.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from models.checkpoint_io import save_atomic
from models.nerffacespeech.config import PhoneticDriverConfig
from talkflow.contract import VIDEO_FPS, frame_count
from talkflow.errors import AssetMissing, InputError

A2E_FORMAT = "talkflow.nerffacespeech.audio2exp"
A2E_VERSION = 1
MOUTH_MODES = ("jaw_open", "lips_stretch", "lips_pucker")


def n_video_frames(n_samples: int, sr: int, fps: float) -> int:
    """Frames covering the audio: the contract's rule (`talkflow.contract.frame_count`)."""
    return frame_count(n_samples, sr, fps)


def _mono(samples: np.ndarray, sr: int, fps: float) -> np.ndarray:
    x = np.asarray(samples)
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    x = x.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1:
        raise InputError(f"expected audio samples (N,) or (N, channels), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("the audio has NaN/inf samples")
    if sr <= 0 or fps <= 0 or sr < fps:
        raise InputError(f"bad rates: sample_rate={sr}, fps={fps}")
    return x


class AudioToExpression(ABC):
    """Audio -> expression coefficients of a morphable model with `n_exp` expression modes."""

    n_exp: int

    @abstractmethod
    def predict(self, samples: np.ndarray, sr: int, fps: float = VIDEO_FPS, text: str | None = None) -> np.ndarray:
        """samples (N,) or (N, C) float in [-1, 1] or int16 -> (T, n_exp) float32; `text`: what is
        said, when known (a driver may use it)."""


# ----------------------------------------------------------------------- the phonetic driver


class PhoneticAudioToExpression(AudioToExpression):
    """The built-in, weight-free driver: the speech's phone timeline (aligned to the text when it is
    known, else recognised) -> visemes per frame -> jaw_open, lips_stretch and lips_pucker; the
    lip closure (/p b m/) is returned beside them by `curves` for renderers that press the lips."""

    def __init__(self, exp_names: tuple[str, ...] | None = None, config: PhoneticDriverConfig = PhoneticDriverConfig()):
        if exp_names is None:
            from models.face3d.morphable import generic_model

            exp_names = generic_model().exp_names
        missing = [m for m in MOUTH_MODES if m not in exp_names]
        if missing:
            raise InputError(f"the expression basis has no {', '.join(missing)} mode (names: {list(exp_names)}); "
                             "the phonetic driver needs the face3d mouth modes")
        self.exp_names = tuple(exp_names)
        self.n_exp = len(exp_names)
        self.index = {m: self.exp_names.index(m) for m in MOUTH_MODES}
        self.config = config

    def curves(self, samples: np.ndarray, sr: int, fps: float = VIDEO_FPS, text: str | None = None) -> dict:
        """The (T,) curves: loudness, the four viseme channels, the three mode weights, and the
        phone timeline (``timeline``) they came from."""
        from models.audio.alignment import speech_phones
        from models.audio.visemes import viseme_tracks
        from models.synth.talking_photo import speech_envelope

        cfg = self.config
        x = _mono(samples, sr, fps)
        t = n_video_frames(x.shape[0], sr, fps)
        env = speech_envelope(x, sr, fps)[:t] if t else np.zeros(0, np.float32)
        timeline = speech_phones(x, sr, text) if t else None
        mouth = viseme_tracks(timeline, t, fps, loudness=env, config=cfg.visemes) if t else \
            {c: np.zeros(0, np.float32) for c in ("opening", "width", "rounding", "closure")}
        out = {"envelope": env, **mouth,
               "jaw_open": cfg.jaw_gain * mouth["opening"],
               "lips_stretch": cfg.stretch_gain * np.maximum(mouth["width"], 0.0),
               "lips_pucker": cfg.pucker_gain * mouth["rounding"]}
        out = {k: np.asarray(v, np.float32) for k, v in out.items()}
        out["timeline"] = timeline
        return out

    def expressions(self, curves: dict) -> np.ndarray:
        """(T, n_exp) coefficients of `curves`' mouth modes (the rest 0)."""
        out = np.zeros((curves["envelope"].shape[0], self.n_exp), np.float32)
        for m in MOUTH_MODES:
            out[:, self.index[m]] = curves[m]
        return out

    def predict(self, samples: np.ndarray, sr: int, fps: float = VIDEO_FPS, text: str | None = None) -> np.ndarray:
        return self.expressions(self.curves(samples, sr, fps, text))


# ----------------------------------------------------------------------------- the network
class MelToExpression(nn.Module):
    """Log-mel windows (T, window, n_mels) -> expression coefficients (T, n_exp)."""

    def __init__(self, n_exp: int, n_mels: int = 80, window: int = 16, hidden: int = 128):
        super().__init__()
        self.n_exp, self.n_mels, self.window, self.hidden = n_exp, n_mels, window, hidden
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))
        self.conv0 = nn.Conv1d(n_mels, hidden, 3, padding=1)
        self.conv1 = nn.Conv1d(hidden, hidden, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(hidden, hidden, 3, stride=2, padding=1)
        self.head = nn.Linear(hidden, n_exp)

    def forward(self, windows: Tensor) -> Tensor:
        x = ((windows - self.mel_mean) / self.mel_std).transpose(1, 2)  # (T, n_mels, window)
        for conv in (self.conv0, self.conv1, self.conv2):
            x = nn.functional.leaky_relu(conv(x), 0.2)
        return self.head(x.mean(-1))


class NetworkAudioToExpression(AudioToExpression):
    """`MelToExpression` weights applied to windowed log-mel features."""

    def __init__(self, net: MelToExpression, exp_names: tuple[str, ...] = (), device: str | torch.device = "cpu"):
        self.net = net.eval().to(device)
        self.n_exp = net.n_exp
        self.exp_names = tuple(exp_names)
        self.device = torch.device(device)

    @torch.no_grad()
    def predict(self, samples: np.ndarray, sr: int, fps: float = VIDEO_FPS, text: str | None = None) -> np.ndarray:
        from models.audio.features import log_mel, to_mono_16k, window_features

        x = _mono(samples, sr, fps)
        t = n_video_frames(x.shape[0], sr, fps)
        if t == 0:
            return np.zeros((0, self.n_exp), np.float32)
        steps = log_mel(to_mono_16k(x, sr))  # (L, 80) at 50 Hz
        if steps.shape[1] != self.net.n_mels:
            raise InputError(f"the network expects {self.net.n_mels} mel bands, the features have {steps.shape[1]}")
        win = window_features(steps, t, self.net.window, video_fps=fps)  # (T, window, 80)
        out = self.net(torch.from_numpy(win).to(self.device))
        return out.float().cpu().numpy()


def save_audio2exp(net: MelToExpression, path: str | Path, exp_names: tuple[str, ...] = ()) -> Path:
    """Write weights for `load_audio2exp` (plain tensors and numbers only)."""
    return save_atomic({"format": A2E_FORMAT, "version": A2E_VERSION, "n_exp": net.n_exp, "n_mels": net.n_mels,
                        "window": net.window, "hidden": net.hidden, "exp_names": list(exp_names),
                        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}, path)


def load_audio2exp(path: str | Path, device: str | torch.device = "cpu") -> NetworkAudioToExpression:
    """User weights of `MelToExpression` (see `save_audio2exp`), loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise AssetMissing(f"audio-to-expression weights {path} not found; without them use "
                           "PhoneticAudioToExpression (the built-in driver)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path} cannot be read as weights-only audio-to-expression weights "
                         f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(data, dict) or data.get("format") != A2E_FORMAT or data.get("version") != A2E_VERSION:
        raise InputError(f"{path} is not a talkflow audio-to-expression file (format {A2E_FORMAT} v{A2E_VERSION})")
    try:
        net = MelToExpression(int(data["n_exp"]), int(data["n_mels"]), int(data["window"]), int(data["hidden"]))
        net.load_state_dict(data["state_dict"], strict=True)
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise InputError(f"{path} has unusable audio-to-expression weights: {str(exc)[:300]}") from exc
    return NetworkAudioToExpression(net, tuple(data.get("exp_names", ())), device)
