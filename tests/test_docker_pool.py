"""The Docker work pool for real, on this machine: nothing about Docker is mocked.

An engine (scripts/docker-engine.sh: the running one, or Debian's docker.io started as root), the
CPU worker image built from docker/Dockerfile.worker on the Debian base scripts/docker-base.sh
makes (scripts/docker-build.sh), a Prefect server on the host's PostgreSQL, Redis locks, the store
on the data volume, and prefect-docker workers running in containers of that image. The project's
prefect.yaml is deployed as a Docker setup without GPUs (every deployment on the Docker pool
`cpu`), then sample-clip -> preprocess -> train (cpu-demo) -> infer run through it, each run a
container started by the worker, with the host's network and the data root bind-mounted.

Checked: each run's outputs and artifacts; one container per run (its flow-run label, the
run's infrastructure id, the worker's log); a second infer all Cached with the same keys; a
train container killed mid-stage leaves `talkflow cache verify` clean and the rerun resumes and
completes; a GPU pool's run on this host without an NVIDIA runtime crashes with one clear line;
the image has what Triton needs and no CA bundle in it; an unchanged rebuild is fast; a render
through the Docker pool against the same render through a process worker, side by side.

Skips only when no Docker engine can be started, with the reason. Timings are printed (`-s`) and
written to the test's tmp folder (docker-timings.json).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.servers import (
    api,
    artifacts_of,
    clean_env,
    deploy_all,
    deploy_flow,
    prefect_server,
    run,
    run_logs,
    setup_server,
    start,
    stop,
    tail,
    task_runs,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("TALKFLOW_TEST_IMAGE", "talkflow-worker:cpu")
POOL = "cpu"  # the Docker pool every deployment goes to (pools.setup --cpu-only)
GPU_CLASS = "nogpu"  # a GPU pool on a host without the NVIDIA runtime
PROCESS_POOL = "local"
REDIS_URL = "redis://127.0.0.1:6379/0"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
RUN_LABEL = "io.prefect.flow-run-id"
SMALL = 256
TEXT = "Hello there, this is a short test."
NEW_TEXT = "A new sentence."
FAST_RENDER = {"downscale": 4}  # 1/16 of the rays: the same work in both pools, in a minute or two
# generous: on 2 cores shared with other jobs, cpu-demo training took 77 s once and 15 min another time
RUN_TIMEOUT_S = {"sample-clip": 900, "preprocess": 1200, "train": 1800, "render": 1200}
TIMINGS: dict[str, float] = {}


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, f"docker {' '.join(args)}: {out.stdout}{out.stderr}"
    return out


def script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def last_json(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- engine and image --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine():
    """A Docker engine: the running one, or one started here (and stopped afterwards)."""
    running = bool(shutil.which("docker")) and subprocess.run(
        ["docker", "info"], capture_output=True, timeout=30).returncode == 0
    if not running:
        out = script("scripts/docker-engine.sh", "start", timeout=900)
        if out.returncode == 3:
            pytest.skip(out.stderr.strip().splitlines()[-1])
        assert out.returncode == 0, out.stderr
    yield
    if not running:
        script("scripts/docker-engine.sh", "stop", timeout=120)


@pytest.fixture(scope="module")
def image(engine) -> str:
    """The CPU worker image, built (or found up to date) by scripts/docker-build.sh, then rebuilt
    unchanged: every layer from the cache."""
    built = last_json(script("scripts/docker-build.sh", "cpu", IMAGE, timeout=2400))
    again = last_json(script("scripts/docker-build.sh", "cpu", IMAGE, timeout=600))
    TIMINGS.update(image_build_s=built["build_s"], image_rebuild_s=again["build_s"],
                   image_size_gb=again["size_gb"])
    assert again["build_s"] < 30, again
    assert again["size_bytes"] < 8e9, again
    return IMAGE


def in_image(image: str, *command: str, volumes: tuple[str, ...] = (), env: dict | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
    """`docker run --rm` of the image's entrypoint with `command` (the way a run's command runs)."""
    args = ["run", "--rm", "--network", "host"]
    for v in volumes:
        args += ["-v", v]
    for k, v in (env or {}).items():
        args += ["-e", f"{k}={v}"]
    return docker(*args, image, *command, timeout=timeout, check=False)


TRITON_PROBE = r"""
import os, sys
from triton.runtime.build import compile_module_from_src
src = '''#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "tf_probe", NULL, -1, methods};
PyMODINIT_FUNC PyInit_tf_probe(void) { return PyModule_Create(&mod); }
'''
m = compile_module_from_src(src + "/* " + sys.argv[1] + " */", "tf_probe")
print(m.answer(), os.environ["TRITON_CACHE_DIR"])
"""


def test_image_compiles_like_triton_keeps_its_cache_on_the_volume_and_holds_no_ca(image, tmp_path):
    """What Triton does at a process's first GPU kernel (gcc against Python.h, through Triton's
    own build helper) works in the runtime image, into TRITON_CACHE_DIR on the data volume; the
    CA bundle given to the build is in no layer, and one given at run time is trusted."""
    data = tmp_path / "data"
    data.mkdir()
    tag = uuid.uuid4().hex
    out = in_image(image, "python", "-c", TRITON_PROBE, tag, volumes=(f"{data}:/data",))
    assert out.returncode == 0, out.stdout + out.stderr
    answer, cache_dir = out.stdout.split()[-2:]
    assert answer == "42" and cache_dir == "/data/cache/triton"
    assert list((data / "cache" / "triton").rglob("tf_probe*.so"))  # on the host's volume

    # no layer holds the bundle; the build's secret was mounted under /run/secrets only
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "BEGIN CERTIFICATE" not in history
    out = in_image(image, "bash", "-c", "ls -A /run/secrets 2>/dev/null | wc -l; "
                   "ls /etc/talkflow 2>/dev/null | wc -l; echo ${SSL_CERT_FILE:-none}")
    assert out.stdout.split() == ["0", "0", "none"], out.stdout + out.stderr
    if Path(HOST_CA).exists():  # at run time: mounted read-only, named by TALKFLOW_CA_BUNDLE
        out = in_image(image, "bash", "-c", "echo $SSL_CERT_FILE $PIP_CERT $AWS_CA_BUNDLE",
                       volumes=(f"{HOST_CA}:/etc/talkflow/ca-bundle.crt:ro",),
                       env={"TALKFLOW_CA_BUNDLE": "/etc/talkflow/ca-bundle.crt"})
        assert out.stdout.split() == ["/etc/talkflow/ca-bundle.crt"] * 3, out.stdout + out.stderr
    out = in_image(image, "true", env={"TALKFLOW_CA_BUNDLE": "/etc/talkflow/missing.crt"})
    assert out.returncode == 2 and "not a readable file" in out.stderr


def test_compose_file_is_valid(engine):
    """docker/compose.yaml as Compose reads it (v2 plugin, else v1), with .env.example's values."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        compose = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        compose = ["docker-compose"]
    else:
        pytest.fail("no Docker Compose (scripts/docker-engine.sh start installs Debian's docker-compose)")
    env = {**os.environ}
    for line in (ROOT / "docker" / ".env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k] = v
    out = subprocess.run([*compose, "-f", "docker/compose.yaml", "--project-directory", "docker", "config"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    spec = yaml.safe_load(out.stdout)
    services = spec["services"]
    assert set(services) == {"postgres", "redis", "minio", "minio-init", "prefect-server", "setup",
                             "worker-gpu", "worker-cpu"}
    talkflow = {n for n, s in services.items() if str(s.get("image", "")).startswith("talkflow-worker:")}
    assert talkflow == {"prefect-server", "setup", "worker-gpu", "worker-cpu"}
    for name in ("worker-gpu", "worker-cpu"):
        volumes = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in services[name]["volumes"]]
        assert any(v.startswith("/var/run/docker.sock:/var/run/docker.sock") for v in volumes), volumes
        assert services[name]["environment"]["TALKFLOW_WORKER_TYPE"] == "docker"
    setup = services["setup"]["command"]
    assert setup[setup.index("--network") + 1] == spec["networks"]["default"]["name"] == "talkflow"
    # a missing secret stops Compose before anything starts
    env.pop("POSTGRES_PASSWORD")
    out = subprocess.run([*compose, "-f", "docker/compose.yaml", "--project-directory", "docker", "config"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "POSTGRES_PASSWORD" in out.stderr


# -- the pipeline through the Docker pool ------------------------------------------------------
def containers_of(flow_run_id) -> list[dict]:
    """`docker ps -a` of the containers labelled with the flow run's id (docker inspect records)."""
    ids = docker("ps", "-aq", "--no-trunc", "--filter", f"label={RUN_LABEL}={flow_run_id}").stdout.split()
    return json.loads(docker("inspect", *ids).stdout) if ids else []


def host_path(in_container: str, data: Path) -> Path:
    return data / Path(in_container).relative_to("/data")


def output_path(arts: dict, base: str, data: Path) -> str:
    """The store path (as the runs see it, under /data) that the run's output artifact states (a
    local store: the path in backticks, no file:// link a browser would refuse)."""
    note = arts[f"{base}-output"]
    assert note.type == "markdown" and "file://" not in note.data, note.data
    path = note.data.split("`", 2)[1]
    assert path.startswith("/data/store/") and host_path(path, data).exists(), note.data
    return path


def wait_final(url: str, flow_run_id, timeout_s: float):
    from prefect import get_client

    deadline = time.monotonic() + timeout_s
    with api(url), get_client(sync_client=True) as client:
        while True:
            fr = client.read_flow_run(flow_run_id)
            if (fr.state and fr.state.is_final()) or time.monotonic() > deadline:
                return fr
            time.sleep(1.0)


def run_overhead_s(url: str, flow_run, wall_s: float) -> float:
    """Wall time of a run less its task runs' time: starting the run's process or container,
    Prefect's engine, loading the flow, reporting."""
    runs = task_runs(url, flow_run.id)
    busy = sum((r.end_time - r.start_time).total_seconds() for r in runs.values() if r.start_time and r.end_time)
    return round(wall_s - busy, 1)


def worker_container(name: str, pool: str, env: dict[str, str]) -> str:
    args = ["run", "-d", "--name", name, "--network", "host",
            "-v", "/var/run/docker.sock:/var/run/docker.sock"]
    if Path(HOST_CA).exists():
        args += ["-v", f"{HOST_CA}:/etc/talkflow/ca-bundle.crt:ro",
                 "-e", "TALKFLOW_CA_BUNDLE=/etc/talkflow/ca-bundle.crt"]
    for k, v in {**env, "TALKFLOW_WORKER_POOL": pool, "TALKFLOW_WORKER_TYPE": "docker",
                 "TALKFLOW_WORKER_NAME": name, "TALKFLOW_WORKER_LIMIT": "1"}.items():
        args += ["-e", f"{k}={v}"]
    return docker(*args, IMAGE, "worker").stdout.strip()


def test_pipeline_through_the_docker_pool(image, tmp_path):
    from prefect import get_client

    from flows.render import render
    from flows.sample_clip import make_sample_clip
    from pools.docker_worker import no_gpu_message

    person = f"dk-{uuid.uuid4().hex[:6]}"
    data = tmp_path / "data"  # the data volume: /data in every run, the store under it
    data.mkdir()
    tag = uuid.uuid4().hex[:6]
    workers = {"cpu": f"tf-ci-worker-cpu-{tag}", "gpu": f"tf-ci-worker-gpu-{tag}"}
    docker_runs: list = []  # flow runs the Docker pool ran
    t0 = time.perf_counter()
    with prefect_server(tmp_path, "postgresql") as server:
        env = clean_env(PREFECT_API_URL=server.url, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                        TALKFLOW_REDIS_URL=REDIS_URL)
        setup_server(env, "--cpu-only", "--gpu-classes", GPU_CLASS, "--process-pool", PROCESS_POOL,
                     "--deploy-to", "docker", "--image", image, "--data-root-host", str(data),
                     "--network-mode", "host", *(["--ca-bundle", HOST_CA] if Path(HOST_CA).exists() else []))
        deploy_all(env)  # the project's prefect.yaml, as users deploy it
        with api(server.url), get_client(sync_client=True) as client:
            spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
            deployed = {d.name: d for d in client.read_deployments()}
            assert {d["name"] for d in spec["deployments"]} <= set(deployed)
            assert {deployed[d["name"]].work_pool_name for d in spec["deployments"]} == {POOL}
            pools = {p.name: p for p in client.read_work_pools()}
            assert pools[POOL].type == "docker" and pools[f"gpu-{GPU_CLASS}"].type == "docker"
            # beside them: the same render on a process worker, and a run on the GPU pool
            deploy_flow(client, render, "render-process", PROCESS_POOL, "flows.render:render")
            deploy_flow(client, make_sample_clip, "sample-clip-gpu", f"gpu-{GPU_CLASS}",
                        "flows.sample_clip:make_sample_clip")
        TIMINGS["server_setup_deploy_s"] = round(time.perf_counter() - t0, 1)

        wenv = {"PREFECT_API_URL": server.url, "TALKFLOW_REDIS_URL": REDIS_URL,
                "PREFECT_WORKER_QUERY_SECONDS": "2", "TALKFLOW_API_WAIT_S": "60", "PREFECT_LOGGING_LEVEL": "INFO"}
        plog = tmp_path / "process-worker.log"
        process_worker = None
        try:
            worker_container(workers["cpu"], POOL, wenv)
            worker_container(workers["gpu"], f"gpu-{GPU_CLASS}", wenv)
            process_worker = start(
                ["bash", str(ROOT / "docker" / "entrypoint.sh"), "worker"],
                {**env, "TALKFLOW_WORKER_POOL": PROCESS_POOL, "TALKFLOW_WORKER_TYPE": "process",
                 "TALKFLOW_DATA_ROOT": str(data), "TALKFLOW_PYTHON": sys.executable,
                 "PREFECT_HOME": str(tmp_path / "process-home"), "PREFECT_WORKER_QUERY_SECONDS": "2",
                 "TALKFLOW_API_WAIT_S": "60"}, plog)

            def worker_log(which: str = "cpu") -> str:
                out = docker("logs", workers[which], check=False)
                return out.stdout + out.stderr

            def logs() -> str:
                return (f"--- server\n{tail(server.log)}\n--- docker worker\n"
                        + "\n".join(worker_log().splitlines()[-150:]) + f"\n--- process worker\n{tail(plog)}")

            wait_online(server.url, {POOL: workers["cpu"], f"gpu-{GPU_CLASS}": workers["gpu"]}, logs)
            TIMINGS["workers_online_s"] = round(time.perf_counter() - t0, 1)
            keep = {"auto_remove": False}  # the test reads each run's container, then removes it

            # -- a GPU pool's run on a host without the NVIDIA runtime: one clear line ---------
            from prefect.deployments import run_deployment

            with api(server.url):
                gpu_run = run_deployment("sample-clip/sample-clip-gpu", parameters={"text": TEXT}, timeout=180,
                                         poll_interval=2)
            assert gpu_run.state.is_crashed(), (gpu_run.state, logs())
            line = no_gpu_message(f"gpu-{GPU_CLASS}", image)
            assert gpu_run.state.message == line and "\n" not in line
            text = run_logs(server.url, gpu_run.id, line)
            assert line in text and "Traceback" not in text and "APIError" not in text, text
            assert containers_of(gpu_run.id) == []  # the unstartable container was removed

            # -- sample-clip -> preprocess ---------------------------------------------------
            clip_run, TIMINGS["sample_clip_s"] = run(
                server.url, "sample-clip/sample-clip", {"text": TEXT, "config": {"size": SMALL}},
                RUN_TIMEOUT_S["sample-clip"], logs, job_variables=keep)
            docker_runs.append(clip_run)
            arts = artifacts_of(server.url, clip_run.id)
            assert {"sample-clip-output", "sample-clip-preview", "sample-clip-stages"} <= set(arts)
            clip = output_path(arts, "sample-clip", data)
            assert clip.endswith(".mp4") and streams(host_path(clip, data)) == "audio video"

            data_run, TIMINGS["preprocess_s"] = run(
                server.url, "preprocess-video/preprocess",
                {"video": clip, "person": person, "config": {"normalize": {"size": SMALL}}},
                RUN_TIMEOUT_S["preprocess"], logs, job_variables=keep)
            docker_runs.append(data_run)
            arts = artifacts_of(server.url, data_run.id)
            base = f"preprocess-{person}"
            assert {f"{base}-output", f"{base}-preview", f"{base}-stages"} <= set(arts)
            assert json.loads(host_path(output_path(arts, base, data), data).read_text())
            assert "dataset written to" in run_logs(server.url, data_run.id, "dataset written to")

            # -- train, its container killed mid-stage, then again ----------------------------
            t1 = time.perf_counter()
            with api(server.url):
                killed = run_deployment("train-avatar/train", parameters={"person": person, "preset": "cpu-demo"},
                                        timeout=0, job_variables=keep)
            resume_dir = data / "store" / "resume" / person
            deadline = time.monotonic() + RUN_TIMEOUT_S["train"]
            while not (resume_dir.exists() and any(resume_dir.glob("*.json"))):  # a checkpoint is stored
                assert time.monotonic() < deadline, f"no resume checkpoint in {resume_dir}\n{logs()}"
                time.sleep(0.5)
            (victim,) = containers_of(killed.id)
            assert victim["State"]["Running"], victim["State"]
            docker("kill", victim["Id"])
            killed = wait_final(server.url, killed.id, 120)
            assert killed.state.is_crashed(), (killed.state, logs())
            assert "137" in (killed.state.message or ""), killed.state.message
            docker_runs.append(killed)
            TIMINGS["train_until_killed_s"] = round(time.perf_counter() - t1, 1)

            verify = in_image(image, "talkflow", "cache", "verify", volumes=(f"{data}:/data",))
            assert verify.returncode == 0, verify.stdout + verify.stderr
            assert "bad" not in verify.stdout and " entries verified" in verify.stdout, verify.stdout

            train_run, TIMINGS["train_after_kill_s"] = run(
                server.url, "train-avatar/train", {"person": person, "preset": "cpu-demo"},
                RUN_TIMEOUT_S["train"], logs, job_variables=keep)
            docker_runs.append(train_run)
            assert "resuming from step" in run_logs(server.url, train_run.id, "resuming from step")
            arts = artifacts_of(server.url, train_run.id)
            base = f"train-{person}"
            record = json.loads(host_path(output_path(arts, base, data), data).read_text())
            assert record["person"] == person and record["torso"]["meta"]["steps"] == 600
            resumed = record["head"]["meta"]["resumed_from_step"]
            assert resumed > 0 and record["head"]["meta"]["steps_computed"] == 300 - resumed

            # -- infer, then the same again: all Cached, same keys ----------------------------
            params = {"person": person, "text": NEW_TEXT, "config": {"render": FAST_RENDER}}
            video_run, TIMINGS["infer_s"] = run(server.url, "render/render", params, RUN_TIMEOUT_S["render"],
                                                logs, job_variables=keep)
            docker_runs.append(video_run)
            arts = artifacts_of(server.url, video_run.id)
            base = f"render-{person}"
            assert {f"{base}-output", f"{base}-preview", f"{base}-stages"} <= set(arts)
            video = output_path(arts, base, data)
            assert video.endswith(".mp4") and streams(host_path(video, data)) == "audio video"
            assert "video written to" in run_logs(server.url, video_run.id, "video written to")

            again, TIMINGS["infer_again_s"] = run(server.url, "render/render", params, RUN_TIMEOUT_S["render"],
                                                  logs, job_variables=keep)
            docker_runs.append(again)
            arts = artifacts_of(server.url, again.id)
            assert output_path(arts, base, data) == video
            assert {row["status"] for row in json.loads(arts[f"{base}-stages"].data)} == {"cached"}
            first, second = task_runs(server.url, video_run.id), task_runs(server.url, again.id)
            assert set(second) == set(first) and {"tts", "render_frames", "mux"} <= set(second)
            for name, r in second.items():
                assert (first[name].state_name, r.state_name) == ("Completed", "Cached"), name
                assert r.cache_key == first[name].cache_key and f".{name}.v" in r.cache_key

            # -- the same render through the Docker pool and a process worker -----------------
            # (jpeg_quality differs, so each renders its frames and muxes; speech and features
            # are cached for both)
            side = {}
            for label, deployment, quality in (("docker", "render/render", 94),
                                               ("process", "render/render-process", 93)):
                p = {**params, "config": {"render": {**FAST_RENDER, "jpeg_quality": quality}}}
                fr, wall = run(server.url, deployment, p, RUN_TIMEOUT_S["render"], logs,
                               job_variables=keep if label == "docker" else None)
                computed = {n for n, r in task_runs(server.url, fr.id).items() if r.state_name == "Completed"}
                assert {"render_frames", "mux"} <= computed and "tts" not in computed, computed
                side[label] = {"wall_s": wall, "overhead_s": run_overhead_s(server.url, fr, wall)}
                if label == "docker":
                    docker_runs.append(fr)
            TIMINGS.update({f"render_{k}_{m}": v for k, d in side.items() for m, v in d.items()})
            assert side["docker"]["overhead_s"] - side["process"]["overhead_s"] <= 20, side

            # -- each Docker run in its own container ------------------------------------------
            log = worker_log()
            seen = set()
            for fr in docker_runs:
                (c,) = containers_of(fr.id)
                with api(server.url), get_client(sync_client=True) as client:
                    pid = client.read_flow_run(fr.id).infrastructure_pid
                assert pid and pid.endswith(f":{c['Id']}"), (pid, c["Id"])
                assert c["Config"]["Image"] == image and c["HostConfig"]["NetworkMode"] == "host"
                assert f"{data}:/data" in c["HostConfig"]["Binds"]
                assert c["State"]["ExitCode"] == (137 if fr.id == killed.id else 0), (fr.name, c["State"])
                assert f"Docker container '{c['Name'].lstrip('/')}' has status" in log
                seen.add(c["Id"])
            assert len(seen) == len(docker_runs)
        finally:
            for name in workers.values():
                docker("rm", "-f", name, check=False)
            if process_worker is not None:
                stop(process_worker)
            with api(server.url), get_client(sync_client=True) as client:
                pool_ids = [str(p.id) for p in client.read_work_pools()]
            for pool_id in pool_ids:  # the runs' containers of this server's pools
                ids = docker("ps", "-aq", "--filter", f"label=io.prefect.work-pool-id={pool_id}").stdout.split()
                if ids:
                    docker("rm", "-f", *ids, check=False)
    TIMINGS["total_s"] = round(time.perf_counter() - t0, 1)
    (tmp_path / "docker-timings.json").write_text(json.dumps(TIMINGS))
    print(f"\ndocker pool timings: {json.dumps(TIMINGS)}")


def streams(mp4: Path) -> str:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0",
                          str(mp4)], capture_output=True, text=True, timeout=60)
    return " ".join(sorted(set(out.stdout.split())))


def wait_online(url: str, workers: dict[str, str], logs, timeout_s: float = 180) -> None:
    """Until each pool has its worker ONLINE; fails early when a worker container exits."""
    from prefect import get_client

    deadline = time.monotonic() + timeout_s
    with api(url), get_client(sync_client=True) as client:
        while True:
            online = {pool for pool, name in workers.items()
                      if any(w.name == name and w.status.value == "ONLINE"
                             for w in client.read_workers_for_work_pool(pool))}
            if online == set(workers):
                return
            for name in workers.values():
                state = docker("inspect", "-f", "{{.State.Status}}", name).stdout.strip()
                assert state == "running", f"worker {name} is {state}:\n{logs()}"
            assert time.monotonic() < deadline, f"workers not online: {online}\n{logs()}"
            time.sleep(1.0)
