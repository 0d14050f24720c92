"""Real Prefect servers and workers as plain processes on 127.0.0.1, for the slow tests.

`prefect server start` on SQLite or on a fresh PostgreSQL database (created, then dropped),
`python -m pools.setup`, `prefect deploy --all` of the project's prefect.yaml, process
workers: what an operator runs, nothing mocked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SERVER_START_S = 120


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Prefect/talkflow/AWS settings, plus `extra`."""
    prefixes = ("PREFECT_", "TALKFLOW_", "AWS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


@contextmanager
def api(url: str) -> Iterator[None]:
    """Talk to a server of the test from this process (the session harness stays the default)."""
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # The events worker is one per process and keeps the server it first connected to:
    # restart it around the switch so each server gets its own events.
    EventsWorker.drain_all(timeout=10, at_exit=False)
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield
    finally:
        EventsWorker.drain_all(timeout=10, at_exit=False)


def tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}):\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout_s} s:\n{tail(log)}")


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 - closed in stop()
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own group: stop() ends its children too
    proc._log = out  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
    proc._log.close()  # type: ignore[attr-defined]


def pg(sql: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


@dataclass
class Server:
    url: str
    log: Path
    proc: subprocess.Popen


@contextmanager
def prefect_server(tmp: Path, database: str = "sqlite", **settings: str) -> Iterator[Server]:
    """`prefect server start` on SQLite (in tmp) or on a fresh PostgreSQL database.

    settings: extra environment of the server, e.g. the scheduler's loop seconds.
    """
    from tests.conftest import free_port

    db = None
    env = clean_env(
        PREFECT_HOME=str(tmp / "server-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        **settings,
    )
    if database == "postgresql":
        db = f"talkflow_ci_{uuid.uuid4().hex[:10]}"
        pg(f'CREATE DATABASE "{db}"')
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}"
    elif database == "sqlite":
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{tmp / 'prefect.db'}"
    else:
        raise ValueError(database)
    port = free_port()
    log = tmp / f"server-{database}.log"
    proc = start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                  "--port", str(port)], env, log)
    try:
        url = f"http://127.0.0.1:{port}/api"
        wait_http(f"{url}/health", proc, SERVER_START_S, log)
        yield Server(url=url, log=log, proc=proc)
    finally:
        stop(proc)
        if db:
            pg(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def setup_server(env: dict[str, str], *args: str) -> str:
    """`python -m pools.setup all ARGS` (pools, limits, block, deployment targets)."""
    out = subprocess.run([sys.executable, "-m", "pools.setup", "all", *args], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def deploy_all(env: dict[str, str], *names: str) -> str:
    """`prefect --no-prompt deploy --all` of the project's prefect.yaml, as an operator runs it
    (or only the deployments `names`)."""
    which = [a for n in names for a in ("--name", n)] or ["--all"]
    out = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", *which],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def deploy_flow(client, flow, name: str, pool: str, entrypoint: str, *, parameters=None,
                schedules=None) -> uuid.UUID:
    """A deployment of a test flow (not in prefect.yaml) on `pool`, run from this checkout."""
    from prefect.utilities.callables import parameter_schema

    flow_id = client.create_flow_from_name(flow.name)
    return client.create_deployment(
        flow_id=flow_id, name=name, entrypoint=entrypoint, work_pool_name=pool,
        parameter_openapi_schema=parameter_schema(flow).model_dump_for_openapi(),
        pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}],
        parameters=parameters or {}, schedules=schedules or [],
    )


def flow_name(entrypoint: str) -> str:
    import importlib

    module, _, fn = entrypoint.partition(":")
    return getattr(importlib.import_module(module), fn).name


# -- runs of a deployment, as the UI shows them -----------------------------------------------
def run(url: str, deployment: str, parameters: dict, timeout_s: float, logs, job_variables=None) -> tuple:
    """Run a deployment to completion: (flow run, seconds); `logs()` explains a failure."""
    from prefect.deployments import run_deployment

    t0 = time.perf_counter()
    with api(url):
        flow_run = run_deployment(deployment, parameters=parameters, timeout=timeout_s, poll_interval=2,
                                  job_variables=job_variables)
    seconds = time.perf_counter() - t0
    assert flow_run.state is not None and flow_run.state.is_completed(), (deployment, flow_run.state, logs())
    return flow_run, round(seconds, 1)


def artifacts_of(url: str, flow_run_id) -> dict:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with api(url), get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found if a.key}


def run_logs(url: str, flow_run_id, expect: str, timeout_s: float = 30.0) -> str:
    """The flow run's log messages, once one contains `expect` (the run's processes ship their
    logs in batches, which may reach the server a moment after the run has ended) or the time is up."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout_s
    with api(url), get_client(sync_client=True) as client:
        while True:
            logs, page = [], None
            while page is None or len(page) == 200:  # the API returns at most 200 per call
                page = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                        limit=200, offset=len(logs))
                logs += page
            text = "\n".join(entry.message for entry in logs)
            if expect in text or time.monotonic() > deadline:
                return text
            time.sleep(1.0)


def task_runs(url: str, flow_run_id, timeout_s: float = 30.0) -> dict:
    """The flow run's task runs by stage name, once the server has recorded them all as completed
    (it records task runs from the worker's events, a moment after the run ends)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout_s
    with api(url), get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            done = all(r.state_type is not None and r.state_type.value == "COMPLETED" for r in runs)
            if (runs and done) or time.monotonic() > deadline:
                return {r.name.rsplit("-", 1)[0]: r for r in runs}
            time.sleep(1.0)
