"""Warm commands: a process per data root that has already imported the flows, and forks a copy of
itself for each command that runs one.

A command that runs a flow spends 3-4 s importing Prefect, the flows and their stage modules, and
another 2-3 s importing torch in the first stage that computes, before any work. With the data
root's background server running (talkflow.server), the first such command that ran in its own
process leaves a *warm process* behind: `python -m talkflow.warm`, detached, which imports all of
that once and then waits on a Unix socket, `<data_root>/prefect/warm.sock`. A later command (the
`talkflow` program, `main` below) connects, hands over its argv, working folder, environment and
its stdin/stdout/stderr (SCM_RIGHTS), and the warm process forks a child that runs the command
exactly as `talkflow.cli.main` would in the command's own process: same flows, same Prefect
server, same cache, same output and exit code. The command waits for the child's exit code and
forwards Ctrl-C (SIGINT) and SIGTERM to it; a child whose command goes away is ended.

The warm process is used only when it is exactly what the command would have imported: its
*stamp* (the environment but a few shell variables, the Python, the installed packages' folder,
and every talkflow source file's size and mtime) must equal the command's. Otherwise it refuses,
retires, and the command runs in its own process and leaves a new warm process behind; so an
edited source file or another TALKFLOW_/PREFECT_ variable never meets stale code or settings.

It serves only where the background server is used (embedded mode, no PREFECT_API_URL of the
user's) and stops with it: when the server's state file goes (`talkflow server stop`, idle), after
`Settings.server_idle_s` without a command, or on SIGTERM. TALKFLOW_WARM_COMMANDS=0 turns it off.
Imports here are the standard library and the settings only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

# The commands that run flows (the others import no flow and answer in well under a second)
COMMANDS = frozenset({"demo", "render", "portrait", "preprocess", "train", "features", "sample-clip",
                      "import-dataset", "media"})
# Shell bookkeeping that differs between two commands of one session without changing what they do
VOLATILE_ENV = frozenset({"_", "PWD", "OLDPWD", "SHLVL", "COLUMNS", "LINES", "TERM", "TERM_PROGRAM",
                          "TERM_PROGRAM_VERSION", "TERM_SESSION_ID", "COLORTERM", "SSH_TTY", "WINDOWID"})
SOURCES = ("talkflow", "flows", "tasks", "models", "pools")
PRELOAD = ("talkflow.cli", "talkflow.api", "flows.demo", "flows.features", "flows.import_dataset", "flows.media",
           "flows.portrait", "flows.preprocess", "flows.render", "flows.sample_clip", "flows.train", "torch")
SOCKET_NAME, STATE_NAME, LOCK_NAME, LOG_NAME = "warm.sock", "warm.json", "warm.lock", "warm.log"
CHILD_ENV = "TALKFLOW_WARM_CHILD"  # set in a forked child: it leaves no warm process behind
ORIGINAL_ENV = dict(os.environ)  # the command's environment before talkflow sets Prefect's


# -- what a warm process must match ----------------------------------------------------------------
def stamp(env: dict[str, str]) -> str:
    """A digest of everything the warm process's imports depend on."""
    h = hashlib.sha256()
    for k in sorted(env):
        if k not in VOLATILE_ENV and k != CHILD_ENV:
            h.update(f"{k}={env[k]}\0".encode())
    h.update(f"{sys.executable}\0{sys.version}\0".encode())
    for folder in sys.path:
        with contextlib.suppress(OSError):
            if folder.endswith("site-packages"):
                h.update(f"{folder}:{os.stat(folder).st_mtime_ns}\0".encode())  # a package (un)installed
    root = Path(__file__).resolve().parents[1]
    for package in SOURCES:
        for folder, dirs, files in os.walk(root / package):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    st = os.stat(os.path.join(folder, name))
                    h.update(f"{folder}/{name}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def _home() -> Path | None:
    """The data root's Prefect home when commands use its background server, else None."""
    from talkflow.runtime import embedded
    from talkflow.settings import get_settings

    s = get_settings()
    if not s.warm_commands or s.embedded_server != "background" or not embedded(ORIGINAL_ENV):
        return None
    return s.prefect_home


# -- the command's side ------------------------------------------------------------------------------
def _send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    payload = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(sock, [payload], fds)
    else:
        sock.sendall(payload)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def _recv(sock: socket.socket) -> dict:
    (n,) = struct.unpack("!I", _recv_exactly(sock, 4))
    return json.loads(_recv_exactly(sock, n))


def run_warm(argv: list[str]) -> int | None:
    """Run the command in the warm process: its exit code, or None when none serves it (then the
    command runs in its own process)."""
    if not argv or argv[0] not in COMMANDS or os.environ.get(CHILD_ENV):
        return None
    home = _home()
    path = home / SOCKET_NAME if home else None
    if path is None or not path.exists() or len(str(path)) > 100:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5.0)
        sock.connect(str(path))
        _send(sock, {"stamp": stamp(ORIGINAL_ENV), "argv": argv, "cwd": os.getcwd(), "env": ORIGINAL_ENV},
              [0, 1, 2])
        reply = _recv(sock)
    except (OSError, ConnectionError, ValueError):
        sock.close()
        return None  # no warm process answers: a stale socket, or one retiring
    if "pid" not in reply:
        sock.close()
        return None  # refused: it was made for other code or settings
    child = int(reply["pid"])

    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    sock.settimeout(None)
    try:
        return int(_recv(sock)["exit"])
    except (OSError, ConnectionError, ValueError):
        print("error: the command's process ended without an exit code", file=sys.stderr)
        return 1
    finally:
        sock.close()


def leave_warm_process() -> None:
    """After a command ran in its own process: start the data root's warm process (detached) unless
    one is running or starting."""
    if os.environ.get(CHILD_ENV):
        return
    home = _home()
    if home is None or len(str(home / SOCKET_NAME)) > 100 or not _server_state(home).exists():
        return  # no background server: the command was refused before it started one
    from talkflow.server import running

    if _lock_held(home / LOCK_NAME):
        state = _read_state(home)
        if state and state.get("stamp") == stamp(ORIGINAL_ENV) and running(int(state["pid"])):
            return  # the same code and settings are warm (or warming)
    package_parent = str(Path(__file__).resolve().parents[1])  # on sys.path, not in PYTHONPATH: same stamp
    code = f"import sys; sys.path.insert(0, {package_parent!r}); from talkflow.warm import serve_main; serve_main()"
    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOG_NAME, "ab") as log:
        subprocess.Popen([sys.executable, "-c", code, "--home", str(home), "--stamp", stamp(ORIGINAL_ENV)],
                         cwd=home, env=ORIGINAL_ENV, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)


def _lock_held(path: Path) -> bool:
    """Another process holds the warm lock (a warm process is running or starting)."""
    from talkflow.server import try_flock

    fd = try_flock(path, fcntl.LOCK_EX)
    if fd is None:
        return True
    os.close(fd)
    return False


def _server_state(home: Path) -> Path:
    """The background server's state file: while it exists, the server runs."""
    from talkflow.server import Paths

    return Paths(home).state


def _read_state(home: Path) -> dict | None:
    try:
        return json.loads((home / STATE_NAME).read_text())
    except (OSError, ValueError):
        return None


def status(home: Path) -> dict | None:
    """The warm process serving this Prefect home ({pid, started_at}), or None."""
    from talkflow.server import running

    state = _read_state(home)
    if state and _lock_held(home / LOCK_NAME) and running(int(state["pid"])) and (home / SOCKET_NAME).exists():
        return state
    return None  # none, or still importing


def main() -> None:
    """The `talkflow` program: a command in the warm process when one serves it, else here."""
    code = run_warm(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from talkflow import cli

    try:
        cli.main()
    finally:
        if sys.argv[1:2] and sys.argv[1] in COMMANDS:
            with contextlib.suppress(Exception):  # never fails the command that ran
                leave_warm_process()


# -- the warm process --------------------------------------------------------------------------------
def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} warm {os.getpid()}: {message}", flush=True)


def serve(home: Path, expected: str) -> None:
    lock = os.open(home / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        old = _read_state(home)
        if old:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(old["pid"]), signal.SIGTERM)  # an older warm process (other code): it retires
        fcntl.flock(lock, fcntl.LOCK_EX)  # held for life: one warm process per data root
    own = stamp(ORIGINAL_ENV)
    server_state = _server_state(home)
    if own != expected or not server_state.exists():
        _log("the sources changed, or the server stopped, while starting: not serving")
        return
    state = {"pid": os.getpid(), "started_at": time.time(), "stamp": own}
    (home / STATE_NAME).write_text(json.dumps(state))  # starting: commands with this stamp start no other
    path = home / SOCKET_NAME
    try:
        listener = _import_and_listen(home, path, server_state)
        if listener is None:
            return
        from talkflow.settings import get_settings

        idle_s = get_settings().server_idle_s
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reap themselves
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        last_used = time.monotonic()
        with listener:
            while time.monotonic() - last_used < idle_s and server_state.exists():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                last_used = time.monotonic()
                with conn:
                    if not _serve_one(conn, listener, own):
                        _log("a command with other code or settings: retiring")
                        return
        _log("idle, or the background server stopped: exiting")
    finally:
        if (_read_state(home) or {}).get("pid") == os.getpid():  # a newer warm process keeps its own
            path.unlink(missing_ok=True)
            (home / STATE_NAME).unlink(missing_ok=True)


def _import_and_listen(home: Path, path: Path, server_state: Path) -> socket.socket | None:
    """Import what commands need, then listen on `path`; None when the server stopped meanwhile."""
    started = time.monotonic()
    for name in PRELOAD:
        if not server_state.exists():
            _log("the background server stopped while importing: not serving")
            return None
        __import__(name)
    _log(f"imported the flows and torch in {time.monotonic() - started:.1f} s")
    tmp = home / f"warm.{os.getpid()}.sock"
    tmp.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp))
    listener.listen(16)
    listener.settimeout(1.0)
    os.replace(tmp, path)  # commands find it only now, fully imported
    return listener


def _serve_one(conn: socket.socket, listener: socket.socket, own: str) -> bool:
    """Fork a child for one command; False when the command's stamp is not ours."""
    conn.settimeout(5.0)
    fds: list[int] = []
    try:
        (n,) = struct.unpack("!I", _recv_exactly_fds(conn, 4, fds))
        request = json.loads(_recv_exactly(conn, n))
    except (OSError, ConnectionError, ValueError):
        for fd in fds:
            os.close(fd)
        return True
    if request.get("stamp") != own or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(OSError):
            _send(conn, {"refused": "stamp"})
        return False
    pid = os.fork()
    if pid == 0:
        listener.close()
        _child(conn, fds, request)  # never returns
    for fd in fds:
        os.close(fd)
    _log(f"`{' '.join(request['argv'][:1])}` in child {pid}")
    with contextlib.suppress(OSError):
        _send(conn, {"pid": pid})
    return True


def _recv_exactly_fds(conn: socket.socket, n: int, fds: list[int]) -> bytes:
    msg, received, _flags, _addr = socket.recv_fds(conn, n, 3)
    fds.extend(received)
    if not msg:
        raise ConnectionError("closed")
    return msg + (_recv_exactly(conn, n - len(msg)) if len(msg) < n else b"")


def _child(conn: socket.socket, fds: list[int], request: dict) -> None:
    """Run the command as its own process would, then report its exit code and exit."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # subprocess waits for its children
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[CHILD_ENV] = "1"
        sys.argv = ["talkflow", *request["argv"]]
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(line_buffering=stream.isatty())
        _watch_command(conn)
        from talkflow import cli
        from talkflow.runtime import configure_prefect_env
        from talkflow.settings import get_settings

        get_settings.cache_clear()
        configure_prefect_env()
        cli.fresh_consoles()
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except KeyboardInterrupt:
            code = 130
    except BaseException:  # noqa: BLE001  (reported on the command's stderr, then the exit code)
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            _send(conn, {"exit": code})
        os._exit(code)


def _watch_command(conn: socket.socket) -> None:
    """End this child (as a terminal's hang-up would) when the command that asked for it goes."""
    import threading

    def watch() -> None:
        with contextlib.suppress(OSError):
            conn.settimeout(None)
            while conn.recv(1, socket.MSG_PEEK):
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="command-watch").start()


def serve_main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="talkflow.warm", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="The data root's Prefect home.")
    parser.add_argument("--stamp", required=True, help="The stamp of the command that started it.")
    args = parser.parse_args()
    serve(args.home, args.stamp)
