"""ER-NeRF rendering: a trained avatar (found by the person's name) speaking new audio or text.

audio file, or text -> TTS -> 16 kHz mono wav -> features of the kind the avatar learnt ->
frames (training poses looped) -> mp4 with the audio. Every step is cached: the same audio and
settings render once.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import BaseModel, Field

from models.audio.config import AudioFeatureConfig
from talkflow import assets
from talkflow.checks import audio_or_text, validate_name
from talkflow.contract import COMPUTED_KINDS, FEATURE_DIMS, FEATURES, SAMPLE_RATE, words_read
from talkflow.errors import InputError, MediaUnreadable
from talkflow.forms import FilePath, Hidden, Text, given
from talkflow.store import Artifact, StageResult
from tasks.evaluation import score_lip_sync
from tasks.features import audio_features
from tasks.media import MuxConfig, mux_video, prepare_audio
from tasks.outputs import publish_output
from tasks.registry import AvatarRecord, read_avatar
from tasks.render import RenderConfig, render_frames_stage
from tasks.speech import SpeechConfig, synthesize_speech

__all__ = ["RenderConfig", "RenderResult", "RenderVideoConfig", "render", "render_batch", "render_video"]


class RenderVideoConfig(BaseModel):
    render: RenderConfig = Field(default_factory=RenderConfig, description="How the avatar's frames are rendered.")
    audio: Hidden[AudioFeatureConfig | None] = Field(  # Python callers only: the avatar decides
        None, description="Feature settings; empty: the kind the avatar was trained on, default settings.")
    speech: SpeechConfig = Field(default_factory=SpeechConfig, description="The TTS voice (when text is given).")
    crf: int = Field(18, ge=0, le=51, description="x264 quality of the video (lower is better).")


class RenderResult(BaseModel):
    person: str
    avatar_stage: str
    audio: StageResult  # the 16 kHz mono wav
    features: StageResult
    frames: StageResult
    video: StageResult  # mp4 (H.264 + AAC)


def _feature_config(avatar: AvatarRecord, config: AudioFeatureConfig | None) -> AudioFeatureConfig:
    """The feature config the avatar was trained with (as its preprocessing recorded it), for new
    audio: its band statistics over all of itself. InputError when `config` asks for other features."""
    want = avatar.features
    kind, dim = want.get("kind"), want.get("dim")
    if kind not in COMPUTED_KINDS:
        raise InputError(f"the avatar {avatar.person!r} was trained on {kind} features (D={dim}), which talkflow "
                         f"cannot compute for new audio; preprocess the video with {', '.join(COMPUTED_KINDS)}")
    recorded = AudioFeatureConfig.model_validate(want["config"]) if "config" in want else AudioFeatureConfig(kind=kind)
    recorded = recorded.model_copy(update={"logmel": recorded.logmel.model_copy(update={"stats_fraction": 1.0})})
    if config is None or config == recorded:
        return recorded
    if config.kind != kind:
        raise InputError(f"{config.kind} features have D={FEATURE_DIMS.get(config.kind)} but the avatar "
                         f"{avatar.person!r} was trained on {kind} features with D={dim}; use kind={kind!r}")
    raise InputError(f"the avatar {avatar.person!r} was trained on {kind} features computed with other settings "
                     f"({recorded.model_dump_json(exclude={'kind'})}); leave the feature config empty to use them")


def _render_one(avatar: AvatarRecord, source: Path | Artifact, config: RenderVideoConfig,
                feature_cfg: AudioFeatureConfig, text: str | None = None) -> RenderResult:
    ns = avatar.person
    checkpoint = avatar.latest(config.render.with_torso)
    fps = avatar.dataset.meta["fps"]  # the normalize stage's, as every dataset records it
    sample_rate = avatar.dataset.meta.get("sample_rate") or SAMPLE_RATE  # older datasets: the models' rate
    prepared = prepare_audio(source, fps=fps, sample_rate=sample_rate, namespace=ns)
    asset = FEATURES[feature_cfg.kind].asset
    model_dir = assets.require(asset) if asset else None
    features = audio_features(prepared["audio"], prepared.meta["n_frames"], feature_cfg, model_dir=model_dir,
                              namespace=ns, text=words_read(feature_cfg.kind, text))
    frames = render_frames_stage(checkpoint, avatar.dataset, features, config.render, namespace=ns)
    video = mux_video(frames, prepared["audio"], MuxConfig(crf=config.crf), fps=fps, namespace=ns)
    lip_sync = score_lip_sync(video["video"], text, namespace=ns)  # the figures shown beside the preview
    publish_output("render", video["video"], namespace=ns, figures=lip_sync.meta, stages={
        "audio": prepared, "features": features, "frames": frames, "mux": video, "lip sync": lip_sync})
    return RenderResult(person=ns, avatar_stage=checkpoint.stage, audio=prepared, features=features,
                        frames=frames, video=video)


@flow(name="render")
def render(person: str, audio: FilePath = "", text: Text = "",
           config: RenderVideoConfig = RenderVideoConfig(), avatar: Hidden[AvatarRecord | None] = None) -> RenderResult:
    """An mp4 of the person's trained avatar speaking `audio` (any audio/video file) or `text` (TTS).

    Args:
        person: the avatar's name (as trained with train_avatar).
        audio: the speech to render, any audio or video file (give exactly one of audio or text).
        text: words to speak with the offline TTS voice (give exactly one of audio or text).
        config: rendering, feature and TTS settings.
        avatar: a given training of the person (a model folder's, Python callers only; the form
            renders the person's latest, found by the name).
    """
    validate_name(person, "person")
    audio, text = given(audio), given(text)
    audio_or_text(audio, text)
    if avatar is None:
        avatar = read_avatar(person)
    elif avatar.person != person:
        raise InputError(f"the avatar given is {avatar.person!r}'s, not {person!r}'s")
    feature_cfg = _feature_config(avatar, config.audio)
    avatar.latest(config.render.with_torso)  # no torso stage -> fails before the TTS
    source = synthesize_speech(text, config.speech)["audio"] if text is not None else Path(audio)
    return _render_one(avatar, source, config, feature_cfg, text)


# The flow's name before it was `render`: the deployment render-video/infer of older set-ups and
# their callers still run it (the same flow under its old name).
render_video = render.with_options(name="render-video")


@flow(name="render-batch")
def render_batch(person: str, audios: list[Path],
                 config: RenderVideoConfig = RenderVideoConfig()) -> list[RenderResult]:
    """One video per audio file, same avatar and settings (each step cached per clip)."""
    if not audios:
        raise InputError("give at least one audio file")
    missing = [str(a) for a in audios if not Path(a).exists()]
    if missing:
        raise MediaUnreadable(f"these audio files do not exist: {', '.join(missing)}")
    avatar = read_avatar(validate_name(person, "person"))
    feature_cfg = _feature_config(avatar, config.audio)
    avatar.latest(config.render.with_torso)
    return [_render_one(avatar, Path(a), config, feature_cfg) for a in audios]
