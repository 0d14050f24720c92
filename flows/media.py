"""The media stage as a flow: probe -> normalize -> frames -> mux (a round trip to mp4)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import BaseModel, Field

from talkflow.store import StageResult
from tasks.media import (
    FramesConfig,
    MuxConfig,
    NormalizeConfig,
    extract_frames,
    mux_video,
    normalize_video,
    probe_media,
)


class MediaConfig(BaseModel):
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    frames: FramesConfig = Field(default_factory=FramesConfig)
    mux: MuxConfig = Field(default_factory=MuxConfig)


class MediaResult(BaseModel):
    probe: StageResult
    normalized: StageResult
    frames: StageResult
    video: StageResult


@flow(name="media-stage", log_prints=True)
def media_stage(
    video: Path, config: MediaConfig = MediaConfig(), namespace: str | None = None
) -> MediaResult:
    """Normalize a talking video, split it into frames and mux them back with the audio."""
    probed = probe_media(video)
    normalized = normalize_video(video, config.normalize, namespace=namespace)
    frames = extract_frames(normalized["video"], config.frames, namespace=namespace)
    muxed = mux_video(frames, normalized.artifacts.get("audio"), config.mux, fps=normalized.meta["fps"],
                      namespace=namespace)
    return MediaResult(probe=probed, normalized=normalized, frames=frames, video=muxed)
