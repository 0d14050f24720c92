"""docs/production.md's block, pasted into a fresh shell: run from the Markdown itself on a spare
port with a temporary data root (a server, the pools, every deployment, a worker, a run, the stop)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.servers import clean_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "production.md"


def production_block() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/production.md opens with the bash block to paste"
    return blocks[0]


def test_the_block_uses_the_venv_and_waits_for_the_server():
    block = production_block()
    assert "pools.setup wait" in block and "deploy --all" in block
    assert "prefect deployment run" in block and "--param 'config={" in block
    commands = [line.split()[0] for line in block.splitlines() if line and not line.startswith((" ", "#"))]
    assert not {"python", "prefect", "python3"} & set(commands)  # nothing needs an activated venv


def test_the_production_block_runs_green_when_pasted(tmp_path):
    logs = tmp_path / "logs"
    env = clean_env(PORT=str(free_port()), LOGS=str(logs), PREFECT_HOME=str(tmp_path / "prefect"),
                    TALKFLOW_DATA_ROOT=str(tmp_path / "data"), PATH="/usr/bin:/bin")
    try:
        out = subprocess.run(["bash", "-e", "-c", production_block()], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=900)
    finally:
        for name in ("worker", "server"):  # whatever a failed block left running
            pid = logs / f"{name}.pid"
            if pid.exists():
                try:
                    os.kill(int(pid.read_text()), signal.SIGTERM)
                except ProcessLookupError:
                    pass
    detail = out.stdout[-3000:] + out.stderr[-3000:] + (logs / "worker.log").read_text(errors="replace")[-2000:]
    assert out.returncode == 0, detail
    assert "Completed" in out.stdout + out.stderr, detail
    for name in ("worker", "server"):  # stopped by the block's last step
        pid = int((logs / f"{name}.pid").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
