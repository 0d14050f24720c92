"""The background Prefect server of a data root (talkflow/server.py): reused by later commands,
shared by commands started together, stale state replaced, stopped on request and when idle.

Commands are new processes (a command's use of the server lasts as long as its process). The
lifecycle tests serve tests/health_app.py (it starts in well under a second); the slow test at the
end runs the real thing: Prefect's server, CLI commands, the runs in its API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from talkflow import server
from talkflow.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
APP = "tests.health_app:create_app"

# A command: find or start the server of TALKFLOW_DATA_ROOT, print its state, then hold it for HOLD_S.
COMMAND = f"""
import json, os, time
from talkflow import server
state = server.ensure(app={APP!r})
print(json.dumps(state.model_dump()), flush=True)
time.sleep(float(os.environ.get("HOLD_S", "0")))
"""


def env_for(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TALKFLOW_"))}
    return {**env, "PYTHONPATH": str(ROOT), "TALKFLOW_DATA_ROOT": str(root), **extra}


def command(root: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", COMMAND], cwd=ROOT, env=env_for(root, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def state_of(proc: subprocess.Popen, timeout: float = 60) -> server.ServerState:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return server.ServerState.model_validate(json.loads(out.strip().splitlines()[-1]))


def starts_logged(root: Path) -> int:
    log = root / "prefect" / "server.log"
    return sum(" starting on " in line for line in log.read_text().splitlines()) if log.exists() else 0


def wait_until(predicate, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.fixture
def root(tmp_path):
    """A data root whose server, if a test started one, is stopped afterwards."""
    yield tmp_path / "root"
    server.stop(Settings(data_root=tmp_path / "root"))


def test_a_later_command_reuses_the_running_server(root):
    first = state_of(command(root))
    assert server.running(first.pid) and server.healthy(first.url)  # outlives the command that started it
    assert first.url.startswith("http://127.0.0.1:") and first.data_root == str(root.resolve())
    second = state_of(command(root))
    assert second == first  # the same process, port and start time
    assert starts_logged(root) == 1  # and no other server process was started meanwhile
    assert server.current(Settings(data_root=root)) == first


def test_two_commands_started_together_share_one_server(root):
    slow = {"HEALTH_APP_DELAY_S": "1.5"}  # the second arrives while the first one's server boots
    a, b = command(root, **slow), command(root, **slow)
    sa, sb = state_of(a), state_of(b)
    assert sa == sb and starts_logged(root) == 1


def test_each_data_root_has_its_own_server(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    try:
        sa, sb = state_of(command(a)), state_of(command(b))
        assert sa.pid != sb.pid and sa.port != sb.port
    finally:
        server.stop(Settings(data_root=a))
        server.stop(Settings(data_root=b))


@pytest.mark.parametrize("stale", ["dead pid", "another program's pid", "garbage"])
def test_a_stale_state_file_is_replaced(root, stale):
    p = server.paths(Settings(data_root=root))
    p.home.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        if stale == "dead pid":  # a killed server: its process is gone
            other.kill()
            other.wait()
        if stale == "garbage":
            p.state.write_text('{"pid": 12')  # a half-written file
        else:
            p.state.write_text(server.ServerState(
                pid=other.pid, port=9, url="http://127.0.0.1:9/api", data_root=str(root.resolve()),
                started_at=0, idle_s=60, prefect=server.prefect_version(), app=APP).model_dump_json())
        new = state_of(command(root))
        assert new.pid != other.pid and server.healthy(new.url)
        assert server.read_state(p) == new
        if stale == "another program's pid":
            assert other.poll() is None  # a process that is not our server is never signalled
    finally:
        other.kill()
        other.wait()


def test_server_stop_ends_the_process_and_removes_the_state(root):
    state = state_of(command(root))
    settings = Settings(data_root=root)
    assert server.stop(settings) == state
    assert not server.running(state.pid) and not server.healthy(state.url, timeout_s=0.5)
    assert server.read_state(server.paths(settings)) is None and server.current(settings) is None
    assert server.stop(settings) is None  # nothing left to stop
    assert "stopped" in (root / "prefect" / "server.log").read_text().splitlines()[-1]


def test_idle_server_stops_itself_but_not_while_a_command_uses_it(root):
    idle = {"TALKFLOW_SERVER_IDLE_S": "1"}
    holder = command(root, HOLD_S="4", **idle)  # a command using the server for 4 s
    line = holder.stdout.readline()
    state = server.ServerState.model_validate(json.loads(line))
    time.sleep(2.5)  # longer than the idle time, but the command still runs
    assert server.running(state.pid) and server.healthy(state.url)
    holder.wait(timeout=30)
    assert wait_until(lambda: not server.running(state.pid), timeout=15)  # 1 s after the command ended
    assert server.read_state(server.paths(Settings(data_root=root))) is None
    assert "unused for 1 s: stopping" in (root / "prefect" / "server.log").read_text()
    assert state_of(command(root, **idle)).pid != state.pid  # the next command starts a new one


def test_server_stops_when_its_data_root_is_removed(root):
    import shutil

    state = state_of(command(root, TALKFLOW_SERVER_IDLE_S="600"))
    shutil.rmtree(root)  # e.g. CI deleting its temporary data root
    assert wait_until(lambda: not server.running(state.pid), timeout=20)


def test_a_server_that_dies_at_start_is_a_clear_error(root):
    proc = subprocess.run([sys.executable, "-c", "from talkflow import server; server.ensure(app='no.such:app')"],
                          cwd=ROOT, env=env_for(root), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "exited at start" in proc.stderr and "No module named 'no'" in proc.stderr  # with its log's tail


def test_user_api_url_and_a_test_harness_win(prefect_server, tmp_path, settings_env):
    """PREFECT_API_URL from the user, or the API a harness set in Prefect's settings: no background server."""
    from talkflow import runtime

    settings_env(data_root=str(tmp_path / "root"))
    assert runtime.use_background_server() is None  # this session's prefect_test_harness
    code = "from talkflow import runtime; runtime.start_background_server(); print(runtime.use_background_server())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env=env_for(tmp_path / "root", PREFECT_API_URL="http://127.0.0.1:9/api"))
    assert out.returncode == 0 and out.stdout.strip() == "None", out.stderr
    ephemeral = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                               env=env_for(tmp_path / "root", TALKFLOW_EMBEDDED_SERVER="ephemeral"))
    assert ephemeral.returncode == 0 and ephemeral.stdout.strip() == "None", ephemeral.stderr
    assert not (tmp_path / "root" / "prefect" / "server.json").exists()


def talkflow(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "talkflow.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env_for(root, COLUMNS="400"))


def test_server_commands_without_a_server(root):
    status = talkflow(root, "server", "status")
    assert status.returncode == 1 and "no background server" in status.stdout
    stop = talkflow(root, "server", "stop")
    assert stop.returncode == 0 and "no background server was running" in stop.stdout


@pytest.mark.slow
def test_commands_share_the_real_prefect_server_and_their_runs_show_in_it(root, tmp_path):
    """Two `talkflow features` commands: the first starts Prefect's server, the second reuses it (the
    same process) and hits the cache; both runs and their task runs are in the server's API;
    `doctor` names it; `server stop` ends it."""
    import urllib.request

    from tests.mediafiles import ffmpeg_run

    wav = tmp_path / "tone.wav"
    ffmpeg_run("-f", "lavfi", "-i", "sine=frequency=220:duration=1.5", "-ar", "16000", str(wav))
    first = talkflow(root, "features", str(wav), "--out", str(tmp_path / "a.npy"))
    assert first.returncode == 0, first.stdout + first.stderr
    settings = Settings(data_root=root)
    state = server.current(settings)
    assert state is not None and state.app == server.PREFECT_APP
    second = talkflow(root, "features", str(wav), "--out", str(tmp_path / "b.npy"))
    assert second.returncode == 0, second.stdout + second.stderr
    assert server.current(settings) == state and starts_logged(root) == 1  # reused: no new server process
    journal = [json.loads(line) for line in (root / "journal.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in journal].count("audio_features") == 1  # the second run was a cache hit

    def post(path: str, body: dict) -> list[dict]:
        request = urllib.request.Request(f"{state.url}/{path}", data=json.dumps(body).encode(), method="POST",
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())

    runs = post("flow_runs/filter", {"flow_runs": {"name": {}}})
    assert len(runs) == 2 and all(r["state_type"] == "COMPLETED" for r in runs)
    tasks = post("task_runs/filter", {})
    assert sorted(t["state_name"] for t in tasks if t["task_key"].startswith("audio_features")) == ["Cached",
                                                                                                   "Completed"]
    doctor = talkflow(root, "doctor")
    assert f"background server {state.ui_url}" in doctor.stdout, doctor.stdout
    assert f"pid {state.pid}" in talkflow(root, "server", "status").stdout
    stop = talkflow(root, "server", "stop")
    assert stop.returncode == 0 and f"pid {state.pid}" in stop.stdout
    assert not server.running(state.pid)


def test_flows_on_the_background_server_send_no_heartbeats(monkeypatch):
    """The background server runs no crash detection, and each flow run's end waits up to 1 s for its
    heartbeat thread: runs on it send none; elsewhere Prefect's setting stands."""
    from prefect.settings import get_current_settings

    from talkflow import runtime

    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None
    with runtime.background_run_settings():  # this session's test harness: left as it is
        assert get_current_settings().flows.heartbeat_frequency == default
    monkeypatch.setattr(runtime, "_wants_background_server", lambda: True)
    with runtime.background_run_settings():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == default
