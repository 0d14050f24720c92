"""Text -> speech -> an animated portrait: the sample talking clip."""

from __future__ import annotations

from prefect import flow

from talkflow.store import StageResult
from tasks.sample_clip import SampleClipConfig, animate_sample_clip
from tasks.speech import SpeechConfig, synthesize_speech

__all__ = ["SampleClipConfig", "make_sample_clip"]


@flow(name="sample-clip")
def make_sample_clip(
    text: str,
    config: SampleClipConfig = SampleClipConfig(),
    speech: SpeechConfig = SpeechConfig(),
) -> StageResult:
    """A short 25 fps talking clip of a real face photo saying `text`, with its audio."""
    return animate_sample_clip(synthesize_speech(text, speech), config)
