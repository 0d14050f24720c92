"""Text to speech as a cached task (offline: piper with a bundled voice, or espeak-ng)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from talkflow import media
from talkflow.cache import stage
from talkflow.errors import SpeechError
from talkflow.store import StageResult, get_store
from tasks.inputs import scratch


class SpeechConfig(BaseModel):
    engine: Literal["auto", "piper", "espeak"] = Field(
        "auto", description="auto: piper (bundled voice) when installed, else espeak-ng.")


@stage("tts", "1", retries=0)
def synthesize_speech(text: str, config: SpeechConfig = SpeechConfig()) -> StageResult:
    """text -> a mono 16-bit wav at the voice's native rate."""
    from models.audio.tts import synthesize

    if not text or not text.strip():
        raise SpeechError("the text to speak is empty; give at least one word")
    samples, rate = synthesize(text, engine=config.engine)
    with scratch("tts") as work:
        media.write_wav(work / "speech.wav", samples, rate)
        art = get_store().put_file(work / "speech.wav")
    return StageResult(
        artifacts={"audio": art},
        meta={"sample_rate": rate, "duration_s": len(samples) / rate, "text": text},
    )
