"""The media stage as a flow: probe -> normalize -> frames -> mux (a round trip to mp4)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import BaseModel, Field

from talkflow.forms import Text, given
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
from tasks.outputs import publish_output


class MediaConfig(BaseModel):
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig,
                                       description="Frame rate, square crop and audio of the normalized video.")
    frames: FramesConfig = Field(default_factory=FramesConfig, description="Format of the extracted frames.")
    mux: MuxConfig = Field(default_factory=MuxConfig, description="Encoding of the video muxed back from the frames.")


class MediaResult(BaseModel):
    probe: StageResult
    normalized: StageResult
    frames: StageResult
    video: StageResult


@flow(name="media-stage", log_prints=True)
def media_stage(
    video: Path, config: MediaConfig = MediaConfig(), namespace: Text = ""
) -> MediaResult:
    """Normalize a talking video, split it into frames and mux them back with the audio.

    Args:
        video: the talking video (a path the worker can read, e.g. under the data root).
        config: normalize, frames and mux settings.
        namespace: a person's or character's name the cache entries are kept under; empty: shared.
    """
    namespace = given(namespace)
    probed = probe_media(video)
    normalized = normalize_video(video, config.normalize, namespace=namespace)
    frames = extract_frames(normalized["video"], config.frames, namespace=namespace)
    muxed = mux_video(frames, normalized.artifacts.get("audio"), config.mux, fps=normalized.meta["fps"],
                      namespace=namespace)
    publish_output("media", muxed["video"], namespace=namespace,
                   stages={"probe": probed, "normalize": normalized, "frames": frames, "mux": muxed})
    return MediaResult(probe=probed, normalized=normalized, frames=frames, video=muxed)
