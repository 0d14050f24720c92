"""The audio features' configs and their file description: torch-free, so that a flow's parameters
(and the forms the Prefect UI draws from them) import without the models (models.audio.features)."""

from __future__ import annotations

import pydantic

from talkflow.contract import (
    DEFAULT_FEATURES,
    FEATURES,
    MAX_AUDIO_GAP_S,
    SAMPLE_RATE,
    VIDEO_FPS,
    WINDOW,
    AnyFeatureKind,
    FeatureKind,
)
from talkflow.forms import PLAIN_OPTIONALS

Kind = AnyFeatureKind  # any kind a features file may hold
ComputedKind = FeatureKind  # the kinds computed from audio (talkflow.contract.FEATURES)


class FeatureInfo(pydantic.BaseModel):
    """What ``aud_feats.npy`` holds (written beside it as ``aud_feats.json``)."""

    kind: Kind
    dim: int
    fps: int = VIDEO_FPS  # windows per second (one per video frame)
    window: int = WINDOW  # 50 Hz feature frames per window


class LogMelConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, **PLAIN_OPTIONALS)

    sample_rate: int = pydantic.Field(
        SAMPLE_RATE, description="Sample rate of the audio the features are computed from, Hz.")
    n_fft: int = pydantic.Field(512, description="FFT size, samples.")
    win_length: int = pydantic.Field(400, description="Analysis window, samples (400 = 25 ms at 16 kHz).")
    hop_length: int = pydantic.Field(
        320, description="Hop between feature frames, samples (320 = 20 ms: 50 Hz features).")
    n_mels: int = pydantic.Field(80, description="Mel bands.")
    fmin: float = pydantic.Field(0.0, description="Lowest mel frequency, Hz.")
    fmax: float | None = pydantic.Field(None, description="Highest mel frequency, Hz; empty: half the sample rate.")
    log_floor: float = pydantic.Field(1e-5, gt=0, description="Mel power floor before the log.")
    normalize: bool = pydantic.Field(
        True, description="Standardise each band over the clip (mean 0, variance 1), as speech recognisers' "
        "CMVN: the loudness, microphone and part of the voice drop out, and the network sees unit-scale inputs.")
    stats_fraction: float = pydantic.Field(
        1.0, gt=0, le=1, description="Share of the clip, from its start, whose frames give the band statistics: "
        "preprocessing sets it to the training part so that the held-out end never leaks into the features; "
        "new audio uses all of itself (1).")


class AudioFeatureConfig(pydantic.BaseModel):
    """Stage config: which features, and how the model-based ones run."""

    model_config = pydantic.ConfigDict(frozen=True)

    kind: ComputedKind = pydantic.Field(
        DEFAULT_FEATURES, description="Audio features: " + "; ".join(
            f"{s.name} ({s.summary}; D={s.width}{', needs the registered asset ' + s.asset if s.asset else ''})"
            for s in FEATURES.values() if s.computed) + ".")
    window: int = pydantic.Field(WINDOW, ge=1, description="50 Hz feature frames per video-frame window (ER-NeRF: 16).")
    logmel: LogMelConfig = pydantic.Field(LogMelConfig(), description="Log-mel settings (kind logmel).")
    chunk_s: float = pydantic.Field(
        20.0, gt=0, description="Audio per forward pass of a speech model, s (bounds memory).")
    context_s: float = pydantic.Field(
        1.0, ge=0, description="Extra audio each side of a chunk, s; its outputs are dropped.")
    max_gap_s: float = pydantic.Field(
        MAX_AUDIO_GAP_S, ge=0, description="The video may outlast the audio by this much, s, before it is an error.")


__all__ = ["AudioFeatureConfig", "ComputedKind", "FeatureInfo", "Kind", "LogMelConfig"]
