"""Audio features on their own: any speech file -> the (T, 16, D) windows an avatar reads.

T is the number of 25 fps video frames the speech lasts; D is 80 (logmel) or 1024 (hubert,
wav2vec2). The same two cached stages as rendering: prepare_audio, then audio_features.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from models.audio.features import SAMPLE_RATE, AudioFeatureConfig
from talkflow import assets
from talkflow.checks import FeatureKind, choice, speech_audio
from talkflow.store import StageResult
from tasks.features import audio_features
from tasks.media import prepare_audio


@flow(name="extract-audio-features")
def extract_audio_features(audio: Path, kind: FeatureKind = "logmel", fps: int = 25) -> StageResult:
    """The feature windows of `audio` (any audio or video file) for an avatar trained on `kind`.

    Args:
        audio: the speech (a path the run can read).
        kind: logmel (no weights needed), hubert or wav2vec2 (a registered model folder).
        fps: video frames per second of the avatar (ER-NeRF: 25): one window per frame.
    Returns the audio_features manifest: artifacts "feats" (the .npy) and "info".
    """
    choice(kind, FeatureKind, "kind")
    model_dir = assets.require(kind) if kind != "logmel" else None  # a missing model fails first
    prepared = prepare_audio(speech_audio(audio), fps=fps, sample_rate=SAMPLE_RATE)
    return audio_features(prepared["audio"], prepared.meta["n_frames"], AudioFeatureConfig(kind=kind),
                          model_dir=model_dir)
