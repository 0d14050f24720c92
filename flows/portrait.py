"""NeRFFaceSpeech: one portrait of a character + audio or text -> a talking video.

The character fit (3DMM + PTI) is cached by character, image content, generator checkpoint and
fit config, so every later video of the same character and image skips it.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import BaseModel, Field

from models.audio.features import SAMPLE_RATE
from models.nerffacespeech.face_fit import FaceFitConfig
from models.nerffacespeech.pti import PTIConfig
from models.nerffacespeech.render import RenderConfig
from talkflow import assets
from talkflow.checks import audio_or_text, validate_name
from talkflow.store import StageResult
from tasks.media import MuxConfig, mux_video, prepare_audio
from tasks.outputs import publish_output
from tasks.portrait import (
    GeneratorChoice,
    audio_to_expressions,
    fit_character_face,
    invert_portrait,
    render_portrait,
)
from tasks.speech import SpeechConfig, synthesize_speech


class PortraitConfig(BaseModel):
    fit: FaceFitConfig = Field(default_factory=FaceFitConfig, description="3DMM fit of the portrait.")
    pti: PTIConfig = Field(default_factory=PTIConfig.fallback, description="PTI steps and losses.")
    generator: GeneratorChoice = Field(default_factory=GeneratorChoice,
                                       description="The generator used while no checkpoint is registered.")
    render: RenderConfig = Field(default_factory=RenderConfig, description="Rendering of the talking frames.")
    speech: SpeechConfig = Field(default_factory=SpeechConfig, description="The TTS voice (when text is given).")
    fps: int = Field(25, ge=1, le=60, description="Frame rate of the video, frames per second.")


class PortraitResult(BaseModel):
    fit: StageResult
    pti: StageResult
    video: StageResult


@flow(name="generate-from-portrait")
def generate_from_portrait(
    character: str,
    image: Path,
    audio: Path | None = None,
    text: str | None = None,
    config: PortraitConfig = PortraitConfig(),
) -> PortraitResult:
    """A video of the portrait `image` speaking `audio` (or `text` through TTS).

    Args:
        character: the character's name (letters, digits, '_' or '-'): the cache namespace.
        image: the portrait (a path the run can read); its content, not its name, keys the fit.
        audio: a speech recording (give exactly one of audio or text).
        text: what to say, spoken by the offline TTS (give exactly one of audio or text).
        config: fit, PTI, generator fallback, rendering and speech settings.
    """
    ns = validate_name(character, "character")
    audio_or_text(audio, text)
    bfm, checkpoint = assets.locate("bfm"), assets.locate("generator")
    fit = fit_character_face(image, config.fit, bfm=bfm, namespace=ns)
    pti = invert_portrait(fit, config.pti, generator=checkpoint, fallback=config.generator, bfm=bfm, namespace=ns)
    if text is not None:
        speech = synthesize_speech(text, config.speech)
    else:
        speech = prepare_audio(audio, fps=config.fps, sample_rate=SAMPLE_RATE)
    expressions = audio_to_expressions(speech, fit, fps=config.fps, weights=assets.locate("audio2exp"), bfm=bfm)
    frames = render_portrait(pti, fit, expressions, config.render, bfm=bfm, namespace=ns)
    video = mux_video(frames, speech["audio"], MuxConfig(), fps=config.fps, namespace=ns)
    publish_output("portrait", video["video"], namespace=ns, stages={
        "3DMM fit": fit, "PTI": pti, "speech": speech, "expressions": expressions, "frames": frames, "mux": video})
    return PortraitResult(fit=fit, pti=pti, video=video)
