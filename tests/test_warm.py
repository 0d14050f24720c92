"""Warm commands (talkflow/warm.py): a command that runs a flow is served by the data root's warm
process once one is running, with the same output, cache and exit code as in its own process; a
command with other settings is refused and runs in its own; the warm process stops with the server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from talkflow import server, warm
from talkflow.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = [sys.executable, "-c", "from talkflow.warm import main; main()"]  # the `talkflow` program


def test_the_stamp_follows_settings_not_the_shells_bookkeeping():
    env = {"TALKFLOW_DATA_ROOT": "/data", "PATH": "/bin", "PWD": "/a", "SHLVL": "1", "COLUMNS": "80"}
    same = {**env, "PWD": "/b", "SHLVL": "3", "COLUMNS": "200"}
    assert warm.stamp(env) == warm.stamp(same)
    assert warm.stamp(env) != warm.stamp({**env, "TALKFLOW_STORE_URL": "s3://bucket"})
    assert warm.stamp(env) != warm.stamp({**env, "PREFECT_LOGGING_LEVEL": "DEBUG"})


def test_commands_that_run_no_flow_never_look_for_a_warm_process(tmp_path, monkeypatch):
    monkeypatch.setattr(warm, "_home", lambda: pytest.fail("looked for a warm process"))
    assert warm.run_warm(["cache", "ls"]) is None and warm.run_warm(["--help"]) is None and warm.run_warm([]) is None


@pytest.fixture
def root(tmp_path):
    yield tmp_path / "root"
    server.stop(Settings(data_root=tmp_path / "root"))


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TALKFLOW_"))}
    return {**env, "PYTHONPATH": str(ROOT), "TALKFLOW_DATA_ROOT": str(root), "COLUMNS": "400", **extra}


def _run(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*PROGRAM, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=_env(root, **extra))


def _served(home: Path) -> int:
    log = home / warm.LOG_NAME
    return sum(" in child " in line for line in log.read_text().splitlines()) if log.exists() else 0


def _wait_warm(home: Path, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = warm.status(home)
        if state is not None:
            return state
        time.sleep(0.5)
    raise AssertionError(f"no warm process in {timeout_s} s; its log: {(home / warm.LOG_NAME).read_text()}")


@pytest.mark.slow
def test_a_later_command_is_served_by_the_warm_process(root, tmp_path):
    from tests.mediafiles import ffmpeg_run

    home = root / "prefect"
    wav = tmp_path / "tone.wav"
    ffmpeg_run("-f", "lavfi", "-i", "sine=frequency=220:duration=1.5", "-ar", "16000", str(wav))
    first = _run(root, "features", str(wav), "--out", str(tmp_path / "a.npy"))
    assert first.returncode == 0, first.stdout + first.stderr
    state = _wait_warm(home)  # left behind by the first command
    assert _served(home) == 0

    second = _run(root, "features", str(wav), "--out", str(tmp_path / "b.npy"))
    assert second.returncode == 0, second.stdout + second.stderr
    assert _served(home) == 1 and warm.status(home)["pid"] == state["pid"]
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert second.stdout.replace("b.npy", "a.npy") == first.stdout  # the same report, to the same stdout
    journal = (root / "journal.jsonl").read_text()
    assert journal.count('"audio_features"') == 1  # the warm run was a cache hit of the same cache

    bad = _run(root, "features", str(tmp_path / "missing.wav"))
    assert bad.returncode == 2 and _served(home) == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "missing.wav" in bad.stderr

    other = _run(root, "features", str(wav), "--out", str(tmp_path / "c.npy"), TALKFLOW_SOMETHING_ELSE="1")
    assert other.returncode == 0, other.stdout + other.stderr
    assert _served(home) == 2  # refused: other settings run in their own process
    assert "retiring" in (home / warm.LOG_NAME).read_text() and not server.running(state["pid"])

    newer = _wait_warm(home)  # the refused command left one for its own settings
    assert newer["pid"] != state["pid"]
    server.stop(Settings(data_root=root))
    deadline = time.monotonic() + 10
    while server.running(newer["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not server.running(newer["pid"]) and warm.status(home) is None  # stops with the server
