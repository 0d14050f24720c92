"""Test fixtures: a private data root, a session Prefect server, moto's S3 server, subprocesses.

TALKFLOW_DATA_ROOT is set, and Prefect's environment configured, before prefect is imported, so the embedded settings
(PREFECT_HOME, result storage) point into a temporary folder of this test process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

DATA_ROOT = Path(tempfile.mkdtemp(prefix="talkflow-tests-"))
os.environ["TALKFLOW_DATA_ROOT"] = str(DATA_ROOT)
for name in ("TALKFLOW_STORE_URL", "TALKFLOW_REDIS_URL", "PREFECT_API_URL", "TALKFLOW_BACKGROUND_API_URL",
             "TALKFLOW_EMBEDDED_SERVER"):
    os.environ.pop(name, None)
# A command run in a new process by a test starts its data root's background Prefect server; the
# fixture below stops it, and this is the backstop should a test be killed first.
os.environ.setdefault("TALKFLOW_SERVER_IDLE_S", "120")

import pytest  # noqa: E402

from talkflow.runtime import configure_prefect_env  # noqa: E402

configure_prefect_env()  # before prefect is imported
from talkflow.settings import get_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/0"


# The files that take longest run first, so that with `pytest -n 2` (make test) neither worker is
# left with a long file at the end: seconds per file in one process at 3afc4ba, on 2 shared cores
# (`--durations`; docs/testing.md); files not listed take less and run after, in their own order.
LONGEST_FIRST = {
    "test_worker_pipeline.py": 300, "test_cli.py": 438, "test_production.py": 306, "test_asset_keys.py": 301,
    "test_gpu_check.py": 243, "test_api_flows.py": 189, "test_docs_commands.py": 150, "test_train_flow.py": 145,
    "test_ernerf.py": 128, "test_schedules.py": 127, "test_cache.py": 116, "test_portrait_flow.py": 114,
    "test_contract.py": 98, "test_face3d.py": 85,
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Longest files first; each file one xdist group (its module fixtures are made once, on one
    worker) unless its tests name a group of their own."""
    items.sort(key=lambda item: -LONGEST_FIRST.get(item.path.name, 0))  # stable: a file's order is kept
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    """One Prefect API for the whole session; subprocesses reach it through PREFECT_API_URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture(autouse=True)
def stop_background_servers(request):
    """Stop the background servers that commands of the test started in its tmp_path data roots."""
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is None:
        return
    from talkflow import server
    from talkflow.settings import Settings

    for state in tmp.rglob("server.json"):
        if state.parent.name == "prefect":
            server.stop(Settings(data_root=state.parent.parent))


@pytest.fixture(scope="session", autouse=True)
def stop_session_background_server():
    yield
    from talkflow import server

    server.stop(get_settings())


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: on 2 shared cores a second OpenMP thread made training 2x slower."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def journal():
    """Counts computed stage runs (cache misses) in this process's data root."""
    from talkflow.cache import computed_stages

    class Journal:
        def count(self, stage: str, root: Path | None = None) -> int:
            if root is None:
                return sum(1 for e in computed_stages() if e["stage"] == stage)
            path = Path(root) / "journal.jsonl"
            if not path.exists():
                return 0
            lines = path.read_text().splitlines()
            return sum(1 for line in lines if json.loads(line)["stage"] == stage)

    return Journal()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback, as s3fs's own tests use it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server):
    import uuid

    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    name = f"tf-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    return name


@pytest.fixture
def settings_env(monkeypatch):
    """Change TALKFLOW_* settings for one test (the settings cache is cleared around it)."""

    def apply(**values: str) -> None:
        for k, v in values.items():
            monkeypatch.setenv(f"TALKFLOW_{k.upper()}", v)
        get_settings.cache_clear()

    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def run_python(prefect_server):
    """Run a Python snippet in a NEW process against the session's Prefect server."""

    def run(code: str, *, data_root: Path | None = None, env: dict | None = None,
            background: bool = False, timeout: float = 300):
        full_env = {**os.environ, "PREFECT_API_URL": prefect_server,
                    "TALKFLOW_DATA_ROOT": str(data_root or DATA_ROOT), **(env or {})}
        args = [sys.executable, "-c", textwrap.dedent(code)]
        if background:
            return subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
        proc = subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    return run
