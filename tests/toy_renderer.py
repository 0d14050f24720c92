"""A one-shot renderer made for the tests: the fitted portrait, its mouth drawn as a dark bar
whose height follows the first expression coefficient. One module; a test registers it."""

from __future__ import annotations

import numpy as np

from flows.renderers.base import OneShotRenderer, RenderContext
from talkflow import media
from talkflow.cache import stage
from talkflow.store import StageResult, get_store
from tasks.inputs import local_file, scratch


@stage("toy_prepare", "1")
def toy_prepare(fit: StageResult, namespace: str | None = None) -> StageResult:
    """The portrait the fit cropped, as the toy's per-character preparation."""
    return StageResult(artifacts={"portrait": fit["portrait"]}, meta={"size": fit.meta["size"]})


@stage("toy_render", "1")
def toy_render(prepared: StageResult, expressions: StageResult, namespace: str | None = None) -> StageResult:
    from PIL import Image

    with Image.open(local_file(prepared["portrait"])) as im:
        base = np.asarray(im.convert("RGB"))
    exp = np.load(local_file(expressions["exp"]))  # (T, K)
    s = base.shape[0]
    frames = np.repeat(base[None], len(exp), axis=0)
    opening = np.clip(exp[:, 0] - exp[:, 0].min(), 0, None)
    rows = (1 + 20 * opening / max(float(opening.max()), 1e-6)).astype(int)
    for t, h in enumerate(rows):
        frames[t, int(0.7 * s):int(0.7 * s) + h, int(0.4 * s):int(0.6 * s)] = 20
    with scratch("toy") as work:
        media.write_frames(frames, work / "frames", ext="png")
        art = get_store().put_dir(work / "frames")
    return StageResult(artifacts={"frames": art}, meta={"n_frames": len(frames), "ext": "png", "size": s})


class ToyRenderer(OneShotRenderer):
    prepare_label = "toy preparation"

    def prepare(self, fit: StageResult, ctx: RenderContext) -> StageResult:
        return toy_prepare(fit, namespace=ctx.character)

    def render(self, prepared: StageResult, fit: StageResult, expressions: StageResult,
               ctx: RenderContext) -> StageResult:
        return toy_render(prepared, expressions, namespace=ctx.character)

    def summary(self, prepared: StageResult) -> str:
        return f"toy of {prepared.meta['size']} px"
