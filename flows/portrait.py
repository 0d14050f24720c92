"""NeRFFaceSpeech: one portrait of a character + audio or text -> a talking video.

Two renderers share the 3DMM fit and the audio-to-expression driver:
- generator: PTI of the registered 3D-aware generator, its rays deformed by the 3DMM;
- warp: the portrait itself, warped by the 3DMM (models/portrait_warp), needing no weights.
`renderer="auto"` takes the generator when one is registered, else the warp. The character fit
(3DMM, then PTI or the warp rig) is cached by character, image content, generator checkpoint
and config, so every later video of the same character and image skips it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field

from models.nerffacespeech.audio2exp import PhoneticDriverConfig
from models.nerffacespeech.face_fit import FaceFitConfig
from models.nerffacespeech.pti import PTIConfig
from models.nerffacespeech.render import RenderConfig
from models.portrait_warp import WarpRenderConfig, WarpRigConfig
from talkflow import assets
from talkflow.checks import Renderer, audio_or_text, choose_renderer, validate_name  # noqa: F401 (re-exported)
from talkflow.contract import SAMPLE_RATE, VIDEO_FPS
from talkflow.store import StageResult
from tasks.media import MuxConfig, mux_video, prepare_audio
from tasks.outputs import publish_output
from tasks.portrait import (
    GeneratorChoice,
    audio_to_expressions,
    fit_character_face,
    invert_portrait,
    render_portrait,
    render_warped_portrait,
    rig_portrait,
)
from tasks.speech import SpeechConfig, synthesize_speech


class PortraitConfig(BaseModel):
    renderer: Renderer = Field("auto", description="Which renderer draws the frames: 'generator' (PTI of the "
                               "registered 3D-aware generator), 'warp' (the portrait itself, warped by its 3DMM; "
                               "no weights needed) or 'auto' (the generator when one is registered, else the warp).")
    fit: FaceFitConfig = Field(default_factory=FaceFitConfig, description="3DMM fit of the portrait.")
    pti: PTIConfig | None = Field(
        None, description="Generator path: PTI steps and losses. Empty: PTI's own settings for a registered "
        "generator, PTIConfig.fallback (more inversion steps, a 10x tuning rate) for the small fallback generator.")
    generator: GeneratorChoice = Field(default_factory=GeneratorChoice,
                                       description="The fallback generator (generator path without a checkpoint).")
    render: RenderConfig = Field(default_factory=RenderConfig, description="Generator rendering.")
    warp_rig: WarpRigConfig = Field(default_factory=WarpRigConfig, description="Warp path: the per-character rig.")
    warp: WarpRenderConfig = Field(default_factory=WarpRenderConfig, description="Warp path: frame rendering.")
    driver: PhoneticDriverConfig = Field(default_factory=PhoneticDriverConfig, description="Audio -> expression "
                                         "mapping (phones -> visemes -> mouth modes) used by both renderers when no "
                                         "audio2exp network is registered.")
    speech: SpeechConfig = Field(default_factory=SpeechConfig, description="The TTS voice (when text is given).")
    fps: int = Field(VIDEO_FPS, ge=1, le=60, description="Frame rate of the video, frames per second.")


def pti_settings(config: PortraitConfig, checkpoint: Path | None) -> PTIConfig:
    """The PTI settings given, else PTI's own for a registered generator and the fallback's for the small one."""
    if config.pti is not None:
        return config.pti
    return PTIConfig() if checkpoint is not None else PTIConfig.fallback()


class PortraitResult(BaseModel):
    renderer: Literal["warp", "generator"]
    fit: StageResult
    pti: StageResult | None = None  # generator path
    rig: StageResult | None = None  # warp path
    video: StageResult


@flow(name="generate-from-portrait")
def generate_from_portrait(
    character: str,
    image: Path,
    audio: Path | None = None,
    text: str | None = None,
    config: PortraitConfig = PortraitConfig(),
    transcript: str | None = None,
) -> PortraitResult:
    """A video of the portrait `image` speaking `audio` (or `text` through TTS).

    Args:
        character: the character's name (letters, digits, '_' or '-'): the cache namespace.
        image: the portrait (a path the run can read); its content, not its name, keys the fit.
        audio: a speech recording (give exactly one of audio or text).
        text: what to say, spoken by the offline TTS (give exactly one of audio or text).
        transcript: what the audio says, when known: its phones are then aligned to the words
            (exact lip closures) instead of recognised from the sound.
        config: renderer choice, fit, PTI or warp rig, rendering and speech settings.
    """
    ns = validate_name(character, "character")
    audio_or_text(audio, text)
    renderer, checkpoint = choose_renderer(config.renderer)
    bfm = assets.locate("bfm")
    fit = fit_character_face(image, config.fit, bfm=bfm, namespace=ns)
    pti = rig = None
    if renderer == "generator":
        pti = invert_portrait(fit, pti_settings(config, checkpoint), generator=checkpoint, fallback=config.generator,
                              bfm=bfm if checkpoint is None else None,  # the face prior of the fallback only
                              lpips=assets.locate("lpips"), namespace=ns)
    else:
        rig = rig_portrait(fit, config.warp_rig, bfm=bfm, namespace=ns)
    if text is not None:
        speech = synthesize_speech(text, config.speech)
    else:
        speech = prepare_audio(audio, fps=config.fps, sample_rate=SAMPLE_RATE)
    expressions = audio_to_expressions(speech, fit, fps=config.fps, weights=assets.locate("audio2exp"), bfm=bfm,
                                       driver=config.driver, text=text or transcript)
    if renderer == "generator":
        frames = render_portrait(pti, fit, expressions, config.render, bfm=bfm, namespace=ns)
    else:
        frames = render_warped_portrait(rig, expressions, config.warp, bfm=bfm, namespace=ns)
    video = mux_video(frames, speech["audio"], MuxConfig(), fps=config.fps, namespace=ns)
    publish_output("portrait", video["video"], namespace=ns, stages={
        "3DMM fit": fit, "PTI": pti, "warp rig": rig, "speech": speech, "expressions": expressions,
        "frames": frames, "mux": video})
    return PortraitResult(renderer=renderer, fit=fit, pti=pti, rig=rig, video=video)
