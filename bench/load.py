"""Load bench: N concurrent render requests through the deployments, on one process worker with a
concurrency limit, for a trained tiny avatar (render-video/infer) and a one-shot character
(generate-from-portrait/portrait); then N identical requests at once.

Same services as bench/faults.py (Prefect server on SQLite, process pool, S3 store on moto, Redis
locks), no faults. For each N in --sizes and each target: N requests with distinct texts submitted
at once; every one must complete. Reported per (target, N): throughput (requests/s), p50/p95
latency (submit -> seen completed), peak RSS of the worker and its runs, and whether the server
answered /api/health and the worker was alive afterwards. Then --identical requests with the same
text at once: all complete and the journal shows each stage computed once.
`n16_vs_best`: throughput at N=16 over the best throughput of any N (target >= 0.9).

    python bench/load.py --sizes 1,4,16,64 --limit 2       # long on 2 cores: 64 real renders
    python bench/load.py --sizes 1,4 --targets infer --identical 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faults import CHARACTER, CHEAP_PX, PERSON, Bench, log  # noqa: E402


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def group_pids(pgid: int) -> list[int]:
    """Processes of the worker's process group (the worker and the runs it started)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    found.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


class Load(Bench):
    def params(self, target: str, text: str) -> tuple[str, dict]:
        if target == "infer":
            return "infer", {"person": PERSON, "text": text, "config": {"render": {"downscale": 4}}}
        return "portrait", {"character": CHARACTER, "image": str(self.portrait), "text": text,
                            "config": {"warp_rig": {"min_size": CHEAP_PX}}}

    def burst(self, target: str, texts: list[str]) -> dict:
        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                peak[0] = max(peak[0], rss_kib(group_pids(self.worker.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        before = self.journal_keys()
        t0 = time.monotonic()
        submitted = [(self.submit(*self.params(target, text)), time.monotonic()) for text in texts]
        latencies, states = [], Counter()
        for run_id, t_sub in submitted:
            st = self.wait(run_id, timeout_s=7200)
            states[st.name] += 1
            latencies.append(time.monotonic() - t_sub)
        wall = time.monotonic() - t0
        stop.set()
        after = self.journal_keys()
        new = Counter({k: after[k] - before[k] for k in after if after[k] > before[k]})
        try:
            with urllib.request.urlopen(f"{self.api}/health", timeout=10) as r:
                healthy = r.status == 200
        except OSError:
            healthy = False
        latencies.sort()
        return {"n": len(texts), "completed": states.get("Completed", 0), "states": dict(states),
                "throughput_per_s": round(len(texts) / wall, 4), "wall_s": round(wall, 1),
                "p50_s": round(statistics.median(latencies), 1),
                "p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1),
                "peak_rss_mib": round(peak[0] / 1024), "stage_runs": sum(new.values()),
                "max_computes_per_key": max(new.values(), default=0),
                "server_healthy": healthy, "worker_alive": self.worker.poll() is None}

    def run(self) -> dict:
        a = self.args
        t0 = time.monotonic()
        self.start_services()
        self.setup_avatar(kill_in_training=False)
        out: dict = {"limit": a.limit, "targets": {}}
        for target in a.targets.split(","):
            rows = []
            for n in [int(x) for x in a.sizes.split(",")]:
                tag = uuid.uuid4().hex[:4]
                rows.append(self.burst(target, [f"Load {tag} {i}." for i in range(n)]))
                log(f"{target} N={n}: {rows[-1]}")
            same = self.burst(target, [f"Same words {uuid.uuid4().hex[:4]}."] * a.identical)
            best = max(r["throughput_per_s"] for r in rows)
            at16 = next((r["throughput_per_s"] for r in rows if r["n"] == 16), None)
            out["targets"][target] = {
                "by_n": rows, "identical": same,
                "identical_computed_once": same["completed"] == a.identical and same["max_computes_per_key"] <= 1,
                "n16_vs_best": round(at16 / best, 3) if at16 else None}
        out["all_completed"] = all(r["completed"] == r["n"] for t in out["targets"].values()
                                   for r in [*t["by_n"], t["identical"]])
        out["wall_s"] = round(time.monotonic() - t0, 1)
        return out

    def start_worker(self) -> None:
        self.env["TALKFLOW_WORKER_LIMIT"] = str(self.args.limit)
        super().start_worker()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,4,16,64", help="numbers of concurrent requests")
    ap.add_argument("--targets", default="infer,portrait", help="infer (the tiny avatar) and/or portrait")
    ap.add_argument("--identical", type=int, default=64, help="identical requests sent at once")
    ap.add_argument("--limit", type=int, default=2, help="runs the worker runs at once")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default="")
    args = ap.parse_args()
    bench = Load(args)
    try:
        report = bench.run()
    finally:
        bench.stop_services()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
