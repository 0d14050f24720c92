"""Outputs in the UI: a flow run that writes a video shows its store path, a first-frame preview
and a table of computed / cached stages (read back through the API). The log line naming the
output is read back from a worker's run in test_production."""

from __future__ import annotations

import base64
import re
import uuid
from pathlib import Path

import pytest

from tests.mediafiles import make_clip

pytestmark = pytest.mark.slow


def run_artifacts(flow_run_id) -> dict[str, object]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


def stage_table(artifact) -> dict[str, str]:
    import json

    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    return {row["stage"]: row["status"] for row in rows}


def test_media_run_shows_its_output_preview_and_cached_stages(tmp_path):
    from prefect.events.worker import EventsWorker

    from flows.media import MediaConfig, media_stage
    from talkflow.store import get_store
    from tasks.media import NormalizeConfig

    clip = make_clip(tmp_path / "talk.mp4", duration=1.2, fps=25, size="96x64")
    ns = f"out-{uuid.uuid4().hex[:6]}"
    config = MediaConfig(normalize=NormalizeConfig(size=48, min_duration_s=0.5))
    first = media_stage(clip, config, namespace=ns, return_state=True)
    second = media_stage(clip, config, namespace=ns, return_state=True)  # all cache hits
    EventsWorker.drain_all(timeout=10, at_exit=False)
    result = first.result()
    video_path = Path(get_store().path(result.video["video"].key)).resolve()

    arts = run_artifacts(first.state_details.flow_run_id)
    link, preview, table = arts[f"media-{ns}-output"], arts[f"media-{ns}-preview"], arts[f"media-{ns}-stages"]
    # a local store's output: its path said plainly, no file:// link that a browser would not open
    assert link.type == "markdown" and str(video_path) in link.data and "file://" not in link.data
    assert preview.type == "markdown"
    webp = base64.b64decode(re.search(r"data:image/webp;base64,([A-Za-z0-9+/=]+)", preview.data).group(1))
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP" and b"ANIM" in webp[:64]  # an animated clip
    assert 300 < len(webp) < 500_000
    assert table.type == "table"
    assert stage_table(table) == {"probe": "computed", "normalize": "computed", "frames": "computed",
                                  "mux": "computed"}

    again = run_artifacts(second.state_details.flow_run_id)
    assert set(stage_table(again[f"media-{ns}-stages"]).values()) == {"cached"}


def test_stage_status_and_keys():
    from datetime import UTC, datetime, timedelta

    from talkflow.store import StageResult
    from tasks.outputs import artifact_key, stage_status

    started = datetime.now(UTC)
    old = StageResult(created=started - timedelta(hours=1))
    new = StageResult(created=started + timedelta(seconds=2))
    assert stage_status(old, started) == "cached" and stage_status(new, started) == "computed"
    assert artifact_key("render", "Alice_B") == "render-alice-b"
    assert artifact_key("media", None) == "media"


def test_preview_is_a_short_animated_clip_with_the_figures_beside_it(tmp_path):
    from tasks.outputs import PREVIEW_FPS, PREVIEW_S, figures_table, preview_webp

    clip = make_clip(tmp_path / "long.mp4", duration=6.0, fps=25, size="320x320")
    webp = preview_webp(clip)
    assert webp[:4] == b"RIFF" and b"ANIM" in webp[:64]
    assert webp.count(b"ANMF") == int(PREVIEW_S * PREVIEW_FPS)  # frames: the first seconds only
    table = figures_table({"opening_corr": 0.41, "bilabial_closure": 0.8, "phones_source": "aligned", "ok": True})
    assert "| opening_corr | 0.41 |" in table and "| phones_source | aligned |" in table and "ok" not in table


def test_a_videos_preview_is_made_once(tmp_path, monkeypatch):
    """publish_output's preview is kept by the video's content hash: a cached rerun makes none."""
    import tasks.outputs as outputs
    from talkflow.hashing import sha256_file
    from talkflow.store import get_store

    store = get_store()
    video = store.put_file(make_clip(tmp_path / "clip.mp4", duration=1.0, fps=25, size="64x64"))
    made = []
    monkeypatch.setattr(outputs, "preview_webp", lambda path: made.append(path) or sha256_file(path).encode())
    first = outputs.cached_preview(store, video)
    assert outputs.cached_preview(store, video) == first and len(made) == 1
    other = store.put_file(make_clip(tmp_path / "other.mp4", duration=1.2, fps=25, size="64x64"))
    assert outputs.cached_preview(store, other) != first and len(made) == 2
    from talkflow.settings import get_settings

    assert not list((get_settings().work_dir / "previews").glob("*.part"))  # no half-written preview left
