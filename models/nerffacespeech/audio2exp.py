"""Audio -> per-frame expression coefficients (T, K_exp) of the face3d expression basis.

NeRFFaceSpeech drives its 3DMM with SadTalker's audio-to-expression network (log-mel windows of
16 steps per video frame -> 64 BFM expression coefficients). Here the mapping is pluggable:

- `AudioToExpression`: the interface, `predict(samples, sr, fps=25) -> (T, K_exp)` with
  T = ceil(duration * fps) (the frame count of `speech_envelope`).
- `load_audio2exp(path)`: user weights of the small documented network `MelToExpression`
  (log-mel windows (T, 16, 80) from `models.audio.features`, normalised per band, three 1-D
  convolutions over the 16 steps (80 -> H -> H -> H, strides 1, 2, 2, leaky ReLU), mean over
  time, a linear layer -> K_exp), saved by `save_audio2exp` and read with weights_only=True.
- `EnvelopeAudioToExpression` (built in, no weights): drives only the mouth modes of the face3d
  expression basis (generic model and converted BFM share the names):
    * loudness = `speech_envelope` (RMS per frame, 95th percentile = 1);
    * vowel openness from the log-mel band energies: the first formant of open vowels (/a/) lies
      at 600-1100 Hz, of close vowels (/i/, /u/) at 200-500 Hz, so log(E[500-1100] / E[150-500]);
    * lip spreading vs rounding from the second formant: high for front vowels (/i/, /e/: lips
      spread), low for rounded back vowels (/o/, /u/), so log(E[1700-3500] / E[150-1100]);
    both are standardised over the voiced frames of the clip and squashed with a logistic, then
      jaw_open     = jaw_gain * env * (jaw_floor + (1 - jaw_floor) * openness)
      lips_stretch = stretch_gain * env * spread * (1 - openness)
      lips_pucker  = pucker_gain * env * (1 - spread) * (1 - openness)
    and every curve is smoothed over time with a Gaussian whose sigma (`smooth_frames`) shrinks
    for fast speech: the speech rate (syllables/s, `speech_rate`: envelope peaks over the voiced
    time) is measured per clip. Silence gives a closed, neutral mouth.
  Both renderers (the generator's ray deformation and the portrait warp) take these coefficients.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy.ndimage import gaussian_filter1d
from torch import Tensor, nn

from models.checkpoint_io import save_atomic
from talkflow.errors import AssetMissing, InputError

A2E_FORMAT = "talkflow.nerffacespeech.audio2exp"
A2E_VERSION = 1
MOUTH_MODES = ("jaw_open", "lips_stretch", "lips_pucker")


def n_video_frames(n_samples: int, sr: int, fps: float) -> int:
    """Frames covering the audio: ceil(duration * fps) (as `speech_envelope`)."""
    return max(math.ceil(n_samples * fps / sr - 1e-9), 0)


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
    def predict(self, samples: np.ndarray, sr: int, fps: float = 25) -> np.ndarray:
        """samples (N,) or (N, C) float in [-1, 1] or int16 -> (T, n_exp) float32."""


# ------------------------------------------------------------------------- envelope heuristic
class EnvelopeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    jaw_gain: float = Field(0.45, ge=0, description="jaw_open at full loudness on an open vowel (1 = the basis' "
                            "full 0.25 rad, a wide-open mouth; 0.45 opens about as far as conversational speech).")
    jaw_floor: float = Field(0.5, ge=0, le=1, description="Share of the opening that follows loudness alone.")
    stretch_gain: float = Field(0.4, ge=0, description="lips_stretch at full loudness on a front vowel.")
    pucker_gain: float = Field(0.5, ge=0, description="lips_pucker at full loudness on a rounded vowel.")
    voiced: float = Field(0.2, ge=0, le=1, description="Envelope above which a frame counts as voiced (statistics).")
    slope: float = Field(1.5, gt=0, description="Logistic slope on the standardised band ratios.")
    smooth_frames: float = Field(1.0, ge=0, description="Gaussian sigma of the temporal smoothing, in frames, at "
                                 "the reference speech rate; scaled by reference / measured rate (x0.5 to x1.5) "
                                 "so that fast speech still closes the mouth between syllables.")
    reference_rate_hz: float = Field(4.0, gt=0, description="Syllables per second of ordinary speech.")


def _band_energies(x16: np.ndarray, t: int, fps: float) -> np.ndarray:
    """Mono 16 kHz samples -> (T, 4) mean mel power per video frame in the bands
    150-500, 500-1100, 1100-1700, 1700-3500 Hz."""
    from models.audio.features import FEATURE_FPS, LogMelConfig, log_mel, mel_filterbank

    cfg = LogMelConfig()
    mel = np.exp(log_mel(x16, cfg).astype(np.float64))  # (L, 80) power
    fb = np.asarray(mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax))  # (80, n_fft/2+1)
    centre = fb.argmax(1) * cfg.sample_rate / cfg.n_fft  # (80,) peak frequency of each mel filter, Hz
    bands = [(150, 500), (500, 1100), (1100, 1700), (1700, 3500)]
    e = np.stack([mel[:, (centre >= lo) & (centre < hi)].mean(1) for lo, hi in bands], 1)  # (L, 4)
    # Video frame k covers [k, k + 1) / fps s; mel row l is centred at l / FEATURE_FPS s.
    rows = np.arange(e.shape[0]) / FEATURE_FPS
    k = np.minimum((rows * fps).astype(np.int64), max(t - 1, 0))
    out = np.zeros((t, 4))
    np.add.at(out, k, e)
    counts = np.bincount(k, minlength=t)[:, None]
    return out / np.maximum(counts, 1) + 1e-10


def speech_rate(envelope: np.ndarray, fps: float, voiced: float = 0.2) -> float:
    """Syllables per second: peaks of the envelope (T,) that rise above `voiced` and stand out
    from their neighbours by 0.1, over the time from the first to the last voiced frame
    (0 for silence)."""
    from scipy.signal import find_peaks

    env = np.asarray(envelope, np.float64)
    on = np.flatnonzero(env > voiced)
    if len(on) == 0:
        return 0.0
    peaks, _ = find_peaks(env, height=voiced, prominence=0.1, distance=max(1, int(fps / 10)))
    return float(len(peaks) * fps / max(on[-1] - on[0] + 1, fps / 4))


def _standard_logistic(x: np.ndarray, mask: np.ndarray, slope: float) -> np.ndarray:
    ref = x[mask] if mask.sum() >= 2 else x
    z = (x - ref.mean()) / (ref.std() + 1e-6)
    return 1.0 / (1.0 + np.exp(-slope * z))


class EnvelopeAudioToExpression(AudioToExpression):
    """The built-in, weight-free audio -> mouth expression mapping (see the module doc)."""

    def __init__(self, exp_names: tuple[str, ...] | None = None, config: EnvelopeConfig = EnvelopeConfig()):
        if exp_names is None:
            from models.face3d.morphable import generic_model

            exp_names = generic_model().exp_names
        missing = [m for m in MOUTH_MODES if m not in exp_names]
        if missing:
            raise InputError(f"the expression basis has no {', '.join(missing)} mode (names: {list(exp_names)}); "
                             "the envelope mapping needs the face3d mouth modes")
        self.exp_names = tuple(exp_names)
        self.n_exp = len(exp_names)
        self.index = {m: self.exp_names.index(m) for m in MOUTH_MODES}
        self.config = config

    def curves(self, samples: np.ndarray, sr: int, fps: float = 25) -> dict[str, np.ndarray]:
        """The intermediate (T,) curves: envelope, openness, spread, the three mode weights, and the
        measured speech rate (rate_hz, syllables/s, constant over the clip)."""
        from models.audio.features import to_mono_16k
        from models.synth.talking_photo import speech_envelope

        cfg = self.config
        x = _mono(samples, sr, fps)
        t = n_video_frames(x.shape[0], sr, fps)
        if t == 0:
            z = np.zeros(0, np.float32)
            return {k: z for k in ("envelope", "openness", "spread", "rate_hz", *MOUTH_MODES)}
        env = speech_envelope(x, sr, fps).astype(np.float64)[:t]  # (T,)
        e = _band_energies(to_mono_16k(x, sr), t, fps)  # (T, 4)
        voiced = env > cfg.voiced
        openness = _standard_logistic(np.log(e[:, 1] / e[:, 0]), voiced, cfg.slope)
        spread = _standard_logistic(np.log(e[:, 3] / (e[:, 0] + e[:, 1])), voiced, cfg.slope)
        jaw = cfg.jaw_gain * env * (cfg.jaw_floor + (1.0 - cfg.jaw_floor) * openness)
        stretch = cfg.stretch_gain * env * spread * (1.0 - openness)
        pucker = cfg.pucker_gain * env * (1.0 - spread) * (1.0 - openness)
        rate = speech_rate(env, fps, cfg.voiced)
        out = {"envelope": env, "openness": openness, "spread": spread, "jaw_open": jaw, "lips_stretch": stretch,
               "lips_pucker": pucker, "rate_hz": np.full(t, rate)}
        if cfg.smooth_frames > 0 and t > 1:
            sigma = cfg.smooth_frames * (float(np.clip(cfg.reference_rate_hz / rate, 0.5, 1.5)) if rate > 0 else 1.0)
            for k in MOUTH_MODES:
                out[k] = gaussian_filter1d(out[k], sigma, mode="nearest")
        return {k: v.astype(np.float32) for k, v in out.items()}

    def predict(self, samples: np.ndarray, sr: int, fps: float = 25) -> np.ndarray:
        c = self.curves(samples, sr, fps)
        out = np.zeros((c["envelope"].shape[0], self.n_exp), np.float32)
        for m in MOUTH_MODES:
            out[:, self.index[m]] = c[m]
        return out


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
    def predict(self, samples: np.ndarray, sr: int, fps: float = 25) -> np.ndarray:
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
                           "EnvelopeAudioToExpression (the built-in mapping)")
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
