"""The warp renderer: the portrait itself, bound to its fitted 3DMM mesh and warped by it."""

from __future__ import annotations

from flows.renderers.base import OneShotRenderer, RenderContext
from talkflow.store import StageResult
from tasks.portrait import render_warped_portrait, rig_portrait


class WarpRenderer(OneShotRenderer):
    prepare_label = "warp rig"

    def prepare(self, fit: StageResult, ctx: RenderContext) -> StageResult:
        return rig_portrait(fit, ctx.config.warp_rig, bfm=ctx.bfm, namespace=ctx.character)

    def render(self, prepared: StageResult, fit: StageResult, expressions: StageResult,
               ctx: RenderContext) -> StageResult:
        return render_warped_portrait(prepared, expressions, ctx.config.warp, bfm=ctx.bfm, namespace=ctx.character)

    def summary(self, prepared: StageResult) -> str:
        return f"{prepared.meta['size']} x {prepared.meta['size']} px"
