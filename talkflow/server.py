"""The background Prefect server of a data root: started by the first command, reused by later ones.

Embedded mode (no PREFECT_API_URL) used to start a temporary Prefect server in every process
(8-17 s per command). Instead, the first command that runs a flow starts `python -m talkflow.server`
detached from itself: it binds a free port on 127.0.0.1, writes `<root>/prefect/server.json`, and
serves Prefect's API and UI on the data root's SQLite database (the one the temporary servers
used, so earlier runs stay listed). Later commands find it through that state file and report to it.

- One per data root: find-or-start runs under an exclusive lock (`server.lock`), so two commands
  started together share one server.
- A state file whose process is gone, is not this program, or never answers `/api/health` is
  stale: its process (if it is ours) is ended and a new server replaces it.
- Every command that uses the server holds a shared lock on `server-users.lock` until it exits
  (the kernel drops it when the process dies). The server stops itself once nobody has held it for
  `Settings.server_idle_s`, when its state file is deleted or names another server (the data root
  was removed, or replaced), and on SIGTERM (`talkflow server stop`).

Server services: those Prefect's own temporary server runs (task-run recorder, event persister,
log and event streams) minus automations (triggers, actions), plus the vacuum of events older
than Prefect's retention; nothing that acts on deployments or workers (scheduler, late runs,
foreman, cancellation clean-up, pause expirations, repossessor), since embedded runs execute
inside the command's process (and Prefect 3.8.8's scheduler fails on SQLAlchemy 2.1).

Imports here are the standard library and the settings only: a command that finds a running
server pays a few milliseconds, and the server process imports Prefect after it has bound its port.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel

from talkflow.errors import TalkflowError
from talkflow.settings import Settings, get_settings

PREFECT_APP = "prefect.server.api.server:create_app"
MODULE = "talkflow.server"  # in the server's command line: how a pid is recognised as ours
HOST = "127.0.0.1"
POLL_S = 0.1

# The server's environment: analytics off (else SQLite "database is locked" tracebacks), and the
# services an embedded server does not need switched off (see the module docstring).
SERVER_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_REPOSSESSOR_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_CLEANUP_RECONCILER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
}


class ServerError(TalkflowError):
    """The background server did not start or does not answer."""


class ServerState(BaseModel):
    """What `<root>/prefect/server.json` records about the running server."""

    pid: int
    port: int
    url: str  # the API, http://127.0.0.1:<port>/api
    data_root: str
    started_at: float  # time.time()
    idle_s: float  # stops after this long unused
    prefect: str  # Prefect's version: a server of another version is replaced
    app: str  # the ASGI app factory served (Prefect's, or a test's)

    @property
    def ui_url(self) -> str:
        return self.url.removesuffix("/api")


@dataclass(frozen=True)
class Paths:
    home: Path  # the data root's PREFECT_HOME

    @property
    def state(self) -> Path:
        return self.home / "server.json"

    @property
    def lock(self) -> Path:
        return self.home / "server.lock"

    @property
    def users(self) -> Path:
        return self.home / "server-users.lock"

    @property
    def log(self) -> Path:
        return self.home / "server.log"


def paths(settings: Settings | None = None) -> Paths:
    return Paths((settings or get_settings()).prefect_home)


def prefect_version() -> str:
    return metadata.version("prefect")


# -- the state file and the process it names ------------------------------------------------------
def read_state(p: Paths) -> ServerState | None:
    try:
        return ServerState.model_validate_json(p.state.read_bytes())
    except (OSError, ValueError):
        return None  # absent, or half-written by a killed writer: stale either way


def write_state(p: Paths, state: ServerState) -> None:
    tmp = p.state.with_name(f".{p.state.name}.{os.getpid()}")
    tmp.write_text(state.model_dump_json(indent=1))
    os.replace(tmp, p.state)  # readers see the old file or the new one, never half of one


def remove_state(p: Paths, pid: int) -> None:
    """Delete the state file if it still names `pid` (never another server's)."""
    state = read_state(p)
    if state is not None and state.pid == pid:
        p.state.unlink(missing_ok=True)


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def is_our_server(pid: int, data_root: str) -> bool:
    """`pid` runs this module for `data_root`: a recycled pid of another program is never signalled."""
    if not running(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc: trust the pid
    return MODULE.encode() in argv and data_root.encode() in argv


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as r:
            return r.status == 200 and r.read().strip() == b"true"
    except (OSError, ValueError):
        return False


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# -- locks ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def flocked(path: Path, kind: int = fcntl.LOCK_EX, timeout_s: float | None = None) -> Iterator[int]:
    """Hold a kernel lock on `path` for the block (released even if this process is killed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, kind | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() > deadline:
                    raise ServerError(f"{path} is held by another process for more than {timeout_s:.0f} s; "
                                      "see `talkflow server status`") from None
                time.sleep(POLL_S)
        yield fd
    finally:
        os.close(fd)


def try_flock(path: Path, kind: int) -> int | None:
    """The fd holding `kind` on `path`, or None when another holder conflicts."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


_user_fds: dict[Path, int] = {}  # this process's shared locks on server-users.lock, kept until exit


def _hold_as_user(p: Paths) -> None:
    if p.users not in _user_fds:
        fd = os.open(p.users, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)  # the server's idle check holds LOCK_EX only for an instant
        _user_fds[p.users] = fd


# -- commands' side ---------------------------------------------------------------------------------
def current(settings: Settings | None = None) -> ServerState | None:
    """The data root's server if it is running and answers; starts nothing."""
    s = settings or get_settings()
    state = read_state(paths(s))
    if state is None or not is_our_server(state.pid, str(s.root)) or not healthy(state.url):
        return None
    return state


def begin(settings: Settings | None = None, *, app: str = PREFECT_APP) -> ServerState:
    """Find the data root's server, or start one, without waiting for it to answer; this process
    becomes one of its users. `wait_ready` then waits for /api/health. Returns its state."""
    s = settings or get_settings()
    p = paths(s)
    p.home.mkdir(parents=True, exist_ok=True)
    with flocked(p.lock, timeout_s=s.server_start_timeout_s + 30):
        state = read_state(p)
        if state is not None and _reusable(state, s, app):
            _hold_as_user(p)
            return state
        if state is not None or p.state.exists():
            _retire(p, state, str(s.root))
        state = _spawn(p, s, app)
        _hold_as_user(p)  # before the lock is released: the new server cannot idle out meanwhile
        return state


def wait_ready(state: ServerState, settings: Settings | None = None) -> ServerState:
    """Wait until the server answers /api/health; a server that dies or never answers is replaced once."""
    s = settings or get_settings()
    p = paths(s)
    for attempt in (1, 2):
        deadline = time.monotonic() + s.server_start_timeout_s
        while time.monotonic() < deadline:
            if healthy(state.url):
                return state
            if not running(state.pid):
                break
            time.sleep(POLL_S)
        died = not running(state.pid)
        with flocked(p.lock, timeout_s=s.server_start_timeout_s + 30):
            now = read_state(p)
            if now is not None and now.pid != state.pid and _reusable(now, s, state.app):
                state = now  # someone else replaced it meanwhile: use theirs
                continue
            _retire(p, now if now is not None else state, str(s.root))
            if attempt == 2:
                break
            state = _spawn(p, s, state.app)
    what = ("exited at start" if died else
            f"did not answer within {s.server_start_timeout_s:.0f} s (TALKFLOW_SERVER_START_TIMEOUT_S)")
    raise ServerError(f"the background Prefect server {what}, twice; its log {p.log} ends:\n{tail(p.log)}")


def ensure(settings: Settings | None = None, *, app: str = PREFECT_APP) -> ServerState:
    """The data root's running server (started if need be), with this process among its users."""
    s = settings or get_settings()
    return wait_ready(begin(s, app=app), s)


def stop(settings: Settings | None = None, timeout_s: float = 30.0) -> ServerState | None:
    """Stop the data root's server (SIGTERM, then SIGKILL after `timeout_s`); its state, or None
    when none was running. A stale state file is removed."""
    s = settings or get_settings()
    p = paths(s)
    if not p.state.exists():
        return None
    with flocked(p.lock, timeout_s=timeout_s + 30):
        state = read_state(p)
        if state is None or not is_our_server(state.pid, str(s.root)):
            p.state.unlink(missing_ok=True)
            return None
        _terminate(state.pid, timeout_s)
        remove_state(p, state.pid)
        return state


def in_use(settings: Settings | None = None) -> bool:
    """Some process is using the server (holds a shared lock on server-users.lock)."""
    p = paths(settings)
    if not p.users.exists():
        return False
    fd = try_flock(p.users, fcntl.LOCK_EX)
    if fd is None:
        return True
    os.close(fd)
    return False


def _reusable(state: ServerState, s: Settings, app: str) -> bool:
    return (state.app == app and state.prefect == prefect_version() and state.data_root == str(s.root)
            and is_our_server(state.pid, str(s.root)))


def _retire(p: Paths, state: ServerState | None, data_root: str) -> None:
    """End a stale server (only if the pid is ours) and remove its state file."""
    if state is not None and is_our_server(state.pid, data_root):
        _terminate(state.pid, 10.0)
    p.state.unlink(missing_ok=True)


def _terminate(pid: int, timeout_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while running(pid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if running(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # the server leads its own session: its group is its own
        while running(pid):
            time.sleep(POLL_S)


def _spawn(p: Paths, s: Settings, app: str) -> ServerState:
    """Start the server process detached (own session, no terminal, output to server.log) and wait
    for its state file: written once it has bound its port, before it imports Prefect."""
    package_parent = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PYTHONPATH"] = os.pathsep.join([package_parent, *filter(None, [env.get("PYTHONPATH")])])
    env["TALKFLOW_DATA_ROOT"] = str(s.root)
    args = [sys.executable, "-m", MODULE, "--root", str(s.root), "--app", app]
    with open(p.log, "ab") as log:
        proc = subprocess.Popen(args, cwd=p.home, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + s.server_start_timeout_s
    while time.monotonic() < deadline:
        state = read_state(p)
        if state is not None and state.pid == proc.pid:
            return state
        if proc.poll() is not None:
            raise ServerError(f"the background Prefect server exited at start ({proc.returncode}); "
                              f"its log {p.log} ends:\n{tail(p.log)}")
        time.sleep(0.02)
    _terminate(proc.pid, 5.0)
    raise ServerError(f"the background Prefect server wrote no state file within {s.server_start_timeout_s:.0f} s;"
                      f" its log {p.log} ends:\n{tail(p.log)}")


# -- the server process -----------------------------------------------------------------------------
def serve(root: Path, app: str) -> None:
    """Run the server of data root `root` until it is idle, replaced, or terminated."""
    os.environ["TALKFLOW_DATA_ROOT"] = str(root)
    get_settings.cache_clear()
    s = get_settings()
    p = paths(s)
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without
    # it every request after the first on a kept-alive connection waits ~40 ms (Nagle + delayed ACK)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))  # a free port, held from now on: no race with other programs
    port = sock.getsockname()[1]
    url = f"http://{HOST}:{port}/api"
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.update(SERVER_ENV)
    os.environ["PREFECT_HOME"] = str(p.home)
    os.environ["PREFECT_UI_API_URL"] = url  # else the UI calls port 4200
    state = ServerState(pid=os.getpid(), port=port, url=url, data_root=str(s.root), started_at=time.time(),
                        idle_s=s.server_idle_s, prefect=prefect_version(), app=app)
    # SIGTERM exits through `finally` below; uvicorn's own handler (a graceful shutdown) replaces
    # this one while it serves, then raises the signal again, which lands here
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    write_state(p, state)
    log(f"server {os.getpid()} starting on {url} (stops after {s.server_idle_s:.0f} s unused)")
    try:
        import importlib

        import uvicorn

        module, _, factory = app.partition(":")
        asgi = getattr(importlib.import_module(module), factory)()
        server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", lifespan="on",
                                               timeout_graceful_shutdown=5, timeout_keep_alive=30))
        threading.Thread(target=_watch, args=(server, p, s.server_idle_s), daemon=True, name="idle-watch").start()
        server.run(sockets=[sock])
    finally:
        with contextlib.suppress(OSError):
            remove_state(p, os.getpid())
        log(f"server {os.getpid()} stopped")


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


def _watch(server, p: Paths, idle_s: float) -> None:
    """Stop the server when nobody has used it for idle_s, or when its state file no longer names it."""
    step = min(5.0, max(0.2, idle_s / 10))
    last_used = time.monotonic()
    while not server.should_exit:
        time.sleep(step)
        state = read_state(p)
        if state is None or state.pid != os.getpid():
            log("state file gone or replaced: stopping")
            server.should_exit = True
            return
        try:
            users = try_flock(p.users, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            continue
        if users is None:  # a command holds it
            last_used = time.monotonic()
            continue
        os.close(users)
        if time.monotonic() - last_used < idle_s:
            continue
        start = try_flock(p.lock, fcntl.LOCK_EX)  # a command finding or starting the server goes first
        if start is None:
            continue
        try:
            users = try_flock(p.users, fcntl.LOCK_EX)
            if users is None:
                last_used = time.monotonic()
                continue
            os.close(users)
            remove_state(p, os.getpid())  # from now on commands start a new server
        finally:
            os.close(start)
        log(f"unused for {idle_s:.0f} s: stopping")
        server.should_exit = True
        return


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="The data root whose server this is.")
    parser.add_argument("--app", default=PREFECT_APP, help="The ASGI app factory to serve.")
    args = parser.parse_args(argv)
    serve(args.root, args.app)


if __name__ == "__main__":
    main()
