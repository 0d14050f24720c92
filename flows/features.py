"""Audio features on their own: any speech file -> the (T, 16, D) windows an avatar reads.

T is the number of video frames the speech lasts, D the kind's width (talkflow.contract, listed in
docs/media-contract.md). The same two cached stages as rendering: prepare_audio, then audio_features.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from models.audio.config import AudioFeatureConfig
from talkflow import assets
from talkflow.checks import FeatureKind, feature_kind, speech_audio
from talkflow.contract import DEFAULT_FEATURES, SAMPLE_RATE, VIDEO_FPS
from talkflow.store import StageResult
from tasks.features import audio_features
from tasks.media import prepare_audio


@flow(name="extract-audio-features")
def extract_audio_features(audio: Path, kind: FeatureKind = DEFAULT_FEATURES, fps: int = VIDEO_FPS) -> StageResult:
    """The feature windows of `audio` (any audio or video file) for an avatar trained on `kind`.

    Args:
        audio: the speech (a path the run can read).
        kind: the avatar's feature kind (docs/media-contract.md); a kind read from a model needs it registered.
        fps: video frames per second of the avatar: one window per frame.
    Returns the audio_features manifest: artifacts "feats" (the .npy) and "info".
    """
    spec = feature_kind(kind)  # a missing model fails first
    model_dir = assets.require(spec.asset) if spec.asset else None
    prepared = prepare_audio(speech_audio(audio), fps=fps, sample_rate=SAMPLE_RATE)
    return audio_features(prepared["audio"], prepared.meta["n_frames"], AudioFeatureConfig(kind=kind),
                          model_dir=model_dir)
