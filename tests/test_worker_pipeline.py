"""One machine without Docker, end to end: a fresh Prefect server, the project's prefect.yaml
deployed to a process pool, and a process worker started as the README says, running the
sample-clip, preprocess, train and infer deployments one after the other with the forms'
defaults plus the required fields (and a small size, so it fits on 2 CPU cores: 256 px frames, and
the render at half resolution, which a person sets in the same form's `render.downscale`).

The next run's input comes from the last run's artifacts, as a person in the UI would copy it:
preprocess reads the video the sample-clip run's link artifact names; train and infer find the
person by name. Each run must show its output artifacts (link, preview, stage table) and log
where its output went. The run times are printed (`-s`) and written to the test's tmp folder.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.servers import (
    artifacts_of,
    clean_env,
    deploy_all,
    prefect_server,
    run,
    run_logs,
    setup_server,
    start,
    stop,
    tail,
    task_runs,
)

# the whole pipeline through a worker: 2.5 min alone on 2 cores, more beside other work
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[1]
POOL = "local"
SMALL = 256  # px: dlib still finds the portrait's face (see flows/demo.py)
TEXT = "Hello there, this is a short test."
NEW_TEXT = "A new sentence."
# the form's render.downscale: a quarter of the rays (the full-size render of the same avatar took
# 192-241 s of the pipeline's 6-7 min on 2 cores; what it proves is the same at half size)
RENDER_CONFIG = {"render": {"downscale": 2}}
# the train form's preset with two fields changed on top of it (as a person edits the form): a
# third of cpu-demo's steps proves the same path through the worker in a third of the time
TRAIN_CONFIG = {"head": {"steps": 100}, "torso": {"steps": 200}}
RUN_TIMEOUT_S = {"sample-clip": 300, "preprocess": 900, "train": 900, "render": 600}


def output_path(arts: dict, base: str) -> Path:
    """The store path the run's output artifact states (a local store: the path in backticks, no link)."""
    note = arts[f"{base}-output"]
    assert note.type == "markdown" and "file://" not in note.data, note.data
    path = Path(note.data.split("`", 2)[1])
    assert path.exists(), note.data
    return path


def test_sample_clip_preprocess_train_infer_through_a_process_worker(tmp_path):
    person = f"e2e-{uuid.uuid4().hex[:6]}"
    root = tmp_path / "worker-root"
    root.mkdir()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with prefect_server(tmp_path, "sqlite") as server:
        env = clean_env(PREFECT_API_URL=server.url, PREFECT_SERVER_ANALYTICS_ENABLED="false")
        setup_server(env, "--process-pool", POOL)
        deploy_all(env)
        timings["server_setup_deploy_s"] = round(time.perf_counter() - t0, 1)
        log = tmp_path / "worker.log"
        worker = start(["bash", str(ROOT / "docker" / "entrypoint.sh"), "worker"],
                       {**env, "TALKFLOW_WORKER_POOL": POOL, "TALKFLOW_WORKER_TYPE": "process",
                        "TALKFLOW_DATA_ROOT": str(root), "TALKFLOW_PYTHON": sys.executable,
                        "PREFECT_HOME": str(root / "prefect-home"), "PREFECT_WORKER_QUERY_SECONDS": "2",
                        "TALKFLOW_API_WAIT_S": "30"}, log)

        def logs() -> str:
            return f"--- server\n{tail(server.log)}\n--- worker\n{tail(log, 120)}"

        try:
            clip_run, timings["sample_clip_s"] = run(
                server.url, "sample-clip/sample-clip", {"text": TEXT, "config": {"size": SMALL}},
                RUN_TIMEOUT_S["sample-clip"], logs)
            arts = artifacts_of(server.url, clip_run.id)
            assert {"sample-clip-output", "sample-clip-preview", "sample-clip-stages"} <= set(arts)
            clip = output_path(arts, "sample-clip")
            assert clip.suffix == ".mp4" and str(clip).startswith(str(root))

            # the video path a person copies from the sample clip's artifact into preprocess's form
            data_run, timings["preprocess_s"] = run(
                server.url, "preprocess-video/preprocess",
                {"video": str(clip), "person": person, "config": {"normalize": {"size": SMALL}}},
                RUN_TIMEOUT_S["preprocess"], logs)
            arts = artifacts_of(server.url, data_run.id)
            base = f"preprocess-{person}"
            assert {f"{base}-output", f"{base}-preview", f"{base}-stages"} <= set(arts)
            assert json.loads(output_path(arts, base).read_text())  # the dataset manifest
            assert "dataset written to" in run_logs(server.url, data_run.id, "dataset written to")

            train_run, timings["train_s"] = run(
                server.url, "train-avatar/train", {"person": person, "preset": "cpu-demo", "config": TRAIN_CONFIG},
                RUN_TIMEOUT_S["train"], logs)
            arts = artifacts_of(server.url, train_run.id)
            base = f"train-{person}"
            assert {f"{base}-output", f"{base}-stages"} <= set(arts)
            record = json.loads(output_path(arts, base).read_text())
            assert record["person"] == person and record["head"]["meta"]["steps"] == 100
            assert record["torso"]["meta"]["steps"] == 200 and record["lips"]["meta"]["steps"] == 30  # cpu-demo's
            table = json.loads(arts[f"{base}-stages"].data)
            assert {r["stage"]: r["status"] for r in table} == {
                "head": "computed", "lips": "computed", "torso": "computed"}

            video_run, timings["infer_s"] = run(
                server.url, "render/render", {"person": person, "text": NEW_TEXT, "config": RENDER_CONFIG},
                RUN_TIMEOUT_S["render"], logs)
            arts = artifacts_of(server.url, video_run.id)
            base = f"render-{person}"
            assert {f"{base}-output", f"{base}-preview", f"{base}-stages"} <= set(arts)
            video = output_path(arts, base)
            assert video.suffix == ".mp4"
            assert "video written to" in run_logs(server.url, video_run.id, "video written to")

            # the same request again: every stage a hit, shown as such in the stage table and
            # on the task run records (state Cached, talkflow's key), as the UI shows them
            again, timings["infer_again_s"] = run(
                server.url, "render/render", {"person": person, "text": NEW_TEXT, "config": RENDER_CONFIG},
                RUN_TIMEOUT_S["render"], logs)
            arts = artifacts_of(server.url, again.id)
            assert output_path(arts, base) == video
            assert {row["status"] for row in json.loads(arts[f"{base}-stages"].data)} == {"cached"}
            first, second = task_runs(server.url, video_run.id), task_runs(server.url, again.id)
            assert set(second) == set(first) and {"tts", "render_frames", "mux"} <= set(second)
            for name, r in second.items():
                assert (first[name].state_name, r.state_name) == ("Completed", "Cached"), name
                assert r.cache_key == first[name].cache_key and f".{name}.v" in r.cache_key
        finally:
            stop(worker)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    (tmp_path / "timings.json").write_text(json.dumps(timings))
    print(f"\nworker pipeline timings: {json.dumps(timings)}")
