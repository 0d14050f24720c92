"""The task run records of stages carry talkflow's cache key, and a hit is recorded as Cached
(read back from the Prefect API, as the UI's task run page shows them)."""

from __future__ import annotations

import time
import uuid

from talkflow.cache import cache_key
from tests.stages import ReverseConfig, reverse_then_again


def recorded_task_runs(flow_run_id, expected: int, timeout_s: float = 30.0):
    """The flow run's task runs once the server has recorded `expected` terminal ones (the
    server writes task runs from the client's events, a moment after the run ends)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=10, at_exit=False)
    deadline = time.monotonic() + timeout_s
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            )
        done = [r for r in runs if r.state_type is not None and r.state_type.value == "COMPLETED"]
        if len(done) >= expected or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def test_task_runs_carry_the_cache_key_and_a_hit_is_cached(tmp_path, journal):
    src = tmp_path / "input.bin"
    src.write_bytes(uuid.uuid4().bytes * 100)
    config = ReverseConfig()
    ns = f"rec-{uuid.uuid4().hex[:6]}"
    before = journal.count("reverse")

    state = reverse_then_again(src, config, namespace=ns, return_state=True)
    first, second = state.result()
    assert journal.count("reverse") == before + 1  # the second call read the first's result
    assert first.artifacts["out"].sha256 == second.artifacts["out"].sha256

    runs = recorded_task_runs(state.state_details.flow_run_id, expected=2)
    key = cache_key("reverse", "1", {"src": src, "config": config, "namespace": ns})
    assert key.startswith(f"{ns}.reverse.v1.")
    assert [(r.cache_key, r.state_name) for r in runs] == [(key, "Completed"), (key, "Cached")]
    assert all(r.state_type.value == "COMPLETED" for r in runs)
