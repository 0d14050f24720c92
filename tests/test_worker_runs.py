"""A process worker as an operator runs it (docker/entrypoint.sh on a real server): a bad-input run
says its cause in one ERROR line, and the worker stops on one SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.servers import api, clean_env, deploy_all, prefect_server, setup_server, start, stop, tail

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
POOL = "ui-process"


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    from prefect import get_client

    tmp = tmp_path_factory.mktemp("worker")
    with prefect_server(tmp) as server:
        env = clean_env(PREFECT_API_URL=server.url, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                        TALKFLOW_DATA_ROOT=str(tmp / "data"), PREFECT_HOME=str(tmp / "home"))
        setup_server(env, "--process-pool", POOL)
        deploy_all(env, "render")
        log = tmp / "worker.log"
        proc = start(["bash", str(ROOT / "docker" / "entrypoint.sh"), "worker"],
                     {**env, "TALKFLOW_WORKER_POOL": POOL, "TALKFLOW_WORKER_TYPE": "process",
                      "TALKFLOW_PYTHON": sys.executable, "PREFECT_WORKER_QUERY_SECONDS": "1",
                      "PREFECT_LOGGING_LEVEL": "INFO"}, log)
        try:
            deadline = time.monotonic() + 90
            with api(server.url), get_client(sync_client=True) as client:
                while not any(w.status.value == "ONLINE" for w in client.read_workers_for_work_pool(POOL)):
                    assert proc.poll() is None, tail(log)
                    assert time.monotonic() < deadline, tail(log)
                    time.sleep(0.5)
            yield server, proc, log
        finally:
            stop(proc)


def test_a_bad_path_run_logs_its_cause_in_one_error_line(worker, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.deployments import run_deployment

    server, proc, log = worker
    missing = tmp_path / "nowhere.wav"
    with api(server.url):
        run = run_deployment("render/render", parameters={"person": "ann", "audio": str(missing)},
                             timeout=180, poll_interval=1)
    assert run.state.is_failed(), (run.state, tail(log))
    assert "does not exist" in run.state.message
    deadline = time.monotonic() + 30
    with api(server.url), get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])), limit=200)
            if any("Finished in state" in e.message for e in logs) or time.monotonic() > deadline:
                break
            time.sleep(1)
    errors = [e.message for e in logs if e.level >= 40]
    assert len(errors) == 1, errors
    assert errors[0].startswith("MediaUnreadable: the audio") and str(missing) in errors[0]
    assert "\n" not in errors[0] and "Traceback" not in "".join(e.message for e in logs)


def test_one_sigterm_stops_an_idle_worker_within_10_s(worker):
    server, proc, log = worker
    assert proc.poll() is None
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)  # one signal, to the entrypoint's process only
    try:
        code = proc.wait(timeout=10)
    except Exception:
        pytest.fail(f"worker still running 10 s after SIGTERM:\n{tail(log)}")
    assert time.monotonic() - t0 < 10
    assert code in (0, 128 + signal.SIGTERM, -signal.SIGTERM), tail(log)
