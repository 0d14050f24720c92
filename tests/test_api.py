"""The API's machinery: GPU pinning (local and in a Docker pool), checks before Prefect, held logs."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path

import pytest
import yaml
from prefect import flow, task

from talkflow.api import CALLS, Call, Talkflow, gpu_job_variables, pinned_gpu
from talkflow.cache import stage
from talkflow.errors import InputError, MediaUnreadable
from talkflow.store import StageResult
from tests.mediafiles import make_clip

ROOT = Path(__file__).resolve().parents[1]


@task
def visible_devices() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


@flow
def env_flow() -> StageResult:
    return StageResult(meta={"visible": visible_devices()})


@stage("warn_twice", "1")
def warn_twice(seed: str) -> StageResult:
    return StageResult(meta={"warnings": [f"several faces ({seed})", "3 frames without a face"]})


@stage("refuse", "1")
def refuse(seed: str) -> StageResult:
    raise InputError(f"'{seed}.mp4' has no audio track")


@task
def crash(seed: str) -> StageResult:
    raise RuntimeError(f"disk full while writing {seed}")


@flow
def warn_flow(seed: str, fail: bool = False, bug: bool = False) -> StageResult:
    out = warn_twice(seed)
    if bug:
        return crash(seed)
    return refuse(seed) if fail else out


@pytest.fixture
def calls(monkeypatch):
    monkeypatch.setitem(CALLS, "env", Call("tests.test_api:env_flow", "env/env", "talkflow.store:StageResult"))
    monkeypatch.setitem(CALLS, "warn", Call("tests.test_api:warn_flow", "warn/warn", "talkflow.store:StageResult"))


def test_gpu_id_pins_a_local_run_with_cuda_visible_devices(calls, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    tf = Talkflow()
    assert tf.run("env", gpu_id=2).meta["visible"] == "2"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"  # restored after the call
    assert tf.run("env").meta["visible"] == "0,1,2,3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pinned_gpu("1"):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    for bad in (-1, "cuda:0", "a"):
        with pytest.raises(InputError, match="gpu_id must be a GPU index"):
            gpu_job_variables(bad)


def test_gpu_id_pins_a_pool_run_to_the_docker_device(monkeypatch):
    """The job variables the API sends, through the GPU pool's template, to docker-py's arguments."""
    from docker.models.containers import _create_container_args
    from prefect.client.schemas.objects import FlowRun
    from prefect_docker.worker import DockerWorker, DockerWorkerJobConfiguration

    from pools.gpu_pool import pool_definitions
    from tests.test_production import FakeDockerClient

    gpu = pool_definitions(["a100"], gpus={"a100": 4})[0]
    job_vars = yaml.safe_load((ROOT / "prefect.yaml").read_text())["definitions"]["work_pools"][
        "gpu_training"]["job_variables"]

    def docker_args(values: dict) -> dict:
        config = asyncio.run(DockerWorkerJobConfiguration.from_template_and_values(gpu.base_job_template, values))
        config.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="calm-heron"))
        settings = DockerWorker(work_pool_name=gpu.name)._build_container_settings(FakeDockerClient(), config)
        return _create_container_args({**settings, "version": "1.47"})["host_config"]

    pinned = docker_args({**job_vars, **gpu_job_variables(3)})
    assert pinned["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": 0, "DeviceIDs": ["3"], "Capabilities": [["gpu"]], "Options": {}}]
    assert pinned["ShmSize"] == 16 * 1024**3
    default = docker_args(job_vars)  # without gpu_id: the deployment's count, no device ids
    assert default["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": 1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}]
    assert gpu_job_variables(None) == {}


def test_bad_inputs_fail_before_any_flow(tmp_path, monkeypatch):
    monkeypatch.setitem(CALLS, "preprocess", Call("tests.test_api:no_such_flow", "x/x", "x:x"))  # never reached
    tf = Talkflow()
    clip = tmp_path / "c.mp4"
    with pytest.raises(InputError, match="invalid task_id '../alice'"):
        tf.preprocess(clip, "../alice")
    with pytest.raises(MediaUnreadable, match="does not exist"):
        tf.preprocess(clip, "alice")
    video = make_clip(tmp_path / "v.mp4", duration=1.0, fps=25, size="64x48")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("years of work")
    with pytest.raises(InputError, match="did not write; it is replaced"):
        tf.preprocess(video, "alice", data_path=tmp_path / "precious")
    assert (tmp_path / "precious" / "thesis.tex").exists()
    with pytest.raises(InputError, match="stage must be one of auto, head, lips, torso, not 'eyes'"):
        tf.train(tmp_path, tmp_path / "m", stage="eyes")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not a talkflow dataset folder"):
        tf.train(tmp_path, tmp_path / "m")
    with pytest.raises(InputError, match="no person 'nobody' preprocessed"):
        tf.train("nobody", tmp_path / "m")
    with pytest.raises(InputError, match="kind must be one of logmel, phonemes, visemes, hubert, wav2vec2"):
        tf.extract_audio_features(clip, "mfcc")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="does not compute deepspeech features"):
        tf.extract_audio_features(clip, "deepspeech")
    with pytest.raises(InputError, match="exactly one of audio or text"):
        tf.infer(tmp_path, "a.wav", text="hi")
    with pytest.raises(InputError, match="not a talkflow model folder"):
        tf.infer(tmp_path, text="hi")
    with pytest.raises(InputError, match="no avatar named 'nobody'"):
        tf.infer("nobody", text="hi")
    with pytest.raises(InputError, match="invalid character"):
        tf.portrait(clip, text="hi", character="a b")
    with pytest.raises(InputError, match="new_text is empty"):
        tf.demo(new_text="  ")
    with pytest.raises(InputError, match="mode must be one of"):
        Talkflow(mode="cloud")  # type: ignore[arg-type]


@pytest.fixture
def console():
    """Prefect's console handler, writing to a buffer (the CLI's stderr)."""
    import io

    from prefect.logging.handlers import PrefectConsoleHandler

    handler = PrefectConsoleHandler(stream=io.StringIO())
    handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)
    yield handler.stream
    logging.getLogger().removeHandler(handler)


def test_stage_warnings_are_collected_and_logged_user_errors_hold_the_log(calls, caplog, console):
    from talkflow.cache_admin import list_entries
    from talkflow.store import get_store

    seed = uuid.uuid4().hex[:8]
    tf = Talkflow()
    with caplog.at_level(logging.WARNING):
        tf.run("warn", seed=seed)
    expected = [f"warn_twice: several faces ({seed})", "warn_twice: 3 frames without a face"]
    assert tf.warnings == expected
    assert [r.getMessage() for r in caplog.records if r.name == "prefect.task_runs"] == expected  # Prefect warnings
    assert seed not in console.getvalue()  # reported once, by the caller (the CLI prints tf.warnings)
    tf.run("warn", seed=seed)  # a cache hit reports them again
    assert tf.warnings == expected

    store = get_store()

    def stored() -> tuple[set, set]:  # cache entries, and the payloads the store holds
        return {e.key for e in list_entries(store)}, set(store.fs.find(store.path("objects")))

    before = stored()
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.raises(InputError, match="no audio track"):
        tf.run("warn", seed=seed, fail=True)
    assert "Failed to write result" not in caplog.text  # the failed stage persisted nothing
    assert stored() == before  # (Prefect keeps the failed flow run's exception, outside the cache)
    assert console.getvalue() == ""  # nor did Prefect print the failed runs' errors and tracebacks

    with pytest.raises(RuntimeError, match="disk full"):  # not a user error: Prefect's log is shown
        tf.run("warn", seed=seed, bug=True)
    assert f"disk full while writing {seed}" in console.getvalue() and "Traceback" in console.getvalue()


def test_every_call_has_its_flow_and_deployment():
    import importlib

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = set()
    for d in spec["deployments"]:
        module, _, fn = d["entrypoint"].partition(":")
        deployments.add(f"{getattr(importlib.import_module(module), fn).name}/{d['name']}")
    for name, call in CALLS.items():
        module, _, fn = call.flow.partition(":")
        assert hasattr(importlib.import_module(module), fn), name
        assert call.deployment in deployments, name


def test_gpu_id_pins_a_process_pool_run_with_cuda_visible_devices(monkeypatch):
    """A process pool keeps Prefect's default template, whose `env` job variable Prefect's process
    worker adds to the run's environment: gpu_id becomes the run's CUDA_VISIBLE_DEVICES."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.workers.process import ProcessJobConfiguration

    from pools.setup import process_pool

    template = process_pool("local").base_job_template
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")  # the worker's own
    config = asyncio.run(ProcessJobConfiguration.from_template_and_values(
        template, gpu_job_variables(2, "process")))
    config.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="calm-heron"))
    assert config.env["CUDA_VISIBLE_DEVICES"] == "2" and config.env["PATH"] == os.environ["PATH"]
    with pytest.raises(InputError,
                       match="gpu_id pins runs on docker and process work pools, not on a pool of type kubernetes"):
        gpu_job_variables(0, "kubernetes")


def test_a_deployment_call_pins_the_gpu_its_pool_type_takes(calls, monkeypatch):
    import talkflow.api as api

    sent = []
    monkeypatch.setattr(api.Talkflow, "_run_deployment", lambda self, name, params, jobs: sent.append((name, jobs))
                        or StageResult())
    monkeypatch.setattr(api, "_pool_type", {"env/env": "process", "warn/warn": "docker", "ecs/x": "ecs"}.__getitem__)
    tf = Talkflow(mode="deployment", deployments={"infer": "render-video/infer", "sample_clip": "ecs/x"})
    assert tf.deployments["render"] == "render-video/infer"  # the old call name still names the call
    tf.run("env", gpu_id=1)
    tf.run("warn", gpu_id="3", seed="a")
    tf.run("warn", seed="a")
    assert sent == [("env/env", {"env": {"CUDA_VISIBLE_DEVICES": "1"}}),
                    ("warn/warn", {"gpu_count": 0, "gpu_ids": ["3"]}), ("warn/warn", {})]
    with pytest.raises(InputError, match="not on a pool of type ecs"):
        tf.run("sample_clip", gpu_id=0, text="hi")


def test_render_is_the_one_name_and_infer_its_alias():
    from flows.render import render, render_video

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    by_name = {d["name"]: d["entrypoint"] for d in spec}
    assert CALLS["render"].flow == by_name["render"] == "flows.render:render"
    assert CALLS["render"].deployment == f"{render.name}/render" == "render/render"
    assert by_name["infer"] == "flows.render:render_video" and render_video.name == "render-video"
    assert render_video.fn is render.fn and Talkflow.infer is Talkflow.render
    assert "infer" not in CALLS


def test_a_missing_deployment_names_its_new_name(monkeypatch):
    import talkflow.api as api

    assert "now 'render/render'" in str(api._missing_deployment("render-video/infer"))
    assert "prefect --no-prompt deploy --all" in str(api._missing_deployment("nope/nope"))
