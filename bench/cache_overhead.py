"""Cache overhead of the media stage: cold run, then warm run in a NEW process.

Each phase runs in its own process on a fresh data root (embedded Prefect), so the warm run
has no in-memory state to lean on: every hit comes from the store.
Prints one JSON object as its last line:
  cold_s, warm_s      wall time of the media-stage flow call (Prefect start-up excluded;
                      warm: median of 3)
  empty_flow_s        median wall time of an empty flow: Prefect's fixed cost of one flow run
  per_cached_task_s   (warm_s - empty_flow_s) / cached_tasks: the whole cost of one cache hit
                      (key, lock, record read, payload verification, task-run bookkeeping)
  lookup_s            talkflow's own part of a hit (content key + manifest verification)
Target: per_cached_task_s < 0.2 on the local store.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("probe", "normalize", "frames", "mux")
REPS = 3  # warm runs and empty-flow runs; medians are reported


def phase(name: str, data_root: Path, *args: str) -> dict:
    env = {**os.environ, "TALKFLOW_DATA_ROOT": str(data_root)}
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run(
        [sys.executable, __file__, "--phase", name, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        sys.exit(f"phase {name} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_phase(name: str, args: list[str]) -> dict:
    sys.path.insert(0, str(ROOT))
    from talkflow.runtime import configure_prefect_env

    configure_prefect_env()  # embedded Prefect settings, before prefect is imported
    from talkflow.cache import computed_stages

    if name == "clip":
        from flows.sample_clip import SampleClipConfig, make_sample_clip
        from talkflow.store import get_store

        clip = make_sample_clip("Benchmarks measure what the cache saves.", SampleClipConfig())
        return {"clip": str(get_store().fetch(clip["video"]))}

    from flows.media import MediaConfig, media_stage

    clip = Path(args[0])
    media_stage(clip, MediaConfig())  # warms Prefect itself (client, server) in this process
    if name == "cold":
        # the flow above did the work; time it again on a copy so the work is redone
        import shutil

        from talkflow.settings import get_settings
        from talkflow.store import get_store

        shutil.rmtree(Path(get_store().root) / "cache")
        n0 = len(computed_stages())
        t0 = time.perf_counter()
        media_stage(clip, MediaConfig())
        return {"seconds": time.perf_counter() - t0, "computed": len(computed_stages()) - n0,
                "root": str(get_settings().root)}

    from prefect import flow

    @flow(name="empty")
    def empty() -> None:
        """Prefect's own cost of one flow run, to separate it from the cached tasks."""

    n0 = len(computed_stages())
    seconds, flow_s = [], []
    for _ in range(REPS):
        t0 = time.perf_counter()
        result = media_stage(clip, MediaConfig())
        seconds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        empty()
        flow_s.append(time.perf_counter() - t0)
    computed = len(computed_stages()) - n0
    # talkflow's own share of a hit: the content key, then reading + verifying the manifest
    from talkflow.cache import ManifestSerializer, cache_key
    from tasks.media import FramesConfig, NormalizeConfig

    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        cache_key("normalize", "1", {"video": clip, "config": NormalizeConfig(), "namespace": None})
        cache_key("frames", "1", {"video": result.normalized["video"], "config": FramesConfig()})
        ManifestSerializer().loads(result.frames.model_dump_json().encode())
        ManifestSerializer().loads(result.video.model_dump_json().encode())
    lookup = (time.perf_counter() - t0) / (reps * 2)
    return {"seconds": statistics.median(seconds), "flow_s": statistics.median(flow_s),
            "computed": computed, "lookup_s": lookup}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--phase":
        print(json.dumps(run_phase(sys.argv[2], sys.argv[3:])))
        return
    root = Path(tempfile.mkdtemp(prefix="talkflow-bench-"))
    clip = phase("clip", root)["clip"]
    cold = phase("cold", root, clip)
    warm = phase("warm", root, clip)
    if warm["computed"] != 0:
        sys.exit(f"warm run computed {warm['computed']} stages; expected all cache hits")
    cached = len(STAGES)
    print(json.dumps({
        "bench": "cache_overhead",
        "cold_s": round(cold["seconds"], 3),
        "warm_s": round(warm["seconds"], 3),
        "cold_computed_tasks": cold["computed"],
        "cached_tasks": cached,
        "empty_flow_s": round(warm["flow_s"], 3),
        "per_cached_task_s": round(max(warm["seconds"] - warm["flow_s"], 0.0) / cached, 4),
        "lookup_s": round(warm["lookup_s"], 5),
        "speedup": round(cold["seconds"] / warm["seconds"], 1),
        "target_per_cached_task_s": 0.2,
    }))


if __name__ == "__main__":
    main()
