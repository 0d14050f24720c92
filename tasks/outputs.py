"""A flow run's outputs, visible in the Prefect UI: where the output is, what it looks like,
which stages were computed and which came from the cache.

Each flow that writes a video or a dataset calls `publish_output` at its end. It creates, on the
flow run:
- `<flow>-<namespace>-output`: where the output is. On S3 a link artifact (a presigned URL,
  valid `LINK_EXPIRES_S`, that the browser opens); on a local store a markdown artifact that says
  plainly which file on the worker's machine it is (browsers open no file:// link from a web page);
- `<flow>-<namespace>-preview`: a short animated WebP of the video (`PREVIEW_S` seconds at
  `PREVIEW_FPS`, `PREVIEW_WIDTH` px; a few hundred KB, made with ffmpeg), inline on a local store,
  a presigned URL on S3; with the render's lip-sync figures beside it when the flow gives them;
- a table artifact of the stages: computed in this run or cached (made by an earlier run);
- a log line with the output's store path.

Long stages report here too: `ProgressArtifact` (a progress bar of the task run, updated as it
goes), `publish_training` (a stage's loss curve and validation figures) and `run_logger`.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import ffmpeg
from prefect import get_run_logger
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from pydantic import BaseModel

from talkflow.store import Artifact, ArtifactStore, StageResult, get_store

LINK_EXPIRES_S = 7 * 24 * 3600  # S3's longest presigned URL with SigV4
PREVIEW_WIDTH = 320
PREVIEW_S = 4.0  # the preview clip: the video's first seconds
PREVIEW_FPS = 10


class PublishedOutput(BaseModel):
    """What publish_output made: the store path, the link, the artifact keys."""

    path: str
    url: str
    keys: dict[str, str]
    stages: dict[str, str]  # label -> "computed" | "cached"


def artifact_key(*parts: str | None) -> str:
    """A Prefect artifact key (lower-case letters, digits and dashes) from `parts`."""
    text = "-".join(p for p in parts if p)
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def store_location(store: ArtifactStore, key: str) -> tuple[str, str]:
    """(the store path of `key`, its URL: an S3 presigned URL a browser opens, or file:// on a local store)."""
    if store.is_local:
        path = Path(store.path(key)).resolve()
        return str(path), path.as_uri()
    return f"{store.url}/{key}", store.fs.sign(store.path(key), expiration=LINK_EXPIRES_S)


def preview_webp(video: Path, width: int = PREVIEW_WIDTH, seconds: float = PREVIEW_S,
                 fps: int = PREVIEW_FPS) -> bytes:
    """The first `seconds` of `video` as a looping animated WebP, `width` px wide (ffmpeg, no sound)."""
    out, _ = (
        ffmpeg.input(str(video), t=seconds)
        .filter("fps", fps)
        .filter("scale", width, -2)
        .output("pipe:", format="webp", vcodec="libwebp_anim", loop=0, quality=55, compression_level=4, an=None)
        .run(capture_stdout=True, capture_stderr=True)
    )
    if not out:
        raise ValueError(f"{video} has no frame to preview")
    return out


def cached_preview(store: ArtifactStore, video: Artifact) -> bytes:
    """`preview_webp` of a video artifact, kept under <data_root>/work/previews by the video's
    content hash: a rerun whose stages are all cached makes no preview again (ffmpeg took 0.7 s a
    preview, half of a cached demo's flow time)."""
    from talkflow.settings import get_settings

    path = get_settings().work_dir / "previews" / f"{video.sha256}-{PREVIEW_WIDTH}-{PREVIEW_S:g}-{PREVIEW_FPS}.webp"
    if path.is_file():
        return path.read_bytes()
    clip = preview_webp(store.fetch(video))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.part")
    tmp.write_bytes(clip)
    os.replace(tmp, path)  # whole or absent: a reader never sees half a preview
    return clip


def figures_table(figures: Mapping[str, Any]) -> str:
    """A markdown table of the scalar figures (the lip-sync report's numbers)."""
    rows = [f"| {k} | {v} |" for k, v in figures.items()
            if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    return "| lip sync | value |\n|---|---|\n" + "\n".join(rows) + "\n" if rows else ""


def run_started_at() -> datetime | None:
    """When the current flow run started, as the server recorded it."""
    from prefect import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(ctx.flow_run.id)
    return run.start_time or run.expected_start_time


def stage_status(result: StageResult, started: datetime | None) -> str:
    """computed (made in this run) or cached (its manifest is older than the run)."""
    if started is None:
        return "computed"
    return "computed" if result.created >= started else "cached"


def publish_output(
    flow: str,
    output: Artifact | str,
    *,
    stages: Mapping[str, StageResult | None],
    namespace: str | None = None,
    preview: Artifact | None = None,
    what: str = "video",
    figures: Mapping[str, Any] | None = None,
) -> PublishedOutput:
    """Where the output is, a preview clip, the stage table and a log line for the flow run's output.

    output: the output artifact (a video), or a store key (e.g. a dataset's manifest).
    preview: the video the preview clip is made of; default: `output` when it is an artifact.
    figures: numbers shown beside the preview (the render's lip-sync report).
    """
    store = get_store()
    key = output.key if isinstance(output, Artifact) else output
    path, url = store_location(store, key)
    base = artifact_key(flow, namespace)
    keys = {"output": f"{base}-output", "preview": f"{base}-preview", "stages": f"{base}-stages"}

    if store.is_local:
        create_markdown_artifact(
            key=keys["output"], description=f"Where the {what} this run wrote is.",
            markdown=f"The {what} is a file on the machine that ran this flow (the worker's local store):\n\n"
                     f"`{path}`\n\nCopy it from there; a browser does not open a local file from this page. "
                     "A store on S3 (TALKFLOW_STORE_URL) gives a link that opens it.")
    else:
        create_link_artifact(key=keys["output"], link=url, link_text=path,
                             description=f"The {what} this run wrote (a link valid for 7 days).")

    source = preview or (output if isinstance(output, Artifact) else None)
    if source is not None:
        clip = cached_preview(store, source)
        if store.is_local:
            image = f"data:image/webp;base64,{base64.b64encode(clip).decode()}"
        else:
            image = store_location(store, store.put_bytes(clip, suffix=".webp").key)[1]
        create_markdown_artifact(
            key=keys["preview"], description=f"The first seconds of the {what}.",
            markdown=f"![preview of the {what}]({image})\n\n{figures_table(figures or {})}\n`{path}`")

    started = run_started_at()
    rows, status = [], {}
    for label, result in stages.items():
        if result is None:
            continue
        status[label] = stage_status(result, started)
        rows.append({"stage": label, "task": result.stage, "status": status[label],
                     "made": result.created.isoformat(timespec="seconds"),
                     "MB": round(result.size / 1e6, 2)})
    create_table_artifact(key=keys["stages"], table=rows,
                          description="Stages of this run: computed now, or cached from an earlier run.")
    computed = sum(s == "computed" for s in status.values())
    get_run_logger().info("%s written to %s (%d of %d stages computed, the others cached)",
                          what, path, computed, len(status))
    return PublishedOutput(path=path, url=url, keys=keys, stages=status)


# ---------------------------------------------------------------------------- progress of long stages
def run_logger():
    """The run's logger inside a flow or task run, else talkflow's own."""
    try:
        return get_run_logger()
    except Exception:  # outside a run
        import logging

        return logging.getLogger("talkflow")


class ProgressArtifact:
    """A Prefect progress artifact, updated as the work goes; failures never stop the work."""

    def __init__(self, description: str, start: float):
        self.id = None
        try:
            self.id = create_progress_artifact(progress=start, description=description)
        except Exception as exc:  # no API reachable: work anyway
            run_logger().warning(f"no progress artifact: {exc}")

    def update(self, percent: float) -> None:
        if self.id is None:
            return
        try:
            update_progress_artifact(self.id, progress=min(100.0, percent))
        except Exception:
            self.id = None


def _fmt(value: float | None, digits: int = 5) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def publish_training(namespace: str | None, stage_name: str, meta: dict) -> None:
    """A training stage's loss curve (table) and validation metrics (markdown) as Prefect artifacts.

    Prefect image artifacts only link to a URL, so no preview image is published."""
    try:
        ns = namespace or "any"
        curve = [{"step": int(s), "loss": round(v, 6)} for s, v in meta["curve"]]
        if curve:
            create_table_artifact(curve, key=artifact_key(ns, stage_name, "loss"),
                                  description=f"{stage_name} loss curve of {ns}")
        val = meta["val"]
        rows = "\n".join(f"| {k} | {_fmt(v, 4)} |" for k, v in val.items())
        md = (f"## {stage_name} of {ns}\n\n{meta['steps']} steps ({meta['steps_computed']} computed now, resumed "
              f"from step {meta['resumed_from_step']}), final loss {_fmt(meta['final_loss'])}, "
              f"{_fmt(meta['steps_per_s'], 2)} steps/s on {meta['device']}.\n\n"
              f"Held-out frames: {meta['val_frames']} at 1/{meta['val_downscale']} resolution.\n\n"
              f"| metric | value |\n|---|---|\n{rows}\n")
        create_markdown_artifact(md, key=artifact_key(ns, stage_name, "validation"),
                                 description=f"{stage_name} validation of {ns}")
    except Exception as exc:
        run_logger().warning(f"could not publish the {stage_name} artifacts: {exc}")
