"""The demo: a sample clip made from text, then the media stage over it."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from flows.media import MediaConfig, MediaResult, media_stage
from flows.sample_clip import SampleClipConfig, make_sample_clip
from talkflow.store import StageResult, get_store


class DemoResult(BaseModel):
    sample: StageResult
    media: MediaResult


@flow(name="demo")
def demo(text: str, config: MediaConfig = MediaConfig()) -> DemoResult:
    """Text -> sample clip -> normalize -> frames -> mux: every step cached."""
    sample = make_sample_clip(text, SampleClipConfig())
    clip = get_store().fetch(sample["video"])
    return DemoResult(sample=sample, media=media_stage(clip, config, namespace="demo"))
