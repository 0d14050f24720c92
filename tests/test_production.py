"""Production setup: Docker GPU pools, a Prefect server on PostgreSQL with two workers, S3, Redis.

The "cluster" fixture runs what docker/compose.yaml runs, as plain processes on 127.0.0.1:
`prefect server start` on a fresh PostgreSQL database, moto's S3 server as the store, Redis for
locks, `python -m pools.setup`, and two workers started through docker/entrypoint.sh
(process workers, each with its own data root, so each journal shows what that worker computed).
No Docker engine is needed: the Docker side is tested up to the job configuration and the
arguments docker-py would send.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from prefect import flow

from talkflow.cache import _not_user_error, stage
from talkflow.errors import CorruptArtifact, InputError, StoreError
from talkflow.store import StageResult, get_store
from tests.conftest import free_port
from tests.mediafiles import make_clip
from tests.servers import (
    api,
    clean_env,
    deploy_all,
    deploy_flow,
    flow_name,
    prefect_server,
    setup_server,
    start,
    stop,
    tail,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
REDIS_URL = "redis://127.0.0.1:6379/0"
POOL = "ci-process"
RUN_TIMEOUT_S = 180


# -- helpers -----------------------------------------------------------------------------------
def journal_count(root: Path, stage_name: str) -> int:
    path = root / "journal.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if json.loads(line)["stage"] == stage_name)


@dataclass
class Worker:
    name: str
    queue: str
    root: Path
    log: Path
    proc: subprocess.Popen

    def ran(self, flow_run_name: str) -> bool:
        return f"Beginning flow run '{flow_run_name}'" in self.log.read_text(errors="replace")


@dataclass
class Cluster:
    url: str
    bucket: str
    store_url: str
    access_key: str
    secret: str
    tmp: Path
    server_log: Path
    workers: dict[str, Worker] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    docker_deployments: dict = field(default_factory=dict)  # name -> deployment, Docker setup
    docker_variables: dict = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        """What a machine of the cluster has in its environment."""
        return clean_env(
            PREFECT_API_URL=self.url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            TALKFLOW_STORE_URL=self.store_url,
            TALKFLOW_REDIS_URL=REDIS_URL,
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=os.environ["AWS_ENDPOINT_URL"],
            **extra,
        )

    def logs(self) -> str:
        parts = [f"--- server\n{tail(self.server_log)}"]
        parts += [f"--- {w.name}\n{tail(w.log)}" for w in self.workers.values()]
        return "\n".join(parts)


def deploy(cluster: Cluster) -> str:
    """The project's prefect.yaml, `prefect --no-prompt deploy --all` as an operator runs it."""
    return deploy_all(cluster.env())


def wait_final(cluster: Cluster, ids: list, timeout_s: float = RUN_TIMEOUT_S) -> list:
    from prefect import get_client

    deadline = time.monotonic() + timeout_s
    with api(cluster.url), get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(i) for i in ids]
            if all(r.state and r.state.is_final() for r in runs):
                return runs
            if time.monotonic() > deadline:
                states = [(r.name, r.state.name if r.state else None) for r in runs]
                raise TimeoutError(f"runs not finished after {timeout_s} s: {states}\n{cluster.logs()}")
            time.sleep(1.0)


# -- the cluster -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server) -> Iterator[Cluster]:
    import fsspec
    from prefect import get_client

    from tests.stages import reverse_flow

    t0 = time.perf_counter()
    tmp = tmp_path_factory.mktemp("cluster")
    procs: list[subprocess.Popen] = []
    with prefect_server(tmp, "postgresql") as server:
        try:
            server_up = time.perf_counter() - t0
            bucket = f"tf-ci-{uuid.uuid4().hex[:10]}"
            fsspec.filesystem("s3", skip_instance_cache=True).mkdir(bucket)
            cluster = Cluster(
                url=server.url, bucket=bucket, store_url=f"s3://{bucket}/talkflow",
                access_key="AKIATALKFLOWCI" + uuid.uuid4().hex[:6].upper(),
                secret=f"tf-secret-{uuid.uuid4().hex}",
                tmp=tmp, server_log=server.log,
            )
            # Docker setup first: the real prefect.yaml deployed to the Docker pools, as recorded
            # for test_prefect_yaml_deploys_to_the_docker_pools ...
            setup_server(cluster.env(), "--gpu-classes", "a100,l4", "--gpus", "a100=2",
                         "--process-pool", POOL, "--deploy-to", "docker")
            deploy(cluster)
            with api(server.url), get_client(sync_client=True) as client:
                cluster.docker_deployments = {d.name: d for d in client.read_deployments()}
                cluster.docker_variables = {v.name: v.value for v in client.read_variables()}
            # ... then the same file deployed to the process pool the two workers serve
            setup_server(cluster.env(), "--gpu-classes", "a100,l4", "--gpus", "a100=2",
                         "--process-pool", POOL)
            deploy(cluster)
            with api(server.url), get_client(sync_client=True) as client:
                deploy_flow(client, reverse_flow, "reverse", POOL, "tests.stages:reverse_flow")
                for name in ("q-a", "q-b"):  # a worker polling a queue that does not exist gets nothing
                    client.create_work_queue(name=name, work_pool_name=POOL)

            for name, queue in (("worker-a", "q-a"), ("worker-b", "q-b")):
                root = tmp / name
                root.mkdir()
                log = tmp / f"{name}.log"
                proc = start(
                    ["bash", str(ENTRYPOINT), "worker", "--work-queue", "default", "--work-queue", queue],
                    cluster.env(
                        TALKFLOW_WORKER_POOL=POOL, TALKFLOW_WORKER_TYPE="process",
                        TALKFLOW_WORKER_NAME=name, TALKFLOW_WORKER_LIMIT="1",
                        TALKFLOW_DATA_ROOT=str(root), TALKFLOW_PYTHON=sys.executable,
                        TALKFLOW_API_WAIT_S="30", PREFECT_HOME=str(root / "prefect-home"),
                        PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_LOGGING_LEVEL="INFO",
                    ),
                    log,
                )
                procs.append(proc)
                cluster.workers[name] = Worker(name, queue, root, log, proc)

            deadline = time.monotonic() + 90
            with api(server.url), get_client(sync_client=True) as client:
                while True:
                    online = {w.name for w in client.read_workers_for_work_pool(POOL)
                              if w.status.value == "ONLINE"}
                    if set(cluster.workers) <= online:
                        break
                    for w in cluster.workers.values():
                        assert w.proc.poll() is None, f"{w.name} exited:\n{tail(w.log)}"
                    assert time.monotonic() < deadline, f"workers not online: {online}\n{cluster.logs()}"
                    time.sleep(0.5)
            cluster.timings.update(server_up_s=round(server_up, 1),
                                   cluster_ready_s=round(time.perf_counter() - t0, 1))
            yield cluster
            print(f"\ncluster timings: {json.dumps(cluster.timings)}")
        finally:
            for proc in reversed(procs):
                stop(proc)


# -- (b) scale-out -----------------------------------------------------------------------------
GPU_DEPLOYMENTS = {"preprocess", "portrait", "train", "audio-features", "render", "infer", "retrain"}


def test_prefect_yaml_deploys_to_the_docker_pools(cluster):
    """Docker setup: all 11 deployments on the Docker pools, a run starts in the image's folder."""
    from prefect import get_client

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert len(names) == 11 and names == set(cluster.docker_deployments)
    assert cluster.docker_variables["talkflow_code_dir"] == "/opt/talkflow"
    with api(cluster.url), get_client(sync_client=True) as client:
        pools = {p.name: p for p in client.read_work_pools()}
        assert {"gpu-a100", "gpu-l4", "cpu", POOL} <= set(pools)
        assert pools["gpu-a100"].type == "docker"
        limits = {g.name: g.limit for g in client.read_global_concurrency_limits()}
        assert limits["gpu-a100"] == 2 and limits["gpu-l4"] == 1
    for d in spec["deployments"]:
        dep = cluster.docker_deployments[d["name"]]
        assert dep.work_pool_name == ("gpu-a100" if d["name"] in GPU_DEPLOYMENTS else "cpu")
        assert dep.job_variables == d["work_pool"]["job_variables"]
        assert dep.pull_steps[0]["prefect.deployments.steps.set_working_directory"] == {
            "directory": "{{ prefect.variables.talkflow_code_dir }}"}  # resolved when a run starts


def test_prefect_yaml_deploys_to_the_process_pool(cluster):
    """No-Docker setup: the same file sends every deployment to the one process pool."""
    from prefect import get_client

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    with api(cluster.url), get_client(sync_client=True) as client:
        assert client.read_variable_by_name("talkflow_code_dir").value == str(ROOT)
        for d in spec["deployments"]:
            dep = client.read_deployment_by_name(f"{flow_name(d['entrypoint'])}/{d['name']}")
            assert dep.work_pool_name == POOL
        media = client.read_deployment_by_name("media-stage/media")
    schema = media.parameter_openapi_schema
    assert schema["required"] == ["video"]
    fps = schema["definitions"]["NormalizeConfig"]["properties"]["fps"]
    assert fps["default"] == 25 and "frame rate" in fps["description"]  # the UI form's help text


def test_deploy_to_a_setup_without_its_pools_fails_before_deploying(tmp_path):
    from pools.setup import deploy_targets

    with pytest.raises(ValueError, match="--process-pool"):
        deploy_targets("process", gpu_classes=["a100"])
    with pytest.raises(ValueError, match="--gpu-classes"):
        deploy_targets("docker", process_pools=["local"])
    assert deploy_targets("docker", gpu_classes=["l4"], cpu_pool=False) == {
        "talkflow_cpu_pool": "gpu-l4", "talkflow_gpu_pool": "gpu-l4", "talkflow_code_dir": "/opt/talkflow"}
    assert deploy_targets("process", process_pools=["local"])["talkflow_code_dir"] == str(ROOT)
    out = subprocess.run([sys.executable, "-m", "pools.setup", "all", "--deploy-to", "process"],
                         cwd=ROOT, env=clean_env(PREFECT_API_URL="http://127.0.0.1:9/api"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--process-pool" in out.stderr


def test_two_workers_compute_once_then_the_other_hits_the_cache(cluster, tmp_path):
    from prefect.deployments import run_deployment

    src = tmp_path / "input.bin"
    src.write_bytes(uuid.uuid4().bytes * 4000)
    params = {"src": str(src), "config": {"delay_s": 5.0}}
    a, b = cluster.workers["worker-a"], cluster.workers["worker-b"]
    t0 = time.perf_counter()
    with api(cluster.url):
        ids = [run_deployment("reverse-flow/reverse", parameters=params, timeout=0).id
               for _ in range(2)]
    runs = wait_final(cluster, ids)
    pair_s = time.perf_counter() - t0
    assert all(r.state.is_completed() for r in runs), [r.state for r in runs]

    # each worker ran one of the two (each serves one run at a time), and they overlapped
    owners = [[w.name for w in (a, b) if w.ran(r.name)] for r in runs]
    assert sorted(o[0] for o in owners) == ["worker-a", "worker-b"], (owners, cluster.logs())
    first, second = runs
    assert first.start_time < second.end_time and second.start_time < first.end_time

    # ... and the stage was computed once, by one of them; the other waited on the Redis lock
    counts = {w.name: journal_count(w.root, "reverse") for w in (a, b)}
    assert sorted(counts.values()) == [0, 1], counts
    computed_by = next(name for name, n in counts.items() if n == 1)
    other = b if computed_by == "worker-a" else a
    with api(cluster.url):
        results = [r.state.result() for r in runs]
    assert results[0][0].artifacts == results[1][0].artifacts
    assert results[0][1].meta == results[1][1].meta == {"length": 16 * 4000 * 1}

    # a later run on the other worker (its own queue) hits what the first wrote to S3
    t1 = time.perf_counter()
    with api(cluster.url):
        later = run_deployment("reverse-flow/reverse", parameters=params, timeout=RUN_TIMEOUT_S,
                               poll_interval=1, work_queue_name=other.queue)
    assert later.state.is_completed(), (later.state, cluster.logs())
    later_s = time.perf_counter() - t1
    assert other.ran(later.name)
    assert {w.name: journal_count(w.root, "reverse") for w in (a, b)} == counts
    with api(cluster.url):
        assert later.state.result()[0].artifacts == results[0][0].artifacts
    cluster.timings.update(concurrent_pair_s=round(pair_s, 1), later_run_s=round(later_s, 1))

    # the artifacts and the stage records are on S3, not on either worker's disk
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    assert any(".reverse.v1." in p for p in fs.find(f"{cluster.bucket}/talkflow/cache"))
    key = results[0][0]["out"].key
    assert fs.exists(f"{cluster.bucket}/talkflow/{key}")
    assert not any((w.root / "store").exists() for w in (a, b))


def test_api_runs_a_flow_through_its_deployment(cluster, tmp_path):
    from flows.media import MediaConfig, MediaResult
    from talkflow.api import Talkflow
    from talkflow.store import ArtifactStore
    from tasks.media import NormalizeConfig

    clip = make_clip(tmp_path / "talk.mp4", duration=1.5, fps=30, size="96x64")
    config = MediaConfig(normalize=NormalizeConfig(size=48, min_duration_s=0.5))
    tf = Talkflow(mode="deployment", deployments={"media": "media-stage/media"},
                  timeout_s=RUN_TIMEOUT_S, poll_s=1)
    t0 = time.perf_counter()
    with api(cluster.url):
        result = tf.media(clip, config, namespace="ci-person")
    cluster.timings["api_media_run_s"] = round(time.perf_counter() - t0, 1)
    assert isinstance(result, MediaResult)
    assert result.normalized.meta["fps"] == 25 and result.normalized.meta["size"] == 48
    assert result.video.namespace == "ci-person"
    store = ArtifactStore(cluster.store_url, tmp_path / "scratch")
    assert store.verify(result.video["video"]) and store.verify(result.frames["frames"])
    computed = sum(journal_count(w.root, "normalize") for w in cluster.workers.values())
    assert computed == 1


def test_sample_clip_from_its_form_through_a_worker_shows_its_outputs(cluster):
    """The deployment run as the UI form runs it (defaults + the required text): the run shows
    the video's S3 path and a presigned link, an animated preview, the stage table, a log line."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
    from prefect.deployments import run_deployment

    with api(cluster.url), get_client(sync_client=True) as client:
        form = client.read_deployment_by_name("sample-clip/sample-clip").parameter_openapi_schema
    assert form["required"] == ["text"]
    t0 = time.perf_counter()
    with api(cluster.url):
        run = run_deployment("sample-clip/sample-clip", parameters={"text": "Hello from the form."},
                             timeout=RUN_TIMEOUT_S, poll_interval=1)
    assert run.state.is_completed(), (run.state, cluster.logs())
    cluster.timings["sample_clip_run_s"] = round(time.perf_counter() - t0, 1)
    with api(cluster.url), get_client(sync_client=True) as client:
        arts = {a.key: a for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))}
        deadline = time.monotonic() + 30
        while True:  # a worker's run sends its logs in batches
            logs = [e.message for e in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))]
            if any("video written to" in m for m in logs) or time.monotonic() > deadline:
                break
            time.sleep(1)
    link = re.fullmatch(r"\[(s3://[^\]]+)\]\((http[^)]+)\)", arts["sample-clip-output"].data)
    assert link and link.group(1).startswith(f"{cluster.store_url}/objects/"), arts["sample-clip-output"].data
    with urllib.request.urlopen(link.group(2), timeout=10) as r:  # the presigned URL opens the mp4
        assert r.read(12)[4:8] == b"ftyp"
    preview = arts["sample-clip-preview"]
    assert preview.type == "markdown"
    image = re.search(r"!\[[^\]]*\]\((http[^)]+)\)", preview.data)
    with urllib.request.urlopen(image.group(1), timeout=10) as r:
        clip = r.read()
    assert clip[:4] == b"RIFF" and b"ANIM" in clip[:64]  # the first seconds, an animated WebP in the store
    rows = arts["sample-clip-stages"].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert {row["stage"]: row["status"] for row in rows} == {"speech": "computed", "animate": "computed"}
    assert any(f"video written to {link.group(1)}" in m for m in logs), logs


# -- (d) no secrets ----------------------------------------------------------------------------
def test_no_secrets_in_pools_deployments_parameters_or_logs(cluster, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, LogFilter, LogFilterFlowRunId
    from prefect.deployments import run_deployment

    with api(cluster.url), get_client(sync_client=True) as client:
        done = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type={"any_": ["COMPLETED"]})))
    if not done:  # run alone: make one run whose worker holds the secret in its environment
        src = tmp_path / "input.bin"
        src.write_bytes(uuid.uuid4().bytes * 100)
        with api(cluster.url):
            run = run_deployment("reverse-flow/reverse", parameters={"src": str(src)},
                                 timeout=RUN_TIMEOUT_S, poll_interval=1)
        assert run.state.is_completed(), cluster.logs()

    secrets = (cluster.secret, cluster.access_key)
    seen: list[str] = []
    with api(cluster.url), get_client(sync_client=True) as client:
        pools = client.read_work_pools()
        seen += [json.dumps(p.base_job_template) for p in pools]
        gpu = next(p for p in pools if p.name == "gpu-a100")
        env = gpu.base_job_template["variables"]["properties"]["env"]["default"]
        assert env["AWS_SECRET_ACCESS_KEY"] == "{{ $AWS_SECRET_ACCESS_KEY }}"  # the name only
        for d in client.read_deployments():
            seen += [json.dumps(d.parameters), json.dumps(d.job_variables),
                     json.dumps(d.pull_steps), json.dumps(d.parameter_openapi_schema)]
        runs = client.read_flow_runs()
        assert runs
        seen += [json.dumps(r.parameters, default=str) + json.dumps(r.job_variables) for r in runs]
        logs = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs])), limit=200)
        assert logs, "the runs wrote no logs to the API"
        seen += [entry.message for entry in logs]
        seen += [json.dumps(v.value) for v in client.read_variables()]
        seen += [json.dumps(b.data, default=str) for b in client.read_block_documents()]
    seen += [w.log.read_text(errors="replace") for w in cluster.workers.values()]
    seen.append(cluster.server_log.read_text(errors="replace"))
    for text in seen:
        for secret in secrets:
            assert secret not in text


# -- (a) the Docker job configuration ----------------------------------------------------------
class FakeDockerClient:
    """What DockerWorker asks of the engine while building container settings."""

    def version(self) -> dict:
        return {"Version": "27.3.1", "ApiVersion": "1.47"}


def test_gpu_job_configuration_carries_gpus_shm_volume_and_env(monkeypatch):
    from docker.models.containers import _create_container_args
    from prefect.client.schemas.objects import FlowRun
    from prefect_docker.worker import DockerWorker, DockerWorkerJobConfiguration

    from pools.gpu_pool import pool_definitions

    secret = f"tf-secret-{uuid.uuid4().hex}"
    worker_env = {"TALKFLOW_STORE_URL": "s3://studio-bucket/talkflow",
                  "TALKFLOW_REDIS_URL": "redis://redis:6379/0", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
                  "AWS_SECRET_ACCESS_KEY": secret, "AWS_ENDPOINT_URL": "http://minio:9000"}
    for k, v in worker_env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    pools = pool_definitions(["a100", "l4"], gpus={"a100": 4}, data_root_host="/mnt/talkflow")
    gpu = {p.name: p for p in pools}["gpu-a100"]
    assert secret not in json.dumps(gpu.base_job_template)  # names only in the template

    # the job variables prefect.yaml gives GPU deployments, plus a run-specific env entry
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    job_vars = spec["definitions"]["work_pools"]["gpu_training"]["job_variables"]
    values = {**job_vars, "env": {"TALKFLOW_LOG": "debug"}}
    config = asyncio.run(
        DockerWorkerJobConfiguration.from_template_and_values(gpu.base_job_template, values))
    assert config.container_create_kwargs == {
        "shm_size": "16g",
        "device_requests": [{"driver": "nvidia", "count": 1, "capabilities": [["gpu"]]}],
    }
    assert config.volumes == ["/mnt/talkflow:/data"]
    assert config.image == "talkflow-worker:latest"
    env = config.env
    assert env["TALKFLOW_DATA_ROOT"] == "/data" and env["TALKFLOW_GPU_CLASS"] == "a100"
    assert env["TALKFLOW_DEVICE"] == "cuda" and env["TALKFLOW_LOG"] == "debug"
    for k, v in worker_env.items():  # filled in from the worker's environment
        assert env[k] == v
    assert env["AWS_SESSION_TOKEN"] == ""  # unset on the worker: dropped by entrypoint.sh

    # what docker-py would send to the engine: a HostConfig with the GPU request and /dev/shm
    config.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="gentle-ibis"))
    settings = DockerWorker(work_pool_name=gpu.name)._build_container_settings(
        FakeDockerClient(), config)
    create = _create_container_args({**settings, "version": "1.47"})
    host = create["host_config"]
    assert host["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": 1, "DeviceIDs": [], "Capabilities": [["gpu"]],
         "Options": {}}]
    assert host["ShmSize"] == 16 * 1024**3
    assert host["Binds"] == ["/mnt/talkflow:/data"]
    assert create["environment"]["AWS_SECRET_ACCESS_KEY"] == secret

    # the CPU pool asks for no GPU
    cpu = {p.name: p for p in pools}["cpu"]
    cpu_config = asyncio.run(
        DockerWorkerJobConfiguration.from_template_and_values(cpu.base_job_template, {}))
    assert cpu_config.container_create_kwargs == {"shm_size": "2g"}
    assert cpu_config.env["TALKFLOW_DEVICE"] == "cpu" and "TALKFLOW_GPU_CLASS" not in cpu_config.env


def test_docker_pools_on_the_host_network_with_a_ca_bundle_and_no_gpu():
    """What a Docker setup on one machine without GPUs asks for (tests/test_docker_pool.py runs it):
    every deployment on the Docker `cpu` pool, runs on the host's network, the CA bundle mounted
    read-only and named to the run, images pulled only when absent."""
    from prefect_docker.worker import DockerWorkerJobConfiguration

    from pools.gpu_pool import CA_BUNDLE_IN_CONTAINER, docker_job_template, pool_definitions
    from pools.setup import deploy_targets

    assert deploy_targets("docker", cpu_only=True) == {
        "talkflow_cpu_pool": "cpu", "talkflow_gpu_pool": "cpu", "talkflow_code_dir": "/opt/talkflow"}
    with pytest.raises(ValueError, match="--cpu-only"):
        deploy_targets("docker")
    cpu = {p.name: p for p in pool_definitions(["a100"], network_mode="host", ca_bundle="/etc/ssl/ca.crt",
                                               data_root_host="/srv/tf")}["cpu"]
    config = asyncio.run(DockerWorkerJobConfiguration.from_template_and_values(cpu.base_job_template, {}))
    assert config.get_network_mode() == "host" and config.networks == []
    assert config.volumes == ["/srv/tf:/data", f"/etc/ssl/ca.crt:{CA_BUNDLE_IN_CONTAINER}:ro"]
    assert config.env["TALKFLOW_CA_BUNDLE"] == CA_BUNDLE_IN_CONTAINER
    assert config.image_pull_policy == "IfNotPresent"
    with pytest.raises(ValueError, match="not both"):
        docker_job_template(networks=["talkflow"], network_mode="host")


def test_pool_definitions_and_the_template_file():
    from pools.gpu_pool import TEMPLATE_JSON, docker_job_template, gpu_limits, pool_definitions

    pools = pool_definitions(["a100", "l4", "a100"], gpus={"l4": 3})
    assert [p.name for p in pools] == ["gpu-a100", "gpu-l4", "cpu"]
    assert gpu_limits(pools) == {"gpu-a100": 1, "gpu-l4": 3}
    with pytest.raises(ValueError, match="GPU class"):
        pool_definitions(["A100/x"])
    with pytest.raises(ValueError, match="without a pool"):
        pool_definitions(["a100"], gpus={"h100": 8})
    # the checked-in JSON is what the code builds (regenerate: python -m pools.gpu_pool --write)
    assert json.loads(TEMPLATE_JSON.read_text()) == docker_job_template()


# -- (c) retries -------------------------------------------------------------------------------
ATTEMPTS: dict[str, int] = {}


@stage("flaky_copy", "1", retries=2)
def flaky_copy(src: Path, fail_times: int) -> StageResult:
    """Fails `fail_times` times the way a busy S3 does, then stores a copy of src."""
    ATTEMPTS[str(src)] = ATTEMPTS.get(str(src), 0) + 1
    if ATTEMPTS[str(src)] <= fail_times:
        raise OSError("S3 PUT failed: 503 SlowDown, please reduce your request rate")
    return StageResult(artifacts={"copy": get_store().put_file(src)})


@stage("picky_copy", "1", retries=2)
def picky_copy(src: Path) -> StageResult:
    ATTEMPTS[str(src)] = ATTEMPTS.get(str(src), 0) + 1
    raise InputError(f"{src.name} is not a video; give an mp4 or mov file")


@flow
def copy_flow(src: Path, fail_times: int = 0, picky: bool = False):
    if picky:
        return picky_copy.with_options(retry_delay_seconds=0)(src)
    return flaky_copy.with_options(retry_delay_seconds=0)(src, fail_times)


@pytest.mark.parametrize(
    "error, retried",
    [(OSError("503 SlowDown"), True), (ConnectionError("reset by peer"), True),
     (TimeoutError("read timed out"), True), (CorruptArtifact("checksum"), True),
     (StoreError("listing failed"), True), (InputError("bad video"), False)],
)
def test_retry_condition_skips_user_errors_only(error, retried):
    from prefect.states import Failed

    assert _not_user_error(None, None, Failed(data=error)) is retried


def test_transient_store_error_is_retried_and_bad_input_is_not(tmp_path, journal):
    src = tmp_path / "in.bin"
    src.write_bytes(uuid.uuid4().bytes * 50)
    n = journal.count("flaky_copy")
    result = copy_flow(src, fail_times=2)
    assert ATTEMPTS[str(src)] == 3 and journal.count("flaky_copy") == n + 1
    assert get_store().fetch(result["copy"]).read_bytes() == src.read_bytes()

    bad = tmp_path / "notes.txt"
    bad.write_text("not a video")
    with pytest.raises(InputError, match="not a video"):
        copy_flow(bad, picky=True)
    assert ATTEMPTS[str(bad)] == 1  # failed once, not retried


# -- GPU slots (global concurrency limit) ------------------------------------------------------
def test_gpu_slot_runs_one_training_per_gpu(monkeypatch):
    from prefect import get_client

    from talkflow.gpu import gpu_slot

    gpu_class = f"ci{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:  # the session's test server
        client.upsert_global_concurrency_limit_by_name(f"gpu-{gpu_class}", 1)
    spans: list[tuple[float, float]] = []
    monkeypatch.setenv("TALKFLOW_GPU_CLASS", gpu_class)

    def train() -> None:
        with gpu_slot(timeout_s=60):
            t = time.monotonic()
            time.sleep(0.6)
            spans.append((t, time.monotonic()))

    threads = [threading.Thread(target=train) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert len(spans) == 2
    (s1, e1), (s2, e2) = sorted(spans)
    assert e1 <= s2  # the second waited for the first's GPU
    with pytest.raises(Exception, match="not found|does not exist|gpu-nosuch"):  # strict
        with gpu_slot("nosuch", timeout_s=5):
            pass


# -- the API without a server ------------------------------------------------------------------
def test_api_local_mode(tmp_path):
    from flows.media import MediaConfig, MediaResult
    from talkflow.api import Talkflow
    from tasks.media import NormalizeConfig

    tf = Talkflow()
    clip = make_clip(tmp_path / "c.mp4", duration=1.2, fps=25, size="64x48")
    out = tf.media(clip, MediaConfig(normalize=NormalizeConfig(size=32, min_duration_s=0.5)))
    assert isinstance(out, MediaResult) and out.frames.meta["n_frames"] > 0
    with pytest.raises(InputError, match="no person 'alice' preprocessed"):
        tf.train("alice", stage="lips")
    with pytest.raises(InputError, match="no avatar named 'alice'"):
        tf.infer("alice", text="hello", with_torso=False)


# -- the container entrypoint ------------------------------------------------------------------
def entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ENTRYPOINT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60,
                          env=clean_env(TALKFLOW_PYTHON=sys.executable, **env))


def test_entrypoint_checks_its_arguments_and_prepares_runs():
    out = entrypoint("worker", PREFECT_API_URL="http://127.0.0.1:9/api")
    assert out.returncode == 2 and "TALKFLOW_WORKER_POOL" in out.stderr
    out = entrypoint("worker", TALKFLOW_WORKER_POOL="cpu", TALKFLOW_WORKER_TYPE="kubernetes",
                     PREFECT_API_URL="http://127.0.0.1:9/api")
    assert out.returncode == 2 and "docker or process" in out.stderr
    out = entrypoint("worker", TALKFLOW_WORKER_POOL="cpu", TALKFLOW_WORKER_LIMIT="0",
                     PREFECT_API_URL="http://127.0.0.1:9/api")
    assert out.returncode == 2 and "positive integer" in out.stderr
    out = entrypoint("worker", TALKFLOW_WORKER_POOL="cpu")
    assert out.returncode == 2 and "PREFECT_API_URL" in out.stderr
    out = entrypoint("worker", TALKFLOW_WORKER_POOL="cpu", TALKFLOW_API_WAIT_S="2",
                     PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api")
    assert out.returncode != 0 and "did not answer /health" in out.stderr

    # a run's command: empty settings dropped, Prefect's result settings derived from the store
    show = "import os; print({k: v for k, v in os.environ.items() if k.startswith(('AWS', 'PREFECT_RESULTS'))})"
    out = entrypoint(sys.executable, "-c", show, TALKFLOW_STORE_URL="s3://b/p",
                     AWS_ENDPOINT_URL="", AWS_DEFAULT_REGION="eu-west-1")
    assert out.returncode == 0, out.stderr
    seen = eval(out.stdout)  # noqa: S307 - our own dict literal
    assert seen == {"AWS_DEFAULT_REGION": "eu-west-1",
                    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
                    "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": "remote-file-system/talkflow-store"}


def test_entrypoint_worker_starts_against_a_real_server(cluster):
    """Covered by the cluster (both workers start through entrypoint.sh); here: its log line."""
    for w in cluster.workers.values():
        text = w.log.read_text(errors="replace")
        assert re.search(rf"prefect worker start --pool {POOL} --type process .*--name {w.name} "
                         r"--limit 1", text), text[-2000:]
