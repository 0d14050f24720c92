"""ER-NeRF preprocessing speed, step by step, on the CPU and (when present) on the GPU.

Makes a talking clip of about --seconds seconds (TTS + the sample portrait; or takes --video),
then preprocesses it cold, once per device, each run in its own process on a fresh data root
(TALKFLOW_DEVICE=cpu, then cuda when available). Each step's compute time comes from the
journal; the steps after the landmarks run concurrently, so the total is the wall time from the
first step's start to the last step's end (Prefect's start-up excluded). Each run also times the
batched landmark fit of the tracker against a per-frame Python loop of the same fit.
Prints one JSON object as its last line:
  runs.<device>.device_name          what ran it (CPU model / GPU name)
  runs.<device>.steps.<name>.fps     frames per second of each step (frames / its seconds)
  runs.<device>.total_s, cpu_s       wall time of the steps; CPU seconds of the process
  runs.<device>.projected_60s_clip_s total_s scaled to a 60 s clip (the steps are linear in frames)
  runs.<device>.fit_fps_batched / fit_fps_per_frame / fit_speedup
Targets (512x512, 25 fps, projected from a clip of at least 20 s): a 60 s clip in under 180 s
on 2 CPU cores and in under 60 s on one H100/H200.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from talkflow.contract import VIDEO_FPS  # noqa: E402 (torch- and settings-free)

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it rests in the warm sun. "
TARGETS = {"cpu": 180.0, "cuda": 60.0}  # projected seconds for a 60 s clip


def fresh_root() -> None:
    os.environ["TALKFLOW_DATA_ROOT"] = tempfile.mkdtemp(prefix="talkflow-bench-")
    os.environ.pop("PREFECT_API_URL", None)
    sys.path.insert(0, str(ROOT))


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores)"


def make_clip(seconds: float, size: int) -> Path:
    fresh_root()
    from talkflow.runtime import configure_prefect_env

    configure_prefect_env()  # embedded Prefect settings, before prefect is imported
    from flows.sample_clip import SampleClipConfig, make_sample_clip
    from talkflow.store import get_store

    text = SENTENCE * max(1, math.ceil(seconds / 4.0))  # piper speaks a sentence in ~4.4 s: at least `seconds`
    clip = make_sample_clip(text, SampleClipConfig(size=size))
    return get_store().fetch(clip["video"])


def run_one(video: Path, size: int, loop_frames: int) -> dict:
    """Preprocess `video` on TALKFLOW_DEVICE in this process; -> this run's figures."""
    fresh_root()
    import numpy as np
    import torch

    from talkflow.runtime import configure_prefect_env

    configure_prefect_env()  # embedded Prefect settings, before prefect is imported
    from flows.preprocess import PreprocessConfig, preprocess_video
    from models.face3d.fit import fit_landmarks, fit_landmarks_per_frame
    from talkflow.cache import computed_stages
    from talkflow.settings import get_settings
    from talkflow.store import get_store
    from tasks.media import NormalizeConfig
    from tasks.tracking import morphable_model

    device = get_settings().torch_device()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    dataset = preprocess_video(video, "bench", PreprocessConfig(normalize=NormalizeConfig(size=size)))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu0
    n = dataset.meta["n_frames"]
    journal = [e for e in computed_stages() if e["stage"] not in ("tts", "sample_clip")]
    steps = {e["stage"]: {"seconds": round(e["seconds"], 3), "fps": round(n / max(e["seconds"], 1e-6), 2)}
             for e in journal}
    total = max(e["at"] for e in journal) - min(e["at"] - e["seconds"] for e in journal)

    lms = torch.from_numpy(np.load(get_store().fetch(dataset["lms"]))).float().to(device)
    model, focal = morphable_model(None).to(device=device), dataset.meta["focal"]
    t0 = time.perf_counter()
    fit_landmarks(lms, size, model, focal=focal)
    batched = n / (time.perf_counter() - t0)
    k = min(loop_frames, n)
    t0 = time.perf_counter()
    fit_landmarks_per_frame(lms[:k], size, model, focal=focal)
    per_frame = k / (time.perf_counter() - t0)
    return {
        "device": device,
        "device_name": device_name(device),
        "frames": n,
        "clip_s": round(n / VIDEO_FPS, 2),
        "steps": steps,
        "total_s": round(total, 2),
        "cpu_s": round(cpu, 1),
        "total_fps": round(n / total, 2),
        "projected_60s_clip_s": round(total * 60 * VIDEO_FPS / n, 1),
        "fit_fps_batched": round(batched, 1),
        "fit_fps_per_frame": round(per_frame, 2),
        "fit_speedup": round(batched / per_frame, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0, help="approximate clip length")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--video", type=Path, help="preprocess this clip instead of making one")
    parser.add_argument("--devices", default="auto", help="cpu, cuda, or auto: cpu and cuda when present")
    parser.add_argument("--loop-frames", type=int, default=25, help="frames for the per-frame fit baseline")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a single run (child process)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.video, args.size, args.loop_frames)))
        return

    import torch

    video = args.video.resolve() if args.video else make_clip(args.seconds, args.size)
    devices = ["cpu", "cuda"] if args.devices == "auto" else args.devices.split(",")
    devices = [d for d in devices if d != "cuda" or torch.cuda.is_available()]
    runs = {}
    for device in devices:
        cmd = [sys.executable, __file__, "--one", "--video", str(video), "--size", str(args.size),
               "--loop-frames", str(args.loop_frames)]
        out = subprocess.run(cmd, env={**os.environ, "TALKFLOW_DEVICE": device}, capture_output=True, text=True)
        if out.returncode != 0:
            sys.stderr.write(out.stdout[-4000:] + out.stderr[-4000:])
            raise SystemExit(f"the {device} run failed (exit {out.returncode})")
        runs[device] = json.loads(out.stdout.strip().splitlines()[-1])
        r = runs[device]
        print(f"{device} ({r['device_name']}): {r['frames']} frames, steps "
              + ", ".join(f"{k} {v['fps']} fps" for k, v in r["steps"].items())
              + f"; total {r['total_s']} s; a 60 s clip ~{r['projected_60s_clip_s']} s")
    print(json.dumps({
        "bench": "preprocess",
        "size": args.size,
        "video": str(video),
        "runs": runs,
        "targets": {"projected_60s_clip_s": {d: TARGETS[d] for d in runs}},
        "meets_targets": {d: runs[d]["projected_60s_clip_s"] < TARGETS[d] for d in runs},
    }))


if __name__ == "__main__":
    main()
