"""pools.worker_guard: one SIGTERM stops a worker, even one that does not act on Prefect's SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEAF = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
POLITE = ("import time\ntry:\n    print('up', flush=True); time.sleep(60)\n"
          "except KeyboardInterrupt:\n    raise SystemExit(0)")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as bash starts a script's background job


def guarded(code: str, stop_s: str) -> tuple[subprocess.Popen, float]:
    proc = subprocess.Popen([sys.executable, "-m", "pools.worker_guard", sys.executable, "-c", code],
                            cwd=ROOT, env={**os.environ, "TALKFLOW_WORKER_STOP_S": stop_s},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ignore_sigint)
    assert proc.stdout.readline().strip() == "up"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    return proc, time.monotonic() - t0


def test_a_worker_that_stops_on_sigint_exits_at_once_with_its_status():
    proc, seconds = guarded(POLITE, "8")
    assert proc.returncode == 0 and seconds < 3
    assert "stopping the worker" in proc.stderr.read()


def test_a_worker_deaf_to_sigint_is_ended_after_the_grace_time():
    proc, seconds = guarded(DEAF, "1")
    assert proc.returncode == 0 and 0.9 < seconds < 5
    assert "did not stop in time" in proc.stderr.read()
