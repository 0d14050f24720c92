"""NeRFFaceSpeech: one portrait of a character + audio or text -> a talking video.

The character fit (3DMM + PTI) is cached by character, image content, generator checkpoint and
fit config, so every later video of the same character and image skips it.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import BaseModel, Field

from models.nerffacespeech.face_fit import FaceFitConfig
from models.nerffacespeech.pti import PTIConfig
from models.nerffacespeech.render import RenderConfig
from talkflow import assets
from talkflow.cache import validate_name
from talkflow.errors import InputError
from talkflow.store import StageResult
from tasks.media import AudioPrepConfig, MuxConfig, mux_video, prepare_audio
from tasks.portrait import (
    GeneratorChoice,
    audio_to_expressions,
    fit_character_face,
    invert_portrait,
    render_portrait,
)
from tasks.speech import SpeechConfig, synthesize_speech


class PortraitConfig(BaseModel):
    fit: FaceFitConfig = Field(default_factory=FaceFitConfig)
    pti: PTIConfig | None = Field(
        None, description="PTI steps and losses. Empty: PTI's own settings for a registered generator, "
        "PTIConfig.fallback (more inversion steps, a 10x tuning rate) for the small fallback generator.")
    generator: GeneratorChoice = Field(default_factory=GeneratorChoice)
    render: RenderConfig = Field(default_factory=RenderConfig)
    speech: SpeechConfig = Field(default_factory=SpeechConfig)
    fps: int = Field(25, ge=1, le=60)


def pti_settings(config: PortraitConfig, checkpoint: Path | None) -> PTIConfig:
    """The PTI settings given, else PTI's own for a registered generator and the fallback's for the small one."""
    if config.pti is not None:
        return config.pti
    return PTIConfig() if checkpoint is not None else PTIConfig.fallback()


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
        audio: a speech recording; or
        text: what to say, spoken by the offline TTS.
        config: fit, PTI, generator fallback, rendering and speech settings.
    """
    ns = validate_name(character, "character")
    if (audio is None) == (text is None):
        raise InputError("give exactly one of audio or text")
    bfm, checkpoint = assets.locate("bfm"), assets.locate("generator")
    fit = fit_character_face(image, config.fit, bfm=bfm, namespace=ns)
    pti = invert_portrait(fit, pti_settings(config, checkpoint), generator=checkpoint, fallback=config.generator,
                          bfm=bfm if checkpoint is None else None,  # the face prior of the fallback only
                          lpips=assets.locate("lpips"), namespace=ns)
    if text is not None:
        speech = synthesize_speech(text, config.speech)
    else:
        speech = prepare_audio(audio, AudioPrepConfig(fps=config.fps))
    expressions = audio_to_expressions(speech, fit, fps=config.fps, weights=assets.locate("audio2exp"), bfm=bfm)
    frames = render_portrait(pti, fit, expressions, config.render, bfm=bfm, namespace=ns)
    video = mux_video(frames, speech["audio"], MuxConfig(fps=config.fps), namespace=ns)
    return PortraitResult(fit=fit, pti=pti, video=video)
