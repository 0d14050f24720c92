"""bench/gpu_check.py, the one script a person with a GPU runs: its smoke mode on the CPU (every
part, toy sizes, Triton's interpreter), and each part isolated from the others' failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def run_check(*args: str, timeout: float = 420) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads(line) for line in res.stdout.strip().splitlines()]


@pytest.mark.slow
def test_the_smoke_run_passes_every_part_on_the_cpu():
    """Every part runs end to end and reports its figures; about 2 minutes on 2 busy cores."""
    sys.path.insert(0, str(ROOT))
    from bench.gpu_check import PARTS

    records = run_check("--smoke")
    by_part = {r["part"]: r for r in records}
    assert [r["part"] for r in records] == [*PARTS, "summary"]
    failed = {k: r.get("error") or r for k, r in by_part.items() if not r["ok"]}
    assert not failed, failed
    assert by_part["summary"]["smoke"] and by_part["environment"]["triton_interpret"] == "1"
    kernels = by_part["kernels"]
    assert kernels["head_triplane"]["points"] > 256 and kernels["torso"]["grad_max_err"] < 1e-4
    assert by_part["syncs"]["mode"].startswith("meta") and all(
        by_part["syncs"][s]["per_call"] == 0 for s in ("head", "lips", "torso"))
    assert by_part["resume"]["rng_restored"] and by_part["resume"]["losses"] == by_part["resume"]["resumed_losses"]
    assert by_part["determinism"]["bitwise_equal"]  # the CPU path sums in a fixed order
    speed = by_part["speed"]
    assert all(speed[m]["train_steps_per_s"] > 0 and speed[m]["render_frames_per_s"] > 0
               for m in ("fixed_shape", "gathered"))
    assert "skipped" in by_part["cuda_tests"]["summary"]
    assert set(by_part["ernerf_bench"]["train_step_ms"]) >= {"encoding", "mlp", "backward"}


def test_a_failing_part_does_not_stop_the_others():
    """Without a GPU and without --smoke every part fails on its own, each reported, in order; a part
    that hangs is stopped at its timeout and reported too."""
    sys.path.insert(0, str(ROOT))
    from bench.gpu_check import spawn

    records = run_check("--parts", "environment,resume", timeout=120)
    assert [r["part"] for r in records] == ["environment", "resume", "summary"]
    if records[0]["cuda_available"]:
        pytest.skip("a GPU is here")
    assert "no CUDA" in records[1]["error"] and records[2]["failed"] == ["environment", "resume"]
    late = spawn("environment", smoke=True, timeout=0.05)
    assert not late["ok"] and "timed out" in late["error"]
