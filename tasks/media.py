"""The media stage: probe, normalize, extract frames, mux; each a cached task."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from talkflow import media
from talkflow.cache import stage
from talkflow.contract import (
    AUDIO_SLACK_S,
    MAX_AUDIO_GAP_S,
    MAX_SPEECH_S,
    MIN_CLIP_S,
    SAMPLE_RATE,
    VIDEO_FPS,
    frame_count,
)
from talkflow.errors import EmptyMedia, InputError, NoAudioStream
from talkflow.store import Artifact, StageResult, get_store
from tasks.inputs import local_file, scratch


class NormalizeConfig(BaseModel):
    """A talking video as ER-NeRF trains on it: constant frame rate, square, 16 kHz mono audio."""

    fps: int = Field(VIDEO_FPS, ge=1, le=120, description=f"Output frame rate (ER-NeRF uses {VIDEO_FPS}).")
    size: int = Field(512, ge=32, le=2048, description="Side of the centred square crop, pixels.")
    sample_rate: int = Field(SAMPLE_RATE, description="Audio sample rate, Hz (what the speech models read).")
    min_duration_s: float = Field(MIN_CLIP_S, ge=0, description="Shorter videos are rejected.")
    require_audio: bool = Field(True, description="Reject videos without an audio track.")
    max_audio_gap_s: float = Field(
        MAX_AUDIO_GAP_S, ge=0, description="A picture that outlasts its sound by at most this much, s, is trimmed "
        "to the end of the sound (with a warning); by more, the video is rejected.")
    crf: int = Field(18, ge=0, le=51, description="x264 quality of the normalized video.")


class FramesConfig(BaseModel):
    ext: Literal["jpg", "png"] = Field("jpg", description="Frame image format.")
    quality: int = Field(2, ge=1, le=31, description="JPEG qscale (1 best).")


class AudioPrepConfig(BaseModel):
    max_duration_s: float = Field(MAX_SPEECH_S, gt=0, description="Longer audio is refused (split it), s.")


class MuxConfig(BaseModel):
    crf: int = Field(18, ge=0, le=51, description="x264 quality (lower is better).")


@stage("probe", "1", retries=0)
def probe_media(src: Path | Artifact) -> StageResult:
    """ffprobe facts about a file (streams, duration, fps, size, audio present)."""
    info = media.probe(local_file(src))
    return StageResult(meta=info.model_dump(exclude={"path"}))


@stage("normalize", "3")
def normalize_video(
    video: Path | Artifact, config: NormalizeConfig, namespace: str | None = None
) -> StageResult:
    """Constant frame rate, centred square crop, mono wav (NormalizeConfig); a picture that outlasts
    its sound a little is trimmed to the sound. Bad input fails before transcoding."""
    src = local_file(video)
    info = media.probe(src)
    media.require_video(
        info, need_audio=config.require_audio, min_duration_s=config.min_duration_s,
        max_audio_gap_s=config.max_audio_gap_s,
    )
    gap = media.audio_shortfall_s(info) if config.require_audio else 0.0  # within max_audio_gap_s here
    trim = info.audio_end_s if gap > AUDIO_SLACK_S else None
    with scratch("normalize") as work:
        out_video, out_wav = work / "video.mp4", work / "audio.wav"
        media.normalize_video(
            src, out_video, out_wav, fps=config.fps, size=config.size,
            sample_rate=config.sample_rate, crf=config.crf, duration_s=trim,
        )
        out = media.probe(out_video)
        store = get_store()
        artifacts = {"video": store.put_file(out_video)}
        if out_wav.exists():
            artifacts["audio"] = store.put_file(out_wav)
    warnings = []
    if trim is not None:
        warnings.append(f"the sound ends {gap:.2f} s before the picture; the video was trimmed to the sound "
                        f"({trim:.2f} s)")
    if info.variable_frame_rate:
        warnings.append(f"variable frame rate source (average {info.fps:.2f} fps, nominal {info.nominal_fps:.2f}); "
                        f"resampled to a constant {config.fps} fps")
    return StageResult(
        artifacts=artifacts,
        meta={"fps": config.fps, "sample_rate": config.sample_rate, "size": config.size,
              "n_frames": out.n_frames, "duration_s": out.duration_s,
              "source": info.model_dump(exclude={"path"}), "warnings": warnings},
    )


@stage("prepare_audio", "2", retries=0)
def prepare_audio(audio: Path | Artifact, config: AudioPrepConfig = AudioPrepConfig(), *, fps: int,
                  sample_rate: int, namespace: str | None = None) -> StageResult:
    """Any audio (or video) file -> mono 16-bit wav at `sample_rate`, and its length in frames
    of a video at `fps`. Both come from the video it goes with (its normalize stage's metadata)."""
    src = local_file(audio)
    info = media.probe(src)
    if not info.has_audio:
        raise NoAudioStream(f"'{src.name}' has no audio track; give a wav/mp3/m4a with speech")
    if info.duration_s <= 0:
        raise EmptyMedia(f"'{src.name}' has zero duration; give at least a fraction of a second of speech")
    if info.duration_s > config.max_duration_s:
        raise InputError(f"'{src.name}' lasts {info.duration_s:.0f} s, more than max_duration_s="
                         f"{config.max_duration_s:.0f}; split it and use render_batch")
    with scratch("audio") as work:
        wav = work / "audio.wav"
        media.extract_audio(src, wav, sample_rate=sample_rate)
        samples, rate = media.read_wav(wav)
        if samples.size == 0:
            raise EmptyMedia(f"'{src.name}' decoded to no audio samples")
        art = get_store().put_file(wav)
    duration = samples.size / rate
    return StageResult(artifacts={"audio": art}, meta={
        "duration_s": duration, "sample_rate": rate, "fps": fps,
        "n_frames": max(1, frame_count(samples.size, rate, fps)),
    })


@stage("frames", "1")
def extract_frames(
    video: Artifact, config: FramesConfig, namespace: str | None = None
) -> StageResult:
    """Every frame as <i>.jpg (ER-NeRF's ori_imgs layout), stored as one directory artifact."""
    with scratch("frames") as work:
        n = media.extract_frames(local_file(video), work / "frames", ext=config.ext,
                                 quality=config.quality)
        if n == 0:
            raise EmptyMedia("the normalized video decoded to no frames; check the source video")
        frames = get_store().put_dir(work / "frames")
    return StageResult(artifacts={"frames": frames}, meta={"n_frames": n, "ext": config.ext})


@stage("mux", "1")
def mux_video(
    frames: StageResult, audio: Artifact | None, config: MuxConfig, *, fps: int, namespace: str | None = None
) -> StageResult:
    """Frames + audio -> an H.264/AAC mp4 (+faststart) at `fps` whose length follows the frames."""
    with scratch("mux") as work:
        out = work / "video.mp4"
        media.mux(
            local_file(frames["frames"]),
            local_file(audio) if audio is not None else None,
            out,
            fps=fps,
            ext=frames.meta.get("ext", "jpg"),
            crf=config.crf,
        )
        info = media.probe(out)
        art = get_store().put_file(out)
    return StageResult(
        artifacts={"video": art},
        meta={"duration_s": info.duration_s, "n_frames": info.n_frames, "fps": fps},
    )
