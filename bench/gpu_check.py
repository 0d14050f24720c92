"""One GPU check of ER-NeRF's GPU path: run it once on a machine with a GPU (a few minutes on an
H100/H200) and keep its output.

Every part runs in its own process (a crash, a hang or a poisoned CUDA context stops that part
only, after --timeout seconds at most) and prints one JSON line {"part", "ok", "seconds", ...};
the last line is the summary {"part": "summary", "ok", "failed", "seconds"}.

Parts:
  environment   Python, torch, CUDA, Triton, the GPU and its driver, the C compiler Triton needs
  kernels       the fused Triton kernels against the torch lookup on ER-NeRF's head tri-plane
                (12 levels, 2^14) and torso grid (16 levels, F=2, 2^16): largest errors of values
                and table gradients over points inside, outside and on the border of [0, 1]
  kernel_time   fused vs torch encoding, forward + backward, ms (head: 65,536 rays x 16 samples)
  syncs         host synchronisations per head / lips / torso training step, per render batch and
                per render_frames call, each with its Python stack (set_sync_debug_mode("warn"))
  resume        a head run checkpointed and resumed on the GPU: generators restored, the same losses
  speed         fixed-shape vs gathered sampling: training steps/s (65,536 rays) and frames/s at
                450x450, peak memory, a render chunk's bytes per sample slot, the targets
  determinism   5 seeded steps twice: equal losses and weights?
  cuda_tests    the CUDA-only tests of the suite (pytest -k test_cuda_)
  ernerf_bench  bench/ernerf.py's figures and per-section breakdown

--smoke runs the same parts on the CPU at toy sizes (Triton's interpreter, TRITON_INTERPRET=1, for
the kernels; the meta-device check of models/ernerf/syncguard.py for the syncs): the suite runs it
(tests/test_gpu_check.py) so that this script works when a GPU is there.

Usage: python bench/gpu_check.py [--smoke] [--parts kernels,syncs] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = ("environment", "kernels", "kernel_time", "syncs", "resume", "speed", "determinism", "cuda_tests",
         "ernerf_bench")
TARGETS = {"render_frames_per_s": 100.0, "train_steps_per_s": 60.0}  # one H100/H200, 450x450, 65,536 rays


@dataclass(frozen=True)
class Sizes:
    device: str
    side: int  # frame side of the synthetic dataset
    rays: int  # rays per training step
    steps: int  # timed training steps
    frames: int  # timed rendered frames
    kernel_points: int  # points of the kernel comparison (not a multiple of the kernels' block)
    timing_points: int  # points of the kernel timing
    timing_runs: int  # timed runs per backend (after 3 warm-ups)
    small_model: bool  # a CPU-sized model instead of the reference one


FULL = Sizes("cuda", side=450, rays=65536, steps=30, frames=16, kernel_points=2**18 + 77, timing_points=2**20,
             timing_runs=10, small_model=False)
SMOKE = Sizes("cpu", side=32, rays=256, steps=2, frames=1, kernel_points=300, timing_points=512, timing_runs=1,
              small_model=True)


# ------------------------------------------------------------------------------------- shared
def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_config(sizes: Sizes, **render):
    """The reference ER-NeRF (audio D=80), or a CPU-sized one; ``render`` overrides RenderConfig fields."""
    from models.ernerf.audio import AudioConfig
    from models.ernerf.encodings import HashGridConfig
    from models.ernerf.fields import HeadFieldConfig, TorsoFieldConfig
    from models.ernerf.model import ModelConfig
    from models.ernerf.occupancy import OccupancyConfig

    cfg = ModelConfig()
    if sizes.small_model:
        cfg = ModelConfig(
            audio=AudioConfig(code_dim=16),
            head=HeadFieldConfig(grid=HashGridConfig(num_levels=6, features_per_level=2, base_resolution=8,
                                                     desired_resolution=96, log2_hashmap_size=11),
                                 geo_feat_dim=15, sigma_hidden=32, color_hidden=32, audio_att_hidden=32),
            torso=TorsoFieldConfig(grid=HashGridConfig(num_levels=4, features_per_level=2, base_resolution=8,
                                                       desired_resolution=64, log2_hashmap_size=10,
                                                       grid_type="tiled")),
            occupancy=OccupancyConfig(resolution=32), num_appearance_codes=32)
    return cfg.model_copy(update={"render": cfg.render.model_copy(update=render)}) if render else cfg


def dataset(sizes: Sizes):
    from bench.ernerf import synthetic_dataset

    return synthetic_dataset(sizes.side, 80)


def trainer(sizes: Sizes, stage: str, data, device=None, seed: int = 0, **render):
    """A fresh model's trainer for ``stage`` (head, lips or torso) on the sizes' device."""
    import torch

    from models.ernerf.model import ERNeRF
    from models.ernerf.trainer import Trainer, stage_config

    torch.manual_seed(seed)
    config = stage_config(stage, rays_per_batch=sizes.rays, steps=1000, seed=seed)
    return Trainer(ERNeRF(model_config(sizes, **render)), data, config, device=device or sizes.device)


def grid_points(n: int, dim: int, seed: int, device):
    """(n, dim) points in [-0.05, 1.05] (some outside [0, 1]) with the square's corners first."""
    import torch

    x = torch.rand(n, dim, generator=torch.Generator().manual_seed(seed)) * 1.1 - 0.05
    x[:4, :2] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
    return x.to(device)


def real_grids(device):
    """label -> (module, its grids, input dimension): the head's tri-plane and the torso's grid."""
    from models.ernerf.encodings import HashGrid2D, TriPlaneHashEncoding
    from models.ernerf.fields import HeadFieldConfig, TorsoFieldConfig

    head = TriPlaneHashEncoding(HeadFieldConfig().grid.model_copy(update={"init_range": 1.0})).to(device)
    torso = HashGrid2D(TorsoFieldConfig().grid.model_copy(update={"init_range": 1.0})).to(device)
    return {"head_triplane": (head, [head.xy, head.yz, head.xz], 3), "torso": (torso, [torso], 2)}


def encode(module, grids, x, backend: str):
    """module(x) with ``backend``; x in [0, 1] (scaled to the tri-plane's [-1, 1])."""
    from models.ernerf.encodings import HashGrid2D

    for g in grids:
        g.backend = backend
    module.zero_grad(set_to_none=True)
    return module(x if isinstance(module, HashGrid2D) else x * 2 - 1)


# -------------------------------------------------------------------------------------- parts
def part_environment(sizes: Sizes) -> dict:
    import torch

    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "cc": cc,
            "triton_interpret": os.environ.get("TRITON_INTERPRET")}
    if cc:
        info["compiler"] = _first_line([cc, "--version"])
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError as exc:
        info["triton"] = f"missing ({exc})"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", gpus=torch.cuda.device_count(),
                    memory_gb=round(props.total_memory / 2**30, 1))
        if shutil.which("nvidia-smi"):
            info["driver"] = _first_line(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    info["ok"] = info["cuda_available"] or sizes.device == "cpu"
    return info


def _first_line(cmd: list[str]) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    return (res.stdout or res.stderr).strip().splitlines()[0] if (res.stdout or res.stderr).strip() else ""


def part_kernels(sizes: Sizes) -> dict:
    """Largest |fused - torch| of values and of table gradients; tolerance 1e-4 relative to the scale."""
    import torch

    out, ok = {}, True
    for label, (module, grids, dim) in real_grids(sizes.device).items():
        x = grid_points(sizes.kernel_points, dim, seed=1, device=sizes.device)
        values, grads = {}, {}
        for backend in ("torch", "triton"):
            y = encode(module, grids, x, backend)
            upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(y.device)
            upstream[::5] = 0  # the empty slots of fixed-shape sampling
            (y * upstream).sum().backward()
            values[backend], grads[backend] = y.detach(), torch.cat([g.table.grad.flatten() for g in grids])
        v_err = float((values["triton"] - values["torch"]).abs().max())
        g_err = float((grads["triton"] - grads["torch"]).abs().max())
        v_tol = 1e-4 * float(values["torch"].abs().max())
        g_tol = 1e-4 * float(grads["torch"].abs().max())
        good = bool(torch.isfinite(values["triton"]).all()) and v_err <= v_tol and g_err <= g_tol
        out[label] = {"points": x.shape[0], "value_max_err": v_err, "grad_max_err": g_err, "ok": good}
        ok &= good
    return {"ok": ok, **out}


def part_kernel_time(sizes: Sizes) -> dict:
    """Median ms of forward + backward per backend (``timing_runs`` runs after 3 warm-ups)."""

    out = {}
    for label, (module, grids, dim) in real_grids(sizes.device).items():
        n = sizes.timing_points if label == "head_triplane" else max(sizes.timing_points // 16, 1)
        x = grid_points(n, dim, seed=3, device=sizes.device)
        row = {"points": n}
        for backend in ("torch", "triton"):
            times = []
            for k in range(3 + sizes.timing_runs):
                sync(x.device)
                t0 = time.perf_counter()
                encode(module, grids, x, backend).sum().backward()
                sync(x.device)
                if k >= 3:
                    times.append(1000 * (time.perf_counter() - t0))
            row[f"{backend}_ms"] = round(sorted(times)[len(times) // 2], 3)
        row["speedup"] = round(row["torch_ms"] / max(row["triton_ms"], 1e-9), 2)
        out[label] = row
    return {"ok": True, **out}


def part_syncs(sizes: Sizes) -> dict:
    """On CUDA: syncs per step / batch with stacks. On the CPU (smoke): the meta-device check."""
    data = dataset(sizes)
    if sizes.device == "cpu":
        return _meta_syncs(sizes, data)
    from models.ernerf.syncguard import cuda_sync_log

    out, ok = {}, True
    for stage in ("head", "lips", "torso", "render", "render_frames"):
        work, count = _sync_work(sizes, stage, data)
        for _ in range(2):
            work()  # warm-up: compilation, lazy state, both kinds of lips step
        with cuda_sync_log() as found:
            for _ in range(count):
                work()
        stacks = sorted(set(found), key=found.index)[:3]
        out[stage] = {"per_call": round(len(found) / count, 2), "stacks": stacks}
        ok &= stage == "render_frames" or not found  # a render_frames call waits for its frames
    return {"ok": ok, "mode": "set_sync_debug_mode", **out}


def _sync_work(sizes: Sizes, stage: str, data) -> tuple[Callable[[], object], int]:
    """(one training step, render batch or render_frames call, how many to count)."""
    import torch

    from models.ernerf.model import FrameView

    t = trainer(sizes, "head" if stage.startswith("render") else stage, data)
    if stage == "render_frames":
        return (lambda: t.render_frames(data.audio, data.poses[:2])), 2
    if stage == "render":
        model = t.model
        inputs = model.frame_inputs(data.audio, data.poses[:1], data.aud_ids[:1], None, use_torso=True)
        view = FrameView(data.focal, data.cx, data.cy, data.height, data.width)
        bg = (data.background.reshape(-1, 3).float() / 255).to(t.device)
        chunk = model.cfg.render.chunk_for(t.device)
        return (lambda: torch.no_grad()(model.render_batch)(inputs, view, bg, chunk)), 2
    return t.step, 16  # steps 2-17: step 16 updates the occupancy grid and adds the smoothness term


def _meta_syncs(sizes: Sizes, data) -> dict:
    from models.ernerf.syncguard import no_host_sync

    out, ok = {}, True
    for stage in ("head", "lips", "torso"):
        t = trainer(sizes, stage, data, device="meta", fixed_shape=True)
        t.step()  # warm-up: cached device constants
        try:
            with no_host_sync():
                for _ in range(2):
                    t.step()
            out[stage] = {"per_call": 0, "stacks": []}
        except Exception as exc:  # the first wait ends the check
            out[stage] = {"per_call": None, "stacks": [f"{type(exc).__name__}: {exc}\n"
                                                        + "".join(traceback.format_tb(exc.__traceback__)[-6:])]}
            ok = False
    return {"ok": ok, "mode": "meta device (no_host_sync)", **out}


def part_resume(sizes: Sizes) -> dict:
    """Train 3 steps, checkpoint; continue 2 steps, and resume the checkpoint in a new trainer for
    the same 2 steps: both generators restored, losses equal (up to atomics' summation order)."""
    import torch

    data = dataset(sizes)
    first = trainer(sizes, "head", data)
    first.train(3)
    with tempfile.TemporaryDirectory() as tmp:
        path = first.save(Path(tmp) / "head.pt")
        resumed = trainer(sizes, "head", data, seed=0)
        resumed.load(path)
    rng_equal = torch.equal(resumed.generator.get_state(), first.generator.get_state()) and torch.equal(
        resumed.device_generator.get_state(), first.device_generator.get_state())
    a = [log["loss"] for log in first.train(2)]
    b = [log["loss"] for log in resumed.train(2)]
    diff = max(abs(x - y) for x, y in zip(a, b))
    return {"ok": rng_equal and resumed.step_count == 5 and diff <= 1e-3 * max(abs(x) for x in a),
            "rng_restored": rng_equal, "step": resumed.step_count, "losses": a, "resumed_losses": b,
            "device": str(resumed.device)}


def part_speed(sizes: Sizes) -> dict:
    """Steps/s and frames/s of fixed-shape and gathered sampling; peak memory; bytes per sample slot."""
    import torch

    from models.ernerf.rendering import BYTES_PER_SAMPLE

    data = dataset(sizes)
    cuda = sizes.device == "cuda"
    out = {}
    for fixed in (True, False):
        t = trainer(sizes, "head", data, fixed_shape=fixed)
        row = {}
        for _ in range(2):
            t.step()
        _reset_peak(cuda)
        sync(t.device)
        t0 = time.perf_counter()
        for _ in range(sizes.steps):
            t.step()
        sync(t.device)
        row["train_steps_per_s"] = round(sizes.steps / (time.perf_counter() - t0), 2)
        row["train_peak_mb"] = _peak_mb(cuda)
        poses = data.poses[torch.arange(sizes.frames) % data.poses.shape[0]]
        t.render_frames(data.audio, poses[:1])  # warm-up
        _reset_peak(cuda)
        base = torch.cuda.memory_allocated() if cuda else 0
        sync(t.device)
        t0 = time.perf_counter()
        t.render_frames(data.audio, poses)
        sync(t.device)
        row["render_frames_per_s"] = round(sizes.frames / (time.perf_counter() - t0), 2)
        row["render_peak_mb"] = _peak_mb(cuda)
        chunk = t.model.cfg.render.chunk_for(t.device)
        row["chunk_rays"] = chunk
        if cuda:  # what one sample slot of a chunk held at the peak (rendering.BYTES_PER_SAMPLE assumes)
            slots = min(chunk, sizes.frames * sizes.side**2) * t.model.cfg.render.max_samples
            row["bytes_per_sample_slot"] = round((torch.cuda.max_memory_allocated() - base) / slots)
        out["fixed_shape" if fixed else "gathered"] = row
    best = {k: max(out["fixed_shape"][k], out["gathered"][k]) for k in TARGETS}
    met = {k: best[k] >= v for k, v in TARGETS.items()} if cuda else None
    return {"ok": True, "side": sizes.side, "rays": sizes.rays, **out, "assumed_bytes_per_sample": BYTES_PER_SAMPLE,
            "targets": TARGETS, "targets_met": met}


def _reset_peak(cuda: bool) -> None:
    import torch

    if cuda:
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(cuda: bool) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None


def part_determinism(sizes: Sizes) -> dict:
    """The same seed twice, 5 steps each: losses and weights bitwise equal? (Atomic adds of the fused
    backward sum in no fixed order, so small differences are expected on a GPU.)"""
    data = dataset(sizes)
    runs = []
    for _ in range(2):
        t = trainer(sizes, "head", data, seed=0)
        runs.append(([log["loss"] for log in t.train(5)], t.model.state_dict()))
    (la, wa), (lb, wb) = runs
    weight_diff = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa if wa[k].is_floating_point())
    return {"ok": all(math.isfinite(x) for x in la + lb), "bitwise_equal": la == lb and weight_diff == 0.0,
            "losses": la, "repeat_losses": lb, "max_loss_diff": max(abs(x - y) for x, y in zip(la, lb)),
            "max_weight_diff": weight_diff}


def part_cuda_tests(sizes: Sizes) -> dict:
    files = ["tests/test_ernerf_fast.py", "tests/test_tracking_device.py"]
    res = subprocess.run([sys.executable, "-m", "pytest", *files, "-k", "test_cuda_", "-q", "-rs", "-p",
                          "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=540)
    lines = res.stdout.strip().splitlines()
    return {"ok": res.returncode == 0, "summary": lines[-1] if lines else "", "tail": "\n".join(lines[-15:])}


def part_ernerf_bench(sizes: Sizes) -> dict:
    toy = ["--device", "cpu", "--side", str(sizes.side), "--rays", str(sizes.rays), "--steps", "1", "--frames", "1",
           "--threads", "1", "--occupancy", "32"]
    args = [] if sizes.device == "cuda" else toy
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "ernerf.py"), *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=540)
    if res.returncode != 0:
        return {"ok": False, "error": res.stderr[-3000:]}
    return {"ok": True, **json.loads(res.stdout.strip().splitlines()[-1])}


# ------------------------------------------------------------------------------------ driver
def run_part(name: str, sizes: Sizes) -> dict:
    """Run one part in this process -> its JSON record (an exception becomes ok: false)."""
    import torch

    torch.manual_seed(0)
    if sizes.device == "cpu":
        torch.set_num_threads(1)
    elif not torch.cuda.is_available() and name != "environment":
        return {"ok": False, "error": "no CUDA device (run with --smoke on a machine without one)"}
    try:
        return globals()[f"part_{name}"](sizes)
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}


def spawn(name: str, smoke: bool, timeout: float) -> dict:
    """Run part ``name`` in a new process -> its record (a crash or a timeout is recorded too)."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    if smoke:
        env["TRITON_INTERPRET"] = "1"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name] + (["--smoke"] if smoke else [])
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"part": name, "ok": False, "error": f"timed out after {timeout:.0f} s",
                "seconds": round(time.perf_counter() - t0, 1)}
    lines = res.stdout.strip().splitlines()
    try:
        record = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        record = {"part": name, "ok": False, "error": f"exit code {res.returncode}", "stderr": res.stderr[-3000:]}
    record["seconds"] = round(time.perf_counter() - t0, 1)
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (TRITON_INTERPRET=1)")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run")
    ap.add_argument("--timeout", type=float, default=240, help="seconds per part")
    ap.add_argument("--part", help=argparse.SUPPRESS)  # internal: run one part in this process
    args = ap.parse_args()
    sizes = SMOKE if args.smoke else FULL
    if args.part:
        print(json.dumps({"part": args.part, **run_part(args.part, sizes)}, default=str))
        return
    names = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(names) - set(PARTS))
    if unknown:
        ap.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    t0 = time.perf_counter()
    failed = []
    for name in names:
        record = spawn(name, args.smoke, args.timeout)
        print(json.dumps(record, default=str), flush=True)
        if not record.get("ok"):
            failed.append(name)
    print(json.dumps({"part": "summary", "ok": not failed, "failed": failed, "smoke": args.smoke,
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
