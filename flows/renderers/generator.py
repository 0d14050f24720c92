"""The generator renderer: PTI of a 3D-aware generator on the portrait, its rays deformed by the 3DMM."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flows.renderers.base import OneShotRenderer, RenderContext
from models.nerffacespeech.config import PTIConfig
from talkflow import assets
from talkflow.store import StageResult
from tasks import presets
from tasks.portrait import invert_portrait, render_portrait

if TYPE_CHECKING:
    from flows.portrait import PortraitConfig


def pti_settings(config: PortraitConfig, checkpoint: Path | None) -> PTIConfig:
    """The PTI settings given, else PTI's own for a registered generator and the fallback's for the small one."""
    if config.pti is not None:
        return config.pti
    return presets.build("pti", "reference" if checkpoint is not None else "fallback")


class GeneratorRenderer(OneShotRenderer):
    prepare_label = "PTI"

    def prepare(self, fit: StageResult, ctx: RenderContext) -> StageResult:
        checkpoint = ctx.asset
        return invert_portrait(fit, pti_settings(ctx.config, checkpoint), generator=checkpoint,
                               fallback=ctx.config.generator,
                               bfm=ctx.bfm if checkpoint is None else None,  # the face prior of the fallback only
                               lpips=assets.locate("lpips"), namespace=ctx.character)

    def render(self, prepared: StageResult, fit: StageResult, expressions: StageResult,
               ctx: RenderContext) -> StageResult:
        return render_portrait(prepared, fit, expressions, ctx.config.render, bfm=ctx.bfm, namespace=ctx.character)

    def summary(self, prepared: StageResult) -> str:
        return f"PTI error {prepared.meta['error_initial']:.3f} -> {prepared.meta['error_final']:.3f}"
