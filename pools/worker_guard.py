"""A worker that stops on one SIGTERM, idle or not.

    python -m pools.worker_guard COMMAND ...     (docker/entrypoint.sh runs every worker so)

runs COMMAND (a `prefect worker start ...`) as a child. On the first SIGTERM or SIGINT the guard
passes one SIGINT to it, Prefect's graceful stop (it takes no new runs); if the worker has not
exited after TALKFLOW_WORKER_STOP_S seconds (default 8), the guard ends the worker process alone.
Prefect's own handler alone turned a SIGTERM into a SIGINT that a worker which had run flows did
not act on within 30 s (a second signal was needed). Runs the worker started are processes of
their own (a process pool) or containers (a Docker pool): they are not signalled, finish on
their own and report their end to the server. The guard exits with the worker's status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

DEFAULT_STOP_S = 8.0


def stop_seconds() -> float:
    text = os.environ.get("TALKFLOW_WORKER_STOP_S", "")
    try:
        return float(text) if text else DEFAULT_STOP_S
    except ValueError:
        raise SystemExit(f"TALKFLOW_WORKER_STOP_S must be a number of seconds, not {text!r}") from None


def _hear_sigint() -> None:
    """In the worker before it starts: SIGINT at its default, so that Python turns it into a
    KeyboardInterrupt even when the guard was started with SIGINT ignored (as bash starts a
    script's background jobs: `... entrypoint.sh worker &`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit("usage: python -m pools.worker_guard COMMAND ...")
    grace = stop_seconds()
    worker = subprocess.Popen(argv, preexec_fn=_hear_sigint)
    stop_at: list[float] = []

    def on_signal(signum: int, _frame) -> None:
        if not stop_at:
            print(f"worker_guard: {signal.Signals(signum).name}: stopping the worker (at most {grace:.0f} s)",
                  file=sys.stderr, flush=True)
            stop_at.append(time.monotonic() + grace)
            if worker.poll() is None:
                worker.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while True:
        try:
            return worker.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        if stop_at and time.monotonic() > stop_at[0]:
            print("worker_guard: the worker did not stop in time; ending it (its runs go on)",
                  file=sys.stderr, flush=True)
            worker.kill()
            worker.wait()
            return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
