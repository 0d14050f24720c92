"""Schedules fire on a real Prefect server (SQLite and PostgreSQL) and a process worker runs them.

The server's scheduler service creates the runs of a short-interval deployment on its own; a
process worker started through docker/entrypoint.sh executes them. The project's prefect.yaml,
deployed as the README says, shows the retrain cron's upcoming runs.
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.servers import ROOT, api, clean_env, deploy_all, deploy_flow, prefect_server, setup_server, start, stop, tail

pytestmark = pytest.mark.slow

POOL = "local"
FAST_SERVICES = {  # the scheduler checks every 2 s instead of every 60 s
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS": "2",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "4",
}
INTERVAL_S = 4
WAIT_S = 150


def scheduled_runs(client, deployment_id):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_interval_schedule_fires_and_a_process_worker_runs_it(database, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import IntervalSchedule

    from tests.stages import reverse_flow

    with prefect_server(tmp_path, database, **FAST_SERVICES) as server:
        env = clean_env(PREFECT_API_URL=server.url, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                        TALKFLOW_DATA_ROOT=str(tmp_path / "data"))
        t0 = time.monotonic()
        setup_server(env, "--process-pool", POOL)
        t1 = time.monotonic()
        deploy_all(env, "retrain")  # from the project's prefect.yaml, with its weekly cron

        src = tmp_path / "input.bin"
        src.write_bytes(uuid.uuid4().bytes * 100)
        with api(server.url), get_client(sync_client=True) as client:
            deployment_id = deploy_flow(
                client, reverse_flow, "every-few-seconds", POOL, "tests.stages:reverse_flow",
                parameters={"src": str(src)},
                schedules=[DeploymentScheduleCreate(
                    schedule=IntervalSchedule(interval=timedelta(seconds=INTERVAL_S)), active=True)])
        t2 = time.monotonic()
        print(f"setup {t1 - t0:.1f} s, deploy --all {t2 - t1:.1f} s")
        worker_log = tmp_path / "worker.log"
        worker = start(["bash", str(ROOT / "docker" / "entrypoint.sh"), "worker"],
                       {**env, "TALKFLOW_WORKER_POOL": POOL, "TALKFLOW_WORKER_TYPE": "process",
                        "TALKFLOW_WORKER_LIMIT": "1", "TALKFLOW_PYTHON": sys.executable,
                        "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5",
                        "PREFECT_HOME": str(tmp_path / "worker-home")},
                       worker_log)
        try:
            deadline = time.monotonic() + WAIT_S
            with api(server.url), get_client(sync_client=True) as client:
                while True:
                    runs = scheduled_runs(client, deployment_id)
                    done = [r for r in runs if r.state and r.state.is_completed()]
                    if len(done) >= 1 and len(runs) >= 2:
                        break
                    assert worker.poll() is None, tail(worker_log)
                    assert time.monotonic() < deadline, (
                        f"{[(r.name, r.state_name) for r in runs]}\n{tail(worker_log)}\n{tail(server.log)}")
                    time.sleep(1)
                print(f"a scheduled run done in {time.monotonic() - t2:.1f} s")
                assert all(r.auto_scheduled for r in runs)  # made by the scheduler, not by this test
                starts = sorted(r.expected_start_time for r in runs)
                gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]
                assert gaps and all(g > 0 and g % INTERVAL_S == 0 for g in gaps), gaps  # the interval's slots

                retrain = client.read_deployment_by_name("retrain/retrain")
                upcoming = [r for r in scheduled_runs(client, retrain.id) if r.state.is_scheduled()]
        finally:
            stop(worker)
        assert "Can't evaluate bulk DML" not in server.log.read_text(errors="replace")
    # the weekly retrain: upcoming runs, each on a Sunday at 03:00 UTC, none run yet
    assert len(upcoming) >= 2, "the retrain cron has no upcoming run"
    now = datetime.now(UTC)
    for run in upcoming:
        start_at = run.expected_start_time.astimezone(UTC)
        assert start_at > now and start_at.weekday() == 6 and (start_at.hour, start_at.minute) == (3, 0)
    assert Path(tmp_path / "data").exists()  # the worker's runs wrote to its data root
