"""NeRFFaceSpeech: one portrait of a character + audio or text -> a talking video.

The renderers (flows.renderers: generator, warp, ...) share the 3DMM fit and the
audio-to-expression driver; `renderer="auto"` takes the best available one. The character fit
(3DMM, then the renderer's preparation: PTI, the warp rig) is cached by character, image content,
asset and config, so every later video of the same character and image skips it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field, field_validator

from flows import renderers
from flows.renderers.base import RenderContext
from models.nerffacespeech.config import FaceFitConfig, PhoneticDriverConfig, PTIConfig, RenderConfig
from models.portrait_warp.config import WarpRenderConfig, WarpRigConfig
from talkflow import assets
from talkflow.checks import audio_or_text, validate_name
from talkflow.contract import SAMPLE_RATE, VIDEO_FPS
from talkflow.forms import FilePath, Hidden, Text, given
from talkflow.store import StageResult
from tasks.media import MuxConfig, mux_video, prepare_audio
from tasks.outputs import publish_output
from tasks.portrait import GeneratorChoice, audio_to_expressions, fit_character_face
from tasks.speech import SpeechConfig, synthesize_speech


def _renderer_choices(schema: dict[str, Any]) -> None:
    schema["enum"] = [renderers.AUTO, *renderers.names()]  # the form's choices, read when it is drawn


class PortraitConfig(BaseModel):
    renderer: str = Field(renderers.AUTO, description="Which renderer draws the frames: " + renderers.describe(),
                          json_schema_extra=_renderer_choices)
    fit: FaceFitConfig = Field(default_factory=FaceFitConfig, description="3DMM fit of the portrait.")
    pti: Hidden[PTIConfig | None] = Field(  # Python callers; a form takes the rule below
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

    @field_validator("renderer")
    @classmethod
    def _known_renderer(cls, name: str) -> str:
        if name != renderers.AUTO:
            renderers.entry(name)  # InputError naming the renderers
        return name


class PortraitResult(BaseModel):
    renderer: str = Field(description="The renderer that drew the frames (flows.renderers).")
    fit: StageResult = Field(description="The portrait's 3DMM fit.")
    prepared: StageResult = Field(description="The renderer's per-character preparation (PTI, the warp rig, ...).")
    video: StageResult = Field(description="The mp4.")

    @property
    def pti(self) -> StageResult | None:
        return self.prepared if self.prepared.stage == "pti" else None

    @property
    def rig(self) -> StageResult | None:
        return self.prepared if self.prepared.stage == "warp_rig" else None


@flow(name="generate-from-portrait")
def generate_from_portrait(
    character: str,
    image: Path,
    audio: FilePath = "",
    text: Text = "",
    config: PortraitConfig = PortraitConfig(),
    transcript: Text = "",
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
    audio, text, transcript = given(audio), given(text), given(transcript)
    audio_or_text(audio, text)
    chosen = renderers.choose(config.renderer)  # a missing asset fails here, before any work
    renderer = renderers.load(chosen.name)
    bfm = assets.locate("bfm")
    ctx = RenderContext(character=ns, config=config, bfm=bfm, asset=chosen.asset_path())
    fit = fit_character_face(image, config.fit, bfm=bfm, namespace=ns)
    prepared = renderer.prepare(fit, ctx)
    if text is not None:
        speech = synthesize_speech(text, config.speech)
    else:
        speech = prepare_audio(Path(audio), fps=config.fps, sample_rate=SAMPLE_RATE)
    expressions = audio_to_expressions(speech, fit, fps=config.fps, weights=assets.locate("audio2exp"), bfm=bfm,
                                       driver=config.driver, text=text or transcript)
    frames = renderer.render(prepared, fit, expressions, ctx)
    video = mux_video(frames, speech["audio"], MuxConfig(), fps=config.fps, namespace=ns)
    publish_output("portrait", video["video"], namespace=ns, stages={
        "3DMM fit": fit, renderer.prepare_label: prepared, "speech": speech, "expressions": expressions,
        "frames": frames, "mux": video})
    return PortraitResult(renderer=chosen.name, fit=fit, prepared=prepared, video=video)
