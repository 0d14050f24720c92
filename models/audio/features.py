"""Audio features for the audio-driven NeRF: one window of 16 steps at 50 Hz per video frame.

The kinds, their widths and assets are the table ``talkflow.contract.FEATURES``; each computed
kind names its function here (``*_rows``: 16 kHz mono samples -> (L, D) rows at 50 Hz):

* ``logmel`` (default, no weights): 80-band log-mel spectrogram in pure torch: 16 kHz,
  400-sample Hann window (zero-padded to n_fft 512), hop 320 (50 Hz), centred frames with
  zero padding, power spectrum, Slaney mel scale and Slaney area normalisation (librosa's
  defaults), natural log with a floor (``log_floor``), then each band standardised over the
  clip (``normalize``, on by default: a louder or quieter recording gives the same features).
* ``hubert``: last hidden state of a transformers ``HubertModel`` (1024 for HuBERT large,
  ``hubert-large-ls960-ft`` as in ER-NeRF), loaded from a LOCAL folder only.
* ``wav2vec2``: logits of a transformers ``Wav2Vec2ForCTC`` (44 for the esperanto model
  ER-NeRF uses), local folder only.
* ``deepspeech``: ER-NeRF's precomputed DeepSpeech features, read with ``load_deepspeech_npy``.
* ``phonemes`` (no download): speaker-independent phones decoded by pocketsphinx's bundled en-us
  model (``models.audio.phonemes``): per 50 Hz frame the share of each of 39 phones + silence (D=40).

Adding a kind is one row of that table plus its ``*_rows`` function.

Every kind is resampled to 50 Hz frames centred at k/50 s (frame count 1 + N // 320 for N
samples at 16 kHz), then ``window_features`` cuts a window of 16 frames around video frame t,
rows 2t-8 .. 2t+7, i.e. 0.32 s centred on t/25 s, repeating the first/last frame past the ends.
Features are saved as ONE file name, ``aud_feats.npy`` (T,16,D) float32, with
``aud_feats.json`` describing them (ER-NeRF's writers and readers disagreed on file names).
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import pydantic
import torch

# the configs live in a torch-free module (a flow's parameters import them); kept importable from here
from models.audio.config import AudioFeatureConfig, ComputedKind, FeatureInfo, Kind, LogMelConfig  # noqa: F401
from talkflow.contract import (
    ASSET_KINDS,
    COMPUTED_KINDS,
    FEATURE_DIMS,
    FEATURE_FPS,
    FEATURES,
    MAX_AUDIO_GAP_S,
    SAMPLE_RATE,
    VIDEO_FPS,
    WINDOW,
    frame_count,
    kinds_text,
    words_read,
)
from talkflow.errors import AssetMissing, InputError

logger = logging.getLogger(__name__)
MODEL_KINDS = ASSET_KINDS  # need a registered local model folder

FEATS_FILE = "aud_feats.npy"
INFO_FILE = "aud_feats.json"
DEEPSPEECH_DIM = FEATURE_DIMS["deepspeech"]


def normalize_bands(steps: np.ndarray, fraction: float = 1.0) -> np.ndarray:
    """(L, M) features -> each column (band) standardised with the mean and standard deviation of
    its first ``fraction`` of rows (all: mean 0, std 1 over the clip; a constant band becomes 0)."""
    ref = steps[: max(int(round(steps.shape[0] * fraction)), 1)]
    mean = ref.mean(0, keepdims=True)
    std = ref.std(0, keepdims=True)
    return ((steps - mean) / np.maximum(std, 1e-3)).astype(np.float32)


# --------------------------------------------------------------------------- input


def to_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Samples (N,) or (N,C), int16 or float in [-1, 1], as mono float32 (N',) at 16 kHz."""
    x = np.asarray(samples)
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    elif x.dtype.kind != "f":
        raise InputError(f"unsupported sample type {x.dtype}; give int16 or float samples in [-1, 1]")
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1:
        raise InputError(f"expected audio samples (N,) or (N,channels), got shape {x.shape}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise InputError("the audio has NaN/inf samples")
    if sample_rate <= 0:
        raise InputError(f"bad sample rate {sample_rate}")
    if sample_rate != SAMPLE_RATE:
        from scipy.signal import resample_poly

        g = math.gcd(int(sample_rate), SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, int(sample_rate) // g).astype(np.float32)
    return x


# --------------------------------------------------------------------------- log-mel


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale: linear (3 mels / 200 Hz) below 1 kHz, logarithmic above."""
    lin = f / (200.0 / 3.0)
    log = 15.0 + torch.log(torch.clamp(f, min=1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return torch.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    lin = m * (200.0 / 3.0)
    log = 1000.0 * torch.exp((m - 15.0) * (math.log(6.4) / 27.0))
    return torch.where(m >= 15.0, log, lin)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> torch.Tensor:
    """Triangular Slaney-normalised mel filters (n_mels, n_fft//2 + 1) float64, as librosa.filters.mel."""
    fmax = sample_rate / 2.0 if fmax is None else fmax
    bins = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    edges = _mel_to_hz(
        torch.linspace(float(_hz_to_mel(torch.tensor(fmin, dtype=torch.float64))),
                       float(_hz_to_mel(torch.tensor(fmax, dtype=torch.float64))), n_mels + 2, dtype=torch.float64)
    )  # (M+2,) Hz
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M,1)
    rising = (bins[None] - lo) / (mid - lo)
    falling = (hi - bins[None]) / (hi - mid)
    tri = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (M,F)
    return tri * (2.0 / (hi - lo))  # equal area per filter


def log_mel(samples: np.ndarray, config: LogMelConfig | None = None) -> np.ndarray:
    """Log-mel (L, n_mels) float32 of 16 kHz mono float samples (N,); L = 1 + N // hop."""
    cfg = config or LogMelConfig()
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32), dtype=torch.float64)
    if x.ndim != 1 or x.numel() == 0:
        raise InputError(f"expected mono samples (N,) with N > 0, got shape {tuple(x.shape)}")
    window = torch.hann_window(cfg.win_length, periodic=True, dtype=torch.float64)
    spec = torch.stft(x, cfg.n_fft, cfg.hop_length, cfg.win_length, window, center=True, pad_mode="constant",
                      return_complex=True)  # (F,L)
    power = spec.real**2 + spec.imag**2
    mel = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax) @ power  # (M,L)
    return torch.log(torch.clamp(mel, min=cfg.log_floor)).T.float().numpy()  # (L,M)


# --------------------------------------------------------------------------- windows


def window_features(
    feats: np.ndarray,
    n_frames: int,
    window: int = WINDOW,
    *,
    feature_fps: float = FEATURE_FPS,
    video_fps: float = VIDEO_FPS,
    max_gap_s: float = MAX_AUDIO_GAP_S,
) -> np.ndarray:
    """Per-video-frame windows (T, window, D) from features (L, D) at ``feature_fps``.

    Video frame t (time t / video_fps) gets rows c - window//2 .. c + window - window//2 - 1
    with c = round(t * feature_fps / video_fps) (2t for 50/25 Hz); rows past either end
    repeat the first/last row. Raises InputError when the video outlasts the features by
    more than ``max_gap_s``.
    """
    f = np.asarray(feats)
    if f.ndim != 2 or f.shape[0] == 0:
        raise InputError(f"expected features (L,D) with L > 0, got shape {f.shape}")
    if n_frames < 0:
        raise InputError(f"n_frames must be >= 0, got {n_frames}")
    ratio = feature_fps / video_fps
    centres = np.round(np.arange(n_frames) * ratio).astype(np.int64)  # (T,)
    if n_frames and centres[-1] - (f.shape[0] - 1) > max_gap_s * feature_fps:
        raise InputError(
            f"the audio features cover {f.shape[0] / feature_fps:.2f} s but the video has {n_frames} frames "
            f"({n_frames / video_fps:.2f} s); give audio as long as the video"
        )
    rows = centres[:, None] + np.arange(window)[None] - window // 2  # (T,W)
    return f[np.clip(rows, 0, f.shape[0] - 1)].astype(np.float32)


# --------------------------------------------------------------------------- HuBERT / wav2vec2


def _model_dir(kind: str, model_dir: str | Path | None) -> Path:
    if model_dir is None:
        raise AssetMissing(f"{kind} features need a local transformers model folder (model_dir); register it "
                           f"with `talkflow assets add {kind} /path/to/folder` (nothing is downloaded)")
    path = Path(model_dir)
    if not (path.is_dir() and (path / "config.json").is_file()):
        raise AssetMissing(
            f"{path} is not a transformers model folder (no config.json); give the folder of a {kind} "
            "model saved with save_pretrained (nothing is downloaded)"
        )
    return path


def _folder_stamp(path: Path) -> tuple:
    """(name, size, mtime) of every file of a model folder: a folder rewritten in place is a new model."""
    return tuple((str(p.relative_to(path)), st.st_size, st.st_mtime_ns)
                 for p in sorted(path.rglob("*")) if p.is_file() and (st := p.stat()))


@functools.lru_cache(maxsize=2)
def _load_model(kind: str, model_class: str, path: str, device: str,
                stamp: tuple = ()) -> tuple[torch.nn.Module, bool]:
    """(transformers `model_class` in eval mode on ``device``, whether inputs are normalised) from a
    local folder; cached per process by path and `stamp` (`_folder_stamp`), so changed weights are reloaded."""
    import transformers

    cls = getattr(transformers, model_class)
    try:
        model = cls.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise AssetMissing(f"cannot load the {kind} model from {path}: {exc}") from exc
    prep = Path(path) / "preprocessor_config.json"
    normalize = json.loads(prep.read_text()).get("do_normalize", True) if prep.is_file() else True
    return model.eval().to(device), bool(normalize)


@torch.inference_mode()
def model_features(
    samples: np.ndarray,
    kind: str,
    model_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    model_class: str,
    output: str,
    chunk_s: float = 20.0,
    context_s: float = 1.0,
) -> np.ndarray:
    """50 Hz features (L, D) float32 of 16 kHz mono samples (N,), L = 1 + N // 320.

    The audio is padded by 200 samples each side so that frame k (the conv stack's 400-sample
    field, stride 320) is centred at k/50 s, like the log-mel frames. Long audio is processed in
    chunks of ``chunk_s`` with ``context_s`` extra audio each side whose outputs are dropped.
    """
    path = _model_dir(kind, model_dir)
    model, normalize = _load_model(kind, model_class, str(path), str(device), _folder_stamp(path))
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise InputError(f"expected mono samples (N,) with N > 0, got shape {x.shape}")
    if normalize:
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    hop, field = 320, 400
    x = np.pad(x, (field // 2, field // 2))  # frame k now covers original samples 320k +- 200
    n_out = (x.size - field) // hop + 1
    step = max(int(chunk_s * FEATURE_FPS), 1)
    ctx = int(context_s * FEATURE_FPS)
    outs = []
    for f0 in range(0, n_out, step):
        f1 = min(f0 + step, n_out)
        a, b = max(f0 - ctx, 0), min(f1 + ctx, n_out)
        chunk = torch.from_numpy(x[a * hop : (b - 1) * hop + field]).to(device)[None]  # (1,n)
        out = model(chunk)
        hidden = getattr(out, output)  # (1,b-a,D)
        if hidden.shape[1] != b - a:
            raise InputError(
                f"the {kind} model at {path} gave {hidden.shape[1]} frames for {b - a}; only encoders with "
                "a 400-sample field and a 320-sample stride (50 Hz at 16 kHz) are supported"
            )
        outs.append(hidden[0, f0 - a : f1 - a].float().cpu())
    return torch.cat(outs).numpy()


# --------------------------------------------------------------------------- DeepSpeech (supplied)


def load_deepspeech_npy(path: str | Path, n_frames: int, *, max_frame_diff: int = 2) -> np.ndarray:
    """ER-NeRF's DeepSpeech features as (T,16,29) float32 for ``n_frames`` video frames.

    Accepts (T',16,29) (already windowed per video frame) or (L,29) per-step logits at 50 Hz
    (L ~ 2T) or 25 Hz (L ~ T, each step used twice); up to ``max_frame_diff`` video frames of
    length mismatch are fixed by repeating the last window / cutting; anything else is an InputError.
    """
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read DeepSpeech features {path}: {exc}; give a .npy array") from exc
    hint = f"expected DeepSpeech features (T,16,{DEEPSPEECH_DIM}) or (L,{DEEPSPEECH_DIM}) for {n_frames} frames"
    if arr.dtype.kind not in "fiu" or arr.shape[-1:] != (DEEPSPEECH_DIM,) or arr.ndim not in (2, 3):
        raise InputError(f"{path.name}: {hint}, got shape {arr.shape} dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"{path.name} has NaN/inf values")
    if arr.ndim == 3:
        if arr.shape[1] != WINDOW:
            raise InputError(f"{path.name}: {hint}, got shape {arr.shape}")
        if abs(arr.shape[0] - n_frames) > max_frame_diff or arr.shape[0] == 0:
            raise InputError(
                f"{path.name} has {arr.shape[0]} windows but the video has {n_frames} frames; "
                "compute the features from this video's audio"
            )
        idx = np.minimum(np.arange(n_frames), arr.shape[0] - 1)
        return arr[idx]
    length = arr.shape[0]
    if abs(length - 2 * n_frames) <= 2 * max_frame_diff + 1:
        steps = arr
    elif abs(length - n_frames) <= max_frame_diff:
        steps = np.repeat(arr, 2, axis=0)  # 25 Hz -> 50 Hz
    else:
        raise InputError(
            f"{path.name} has {length} steps, which matches neither 50 Hz ({2 * n_frames}) nor 25 Hz "
            f"({n_frames}) for {n_frames} video frames; compute the features from this video's audio"
        )
    return window_features(steps, n_frames, WINDOW, max_gap_s=1.0)


# --------------------------------------------------------------------------- the kinds' functions
# One per computed kind of talkflow.contract.FEATURES (its `computes`): (N,) 16 kHz mono float32
# samples, the stage config, the kind's model folder (None when it needs none) and the torch
# device -> (L, D) float32 rows at 50 Hz, L = 1 + N // 320. A kind whose row `reads_text` also
# takes `text`: the words spoken, or None.


def logmel_rows(x: np.ndarray, cfg: AudioFeatureConfig, model_dir: Path | None, device) -> np.ndarray:
    steps = log_mel(x, cfg.logmel)
    return normalize_bands(steps, cfg.logmel.stats_fraction) if cfg.logmel.normalize else steps


def phoneme_rows(x: np.ndarray, cfg: AudioFeatureConfig, model_dir: Path | None, device) -> np.ndarray:
    from models.audio.phonemes import phone_features

    return phone_features(x)


def viseme_rows(x: np.ndarray, cfg: AudioFeatureConfig, model_dir: Path | None, device,
                text: str | None = None) -> np.ndarray:
    """The viseme model's four channels (models.audio.visemes.CHANNELS) of the speech's phones,
    aligned to `text` when it is given (recognition misses most /p b m/ of an unfamiliar voice),
    else recognised: row k at k/50 s + 5 ms (the 100 Hz tracks' even frames)."""
    from models.audio.alignment import speech_phones
    from models.audio.visemes import CHANNELS, VisemeConfig, viseme_tracks

    phones = speech_phones(x, SAMPLE_RATE, text)
    if text and phones.source != "aligned":
        logger.warning("the words given did not align to the speech: the visemes follow recognised phones")
    length = 1 + x.size // 320
    tracks = viseme_tracks(phones, 2 * length, 100.0, config=VisemeConfig(loudness_weight=0))
    return np.stack([tracks[c][::2] for c in CHANNELS], axis=1).astype(np.float32)


def hubert_rows(x: np.ndarray, cfg: AudioFeatureConfig, model_dir: Path | None, device) -> np.ndarray:
    return model_features(x, "hubert", model_dir, device, model_class="HubertModel", output="last_hidden_state",
                          chunk_s=cfg.chunk_s, context_s=cfg.context_s)


def wav2vec2_rows(x: np.ndarray, cfg: AudioFeatureConfig, model_dir: Path | None, device) -> np.ndarray:
    return model_features(x, "wav2vec2", model_dir, device, model_class="Wav2Vec2ForCTC", output="logits",
                          chunk_s=cfg.chunk_s, context_s=cfg.context_s)


def feature_rows(kind: str):
    """The function that computes `kind` (its table row's `computes`); InputError for a kind
    talkflow does not compute."""
    spec = FEATURES.get(kind)
    if spec is None or not spec.computed:
        raise InputError(f"talkflow does not compute {kind!r} audio features; use {kinds_text(COMPUTED_KINDS)}")
    module, _, name = spec.computes.partition(":")
    return getattr(importlib.import_module(module), name)


# --------------------------------------------------------------------------- entry points


def extract_features(
    wav_samples: np.ndarray,
    sr: int,
    n_frames: int | None = None,
    kind: ComputedKind | None = None,
    model_dir: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    config: AudioFeatureConfig | None = None,
    text: str | None = None,
) -> tuple[np.ndarray, FeatureInfo]:
    """Windowed audio features (T, window, D) float32 and their FeatureInfo.

    ``n_frames`` defaults to the audio's frame count (``talkflow.contract.frame_count``). ``kind`` (default
    ``config.kind``, i.e. logmel) overrides the config; ``model_dir`` defaults to the
    registered ``hubert``/``wav2vec2`` asset. ``text``: the words spoken, if known; the kinds that
    read them (the table's ``reads_text``) align their phones to them, the others ignore them.
    """
    cfg = config or AudioFeatureConfig()
    if kind is not None and kind != cfg.kind:
        try:
            cfg = AudioFeatureConfig.model_validate({**cfg.model_dump(), "kind": kind})
        except pydantic.ValidationError as exc:
            raise InputError(f"unknown audio feature kind {kind!r}; use {kinds_text(COMPUTED_KINDS)}") from exc
    x = to_mono_16k(wav_samples, sr)
    if x.size == 0:
        raise InputError("the audio is empty; give at least a fraction of a second of sound")
    if n_frames is None:
        n_frames = max(frame_count(x.size), 1)
    words = words_read(cfg.kind, text)
    steps = feature_rows(cfg.kind)(x, cfg, model_dir, device, **({"text": words} if words else {}))
    feats = window_features(steps, n_frames, cfg.window, max_gap_s=cfg.max_gap_s)
    return feats, FeatureInfo(kind=cfg.kind, dim=int(feats.shape[-1]), window=cfg.window)


def save_features(folder: str | Path, feats: np.ndarray, info: FeatureInfo) -> tuple[Path, Path]:
    """Write ``aud_feats.npy`` and ``aud_feats.json`` into ``folder``; returns both paths."""
    f = np.asarray(feats, dtype=np.float32)
    if f.ndim != 3 or f.shape[1:] != (info.window, info.dim):
        raise InputError(f"features {f.shape} do not match {info}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / FEATS_FILE, f)
    (folder / INFO_FILE).write_text(info.model_dump_json(indent=2))
    return folder / FEATS_FILE, folder / INFO_FILE


def load_features(folder: str | Path) -> tuple[np.ndarray, FeatureInfo]:
    """Read ``aud_feats.npy`` (T,16,D) and its ``aud_feats.json`` from ``folder``."""
    folder = Path(folder)
    try:
        info = FeatureInfo.model_validate_json((folder / INFO_FILE).read_text())
        feats = np.load(folder / FEATS_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read audio features in {folder}: {exc}") from exc
    if feats.ndim != 3 or feats.shape[1:] != (info.window, info.dim):
        raise InputError(f"{folder / FEATS_FILE} has shape {feats.shape}, {INFO_FILE} says {info}")
    return feats.astype(np.float32), info
