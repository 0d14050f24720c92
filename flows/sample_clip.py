"""Text -> speech -> an animated portrait: the sample talking clip."""

from __future__ import annotations

from prefect import flow

from talkflow.store import StageResult
from tasks.outputs import publish_output
from tasks.sample_clip import SampleClipConfig, animate_sample_clip
from tasks.speech import SpeechConfig, synthesize_speech

__all__ = ["SampleClipConfig", "make_sample_clip"]


@flow(name="sample-clip")
def make_sample_clip(
    text: str,
    config: SampleClipConfig = SampleClipConfig(),
    speech: SpeechConfig = SpeechConfig(),
) -> StageResult:
    """A short 25 fps talking clip of a real face photo saying `text`, with its audio.

    Args:
        text: what the portrait says (spoken by the offline TTS voice).
        config: size, frame rate and head motion of the clip.
        speech: the TTS voice's settings.
    """
    spoken = synthesize_speech(text, speech)
    clip = animate_sample_clip(spoken, config)
    publish_output("sample-clip", clip["video"], stages={"speech": spoken, "animate": clip})
    return clip
