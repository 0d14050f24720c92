"""Fault bench: real flows on a Prefect server and a process worker, faults injected at seeded
random points, and the work resumed as a user would.

The setup is production's, on one machine: `prefect server start` (SQLite), the project's
deployments on a process pool, one process worker, the store on S3 (moto's server on 127.0.0.1
behind tests/faultproxy.py), cache locks in Redis. A second lane runs flows in a new process on a
small tmpfs data root with a local store, for a disk that fills.

Fault kinds (--kinds, all by default):
  kill-flow-run   SIGKILL of the process running a flow run, mid-run   -> rerun
  kill-worker     SIGKILL of the worker and its runs (a host lost)     -> worker restarted, the
                  stranded run marked Crashed, rerun
  server-restart  the Prefect server killed and started again mid-run  -> wait, else rerun
  s3-error / s3-drop / s3-slow   503 answers, dropped connections, slow answers from the store,
                  a few requests each, mid-run                          -> store retries, else rerun
  prune           `talkflow cache prune --older-than 1d` beside a running flow
  disk-full       the tmpfs data root filled to a random point before a flow -> one clear error
                  line (or a completed run), space freed, rerun
Most faults hit the cheap flows (sample-clip at 128 px, portrait with a cached fit, render of the
tiny avatar); preprocess and train (cpu-demo) run once, in the setup (one kill during training
when kill-flow-run is chosen and not --quick).

Checks after every fault: the run ends completed, or failed with one clear line and is rerun to
completion; no stage whose key the journal had before the fault is computed again (stages
recomputed needlessly); every completed run's output fetches whole (sha256) and ffprobe reads
it; at the end every cache entry verifies (`talkflow cache verify`). Prints one JSON object last.

    python bench/faults.py --faults 100 --seed 1          # the full bench (~25 min on 2 cores)
    python bench/faults.py --quick --kinds s3-error --faults 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faultproxy import FaultProxy  # noqa: E402
from tests.servers import clean_env, deploy_all, setup_server, start, stop, wait_http  # noqa: E402

KINDS = ("kill-flow-run", "kill-worker", "server-restart", "s3-error", "s3-drop", "s3-slow", "prune", "disk-full")
WEIGHTS = {"kill-flow-run": 3, "kill-worker": 1, "server-restart": 1, "s3-error": 3, "s3-drop": 3, "s3-slow": 2,
           "prune": 2, "disk-full": 2}
STORE_KINDS = {"s3-error", "s3-drop", "s3-slow", "prune"}  # several per run: they need no rerun
POOL = "faults"
PERSON = "faults"
CHARACTER = "ada"
CLIP_PX = 256  # the clip preprocess and train use (dlib still finds the face)
CHEAP_PX = 128
RUN_TIMEOUT_S = 900
TALKFLOW = [sys.executable, "-c", "from talkflow.cli import app; app()"]  # the CLI, from this checkout
DEPLOYMENTS = ("sample-clip", "preprocess", "train", "infer", "portrait")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- processes --------------------------------------------------------------------------------------
def pids_of_flow_run(flow_run_id: str) -> list[int]:
    """Processes whose environment names the flow run (the run's process and its children)."""
    needle = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    found.append(int(d.name))
            except OSError:
                pass
    return found


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="talkflow-faults-")).resolve()
        self.root = self.work / "root"
        self.faults: Counter[str] = Counter()
        self.recover_s: list[float] = []
        self.runs = Counter()  # completed, recovered, unrecovered, failed_clear, unclear
        self.recomputed = 0
        self.truncated = 0
        self.lost = 0
        self.outputs: list[dict] = []  # artifacts of completed runs, checked at the end
        self.procs: list[subprocess.Popen] = []
        self.errors: list[str] = []

    # -- services -------------------------------------------------------------------------------
    def start_services(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
        self.work.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(exist_ok=True)
        port = free_port()
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        self.moto.start()
        self.moto_url = f"http://127.0.0.1:{port}"
        self.proxy = FaultProxy(self.moto_url).start()
        self.bucket = f"faults-{uuid.uuid4().hex[:8]}"
        aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        self.store_url = f"s3://{self.bucket}/talkflow"
        self.server_port = free_port()
        self.api = f"http://127.0.0.1:{self.server_port}/api"
        self.redis_db = str(self.rng.randrange(8, 15))
        self.env = clean_env(PREFECT_API_URL=self.api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                             TALKFLOW_DATA_ROOT=str(self.root), TALKFLOW_STORE_URL=self.store_url,
                             TALKFLOW_REDIS_URL=f"redis://127.0.0.1:6379/{self.redis_db}", TALKFLOW_LOCK_LEASE_S="10",
                             AWS_ENDPOINT_URL=self.proxy.url, PYTHONPATH=str(ROOT), **aws)
        # this process: the same store, straight to moto (the bench's own reads see no faults)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("TALKFLOW_", "AWS_", "PREFECT_API"))})
        os.environ["AWS_ENDPOINT_URL"] = self.moto_url
        from talkflow.settings import get_settings

        get_settings.cache_clear()
        import fsspec

        fsspec.filesystem("s3", skip_instance_cache=True).mkdir(self.bucket)
        self.start_server()
        setup_server(self.env, "--process-pool", POOL)
        deploy_all(self.env, *DEPLOYMENTS)
        self.start_worker()

    def start_server(self) -> None:
        env = clean_env(PREFECT_HOME=str(self.work / "server-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                        PREFECT_UI_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING",
                        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{self.work / 'prefect.db'}")
        log_path = self.work / "server.log"
        with open(log_path, "a") as f:
            f.write(f"--- start {time.ctime()}\n")
        self.server = start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(self.server_port)], env, self.work / f"server-{time.time():.0f}.log")
        wait_http(f"{self.api}/health", self.server, 180, log_path)

    def start_worker(self) -> None:
        self.worker_log = self.work / f"worker-{time.time():.0f}.log"
        self.worker = start(["bash", str(ROOT / "docker" / "entrypoint.sh"), "worker"],
                            {**self.env, "TALKFLOW_WORKER_POOL": POOL, "TALKFLOW_WORKER_TYPE": "process",
                             "TALKFLOW_PYTHON": sys.executable, "PREFECT_HOME": str(self.root / "prefect-home"),
                             "PREFECT_WORKER_QUERY_SECONDS": "2", "TALKFLOW_API_WAIT_S": "60"}, self.worker_log)

    def stop_services(self) -> None:
        for p in (getattr(self, "worker", None), getattr(self, "server", None), *self.procs):
            if p is not None:
                try:
                    stop(p)
                except Exception:  # noqa: BLE001 - best effort at exit
                    pass
        if getattr(self, "proxy", None):
            self.proxy.stop()
        if getattr(self, "moto", None):
            self.moto.stop()
        if getattr(self, "disk", None):
            subprocess.run(["umount", "-l", str(self.disk)], check=False)

    # -- runs -------------------------------------------------------------------------------------
    def submit(self, call: str, params: dict) -> str:
        from prefect.deployments import run_deployment

        from talkflow.api import CALLS

        for attempt in range(30):  # the server may be restarting
            try:
                run = run_deployment(CALLS[call].deployment, parameters=params, timeout=0)
                return str(run.id)
            except Exception as exc:  # noqa: BLE001
                if attempt == 29:
                    raise
                log(f"submit {call}: {exc!s:.120}; again")
                time.sleep(2)
        raise AssertionError

    def state(self, run_id: str):
        from prefect import get_client

        with get_client(sync_client=True) as client:
            return client.read_flow_run(uuid.UUID(run_id)).state

    def wait(self, run_id: str, timeout_s: float = RUN_TIMEOUT_S, stranded_after_s: float | None = None):
        """The run's final state; a run whose processes are gone while the server still says Running
        or Pending (its worker was killed before or after starting it) is marked Crashed after
        `stranded_after_s`, as an operator would."""
        deadline = time.monotonic() + timeout_s
        gone_since = None
        while time.monotonic() < deadline:
            try:
                st = self.state(run_id)
            except Exception:  # noqa: BLE001 - server restarting
                time.sleep(1)
                continue
            if st is not None and st.is_final():
                return st
            if stranded_after_s is not None and st is not None and (st.is_running() or st.is_pending()):
                if pids_of_flow_run(run_id):
                    gone_since = None
                elif gone_since is None:
                    gone_since = time.monotonic()
                elif time.monotonic() - gone_since > stranded_after_s:
                    self.mark_crashed(run_id)
            time.sleep(1)
        raise TimeoutError(f"flow run {run_id} did not finish in {timeout_s} s")

    def mark_crashed(self, run_id: str) -> None:
        from prefect import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            client.set_flow_run_state(uuid.UUID(run_id), Crashed(message="its worker was lost"), force=True)

    def wait_running(self, run_id: str, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pids_of_flow_run(run_id):
                return
            try:
                st = self.state(run_id)
                if st is not None and st.is_final():
                    return
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.3)

    def journal_keys(self) -> Counter[str]:
        path = self.root / "journal.jsonl"
        keys: Counter[str] = Counter()
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    key = json.loads(line).get("key")
                    if key:
                        keys[key] += 1
        return keys

    def result_of(self, run_id: str, call: str):
        from talkflow.api import CALLS, _load, _typed

        st = self.state(run_id)
        return _typed(_load(CALLS[call].result), st.result())

    def check_output(self, call: str, result) -> None:
        from talkflow.store import get_store

        art = result["video"] if call == "sample_clip" else result.video["video"]
        self.outputs.append({"key": art.key, "sha256": art.sha256, "size": art.size})
        try:
            path = get_store().fetch(art)
            out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                                  "default=nw=1:nk=1", str(path)], capture_output=True, text=True, timeout=60)
            if out.returncode != 0 or float(out.stdout.strip() or 0) <= 0:
                self.truncated += 1
        except Exception as exc:  # noqa: BLE001
            self.truncated += 1
            self.errors.append(f"output of {call}: {exc!s:.200}")

    def run_to_completion(self, call: str, params: dict, fault=None) -> float:
        """Run `call`, inject `fault(run_id)` while it runs, resume until completed; seconds to recover."""
        before = self.journal_keys()
        run_id = self.submit(call, params)
        t_fault = None
        if fault is not None:
            self.wait_running(run_id)
            t_fault = fault(run_id)
        st = self.wait(run_id, stranded_after_s=10)
        tries = 1
        while not st.is_completed() and tries < 4:
            message = (st.message or "").strip()
            if st.is_failed() and message and "\n" not in message and "Traceback" not in message:
                self.runs["failed_clear"] += 1
            elif st.is_failed():
                self.runs["unclear"] += 1
                self.errors.append(f"{call}: {message[:300]}")
            log(f"  {call} ended {st.name}: {message[:160]!r}; rerun")
            run_id = self.submit(call, params)
            st = self.wait(run_id, stranded_after_s=10)
            tries += 1
        if not st.is_completed():
            self.runs["unrecovered"] += 1
            self.errors.append(f"{call}: not completed after {tries} tries: {st.name} {st.message}")
            return 0.0
        self.runs["completed"] += 1
        if t_fault is not None:
            self.runs["recovered"] += 1
        after = self.journal_keys()
        self.recomputed += sum(min(before[k], 1) * (after[k] - before[k]) for k in after if before[k])
        self.check_output(call, self.result_of(run_id, call))
        return time.monotonic() - t_fault if t_fault is not None else 0.0

    # -- faults -----------------------------------------------------------------------------------
    def fault_kill_flow_run(self, run_id: str) -> float:
        time.sleep(self.rng.uniform(0.5, 8.0))
        kill_pids(pids_of_flow_run(run_id))
        return time.monotonic()

    def fault_kill_worker(self, run_id: str) -> float:
        time.sleep(self.rng.uniform(0.5, 8.0))
        os.killpg(self.worker.pid, signal.SIGKILL)  # the worker and the runs it started
        kill_pids(pids_of_flow_run(run_id))
        self.worker.wait()
        t = time.monotonic()
        self.start_worker()  # as a supervisor (systemd, Docker's restart policy) would
        return t

    def fault_server_restart(self, run_id: str) -> float:
        time.sleep(self.rng.uniform(0.5, 6.0))
        os.killpg(self.server.pid, signal.SIGKILL)
        self.server.wait()
        t = time.monotonic()
        time.sleep(self.rng.uniform(0.5, 3.0))
        self.start_server()
        return t

    def store_faults(self, kinds: list[str]):
        """A fault function that injects several store faults, spread over the run."""

        def inject(run_id: str) -> float:
            t = time.monotonic()
            for kind in kinds:
                time.sleep(self.rng.uniform(0.3, 4.0))
                if kind == "prune":
                    out = subprocess.run([*TALKFLOW, "cache", "prune", "--older-than", "1d"],
                                         cwd=ROOT, env={**self.env, "AWS_ENDPOINT_URL": self.moto_url},
                                         capture_output=True, text=True, timeout=300)
                    if out.returncode != 0:
                        self.errors.append(f"prune: {out.stdout[-300:]} {out.stderr[-300:]}")
                else:
                    self.proxy.inject(kind.removeprefix("s3-"), self.rng.randint(1, 4),
                                      delay_s=self.rng.uniform(0.5, 3.0))
            return t

        return inject

    # -- the disk lane ----------------------------------------------------------------------------
    def disk_full(self, i: int) -> float:
        """A sample clip in a new process on a tmpfs data root filled to a random point."""
        if getattr(self, "disk", None) is None:
            self.disk = self.work / "disk"
            self.disk.mkdir(exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(self.disk)], check=True)
        ballast = self.disk / "ballast"
        free = os.statvfs(self.disk).f_bavail * os.statvfs(self.disk).f_frsize
        leave = self.rng.randint(64 * 1024, 3 * 1024 * 1024)
        with open(ballast, "wb") as f:
            f.write(b"\0" * max(free - leave, 0))
        text = f"Disk test {i} {uuid.uuid4().hex[:4]}."
        code = (
            "import sys\n"
            "from talkflow.api import Talkflow\nfrom talkflow.errors import TalkflowError\n"
            "from tasks.sample_clip import SampleClipConfig\n"
            "try:\n"
            f"    Talkflow().sample_clip({text!r}, config=SampleClipConfig(size={CHEAP_PX}))\n"
            "except TalkflowError as exc:\n    print('error:', exc); sys.exit(1)\n"
        )
        env = {**self.env, "TALKFLOW_DATA_ROOT": str(self.disk / "root"), "PREFECT_API_URL": self.api}
        for k in ("TALKFLOW_STORE_URL", "TALKFLOW_REDIS_URL"):
            env.pop(k, None)
        t = time.monotonic()
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=600)
        if out.returncode == 1:
            line = out.stdout.strip().splitlines()[-1]
            if "no space left" in line and str(self.disk) in line:
                self.runs["failed_clear"] += 1
            else:
                self.runs["unclear"] += 1
                self.errors.append(f"disk-full: {line[:300]}")
        elif out.returncode != 0:
            self.runs["unclear"] += 1
            self.errors.append(f"disk-full crash: {out.stderr[-600:]}")
        ballast.unlink()
        leftovers = [p for p in self.disk.rglob("*") if ".tmp-" in p.name or p.name.startswith("tmp-")]
        self.lost += len(leftovers)
        if out.returncode != 0:  # rerun with the space freed
            out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=600)
        if out.returncode == 0:
            self.runs["completed"] += 1
            self.runs["recovered"] += 1
        else:
            self.runs["unrecovered"] += 1
            self.errors.append(f"disk-full rerun: {out.stdout[-300:]} {out.stderr[-300:]}")
        bad = subprocess.run([*TALKFLOW, "cache", "verify"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
        if bad.returncode != 0:
            self.lost += bad.stdout.count("bad ")
            self.errors.append(f"disk verify: {bad.stdout[-300:]}")
        return time.monotonic() - t

    # -- the plan ---------------------------------------------------------------------------------
    def cheap_call(self, i: int, quick: bool) -> tuple[str, dict]:
        tag = f"{i}-{uuid.uuid4().hex[:4]}"
        choices = ["sample_clip"] if quick else ["sample_clip", "sample_clip", "portrait", "infer"]
        call = self.rng.choice(choices)
        if call == "sample_clip":
            return call, {"text": f"Fault test {tag}.", "config": {"size": CHEAP_PX}}
        if call == "portrait":
            return call, {"character": CHARACTER, "image": str(self.portrait), "text": f"Hello {tag}.",
                          "config": {"warp_rig": {"min_size": CHEAP_PX}}}
        return call, {"person": PERSON, "text": f"Now {tag}.", "config": {"render": {"downscale": 4}}}

    def setup_avatar(self, kill_in_training: bool) -> None:
        from PIL import Image
        from skimage import data

        self.portrait = self.work / "portrait.png"
        Image.fromarray(data.astronaut()).save(self.portrait)
        t0 = time.monotonic()
        run_id = self.submit("sample_clip", {"text": "Hello there, this is a short test.", "config": {"size": CLIP_PX}})
        st = self.wait(run_id)
        assert st.is_completed(), f"sample clip: {st.name} {st.message}"
        clip = self.result_of(run_id, "sample_clip")
        from talkflow.store import get_store

        video = get_store().fetch(clip["video"])
        self.runs["completed"] += 1
        run_id = self.submit("preprocess", {"video": str(video), "person": PERSON,
                                            "config": {"normalize": {"size": CLIP_PX}}})
        st = self.wait(run_id)
        assert st.is_completed(), f"preprocess: {st.name} {st.message}"
        self.runs["completed"] += 1
        fault = None
        if kill_in_training:
            def fault(rid: str) -> float:
                time.sleep(self.rng.uniform(20, 50))  # inside head training; its checkpoints resume it
                kill_pids(pids_of_flow_run(rid))
                return time.monotonic()
        s = self.run_to_completion_train(fault)
        if fault is not None:
            self.faults["kill-flow-run"] += 1
            self.recover_s.append(s)
        log(f"setup: clip, dataset and avatar in {time.monotonic() - t0:.0f} s")

    def run_to_completion_train(self, fault) -> float:
        before = self.journal_keys()
        run_id = self.submit("train", {"person": PERSON, "preset": "cpu-demo"})
        t_fault = None
        if fault is not None:
            self.wait_running(run_id)
            t_fault = fault(run_id)
        st = self.wait(run_id, stranded_after_s=10)
        while not st.is_completed():
            log(f"  train ended {st.name}; rerun")
            run_id = self.submit("train", {"person": PERSON, "preset": "cpu-demo"})
            st = self.wait(run_id, stranded_after_s=10)
        self.runs["completed"] += 1
        if t_fault is not None:
            self.runs["recovered"] += 1
        after = self.journal_keys()
        self.recomputed += sum(after[k] - before[k] for k in after if before[k])
        return time.monotonic() - t_fault if t_fault is not None else 0.0

    def run(self) -> dict:
        a = self.args
        kinds = [k for k in (a.kinds.split(",") if a.kinds else KINDS)]
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise SystemExit(f"unknown fault kinds {sorted(unknown)}; kinds are {', '.join(KINDS)}")
        t0 = time.monotonic()
        self.start_services()
        log(f"services up in {time.monotonic() - t0:.0f} s ({self.work})")
        needs_avatar = not a.quick
        if needs_avatar:
            self.setup_avatar(kill_in_training="kill-flow-run" in kinds)
        deadline = t0 + a.time_limit_s
        i = 0
        while sum(self.faults.values()) < a.faults and time.monotonic() < deadline:
            i += 1
            if a.each:
                kind = kinds[(i - 1) % len(kinds)]
            else:
                kind = self.rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]
            if kind == "disk-full":
                self.faults[kind] += 1
                self.recover_s.append(self.disk_full(i))
                continue
            call, params = self.cheap_call(i, a.quick)
            if kind in STORE_KINDS:
                left = a.faults - sum(self.faults.values())
                batch = [kind] if a.each else [kind] + [self.rng.choice([k for k in kinds if k in STORE_KINDS])
                                                        for _ in range(min(self.rng.randint(0, 2), left - 1))]
                fault = self.store_faults(batch)
                for k in batch:
                    self.faults[k] += 1
            else:
                fault = {"kill-flow-run": self.fault_kill_flow_run, "kill-worker": self.fault_kill_worker,
                         "server-restart": self.fault_server_restart}[kind]
                self.faults[kind] += 1
            log(f"fault {sum(self.faults.values())}: {kind} on {call}")
            self.recover_s.append(self.run_to_completion(call, params, fault))
            self.proxy.clear()
        return self.report(time.monotonic() - t0)

    def report(self, wall_s: float) -> dict:
        from talkflow.cache_admin import list_entries, verify_entries
        from talkflow.store import Artifact, get_store

        store = get_store()
        store.fs.invalidate_cache()
        entries = list_entries(store)
        bad = verify_entries(store, entries)
        lost_outputs = sum(not store.verify(Artifact(**o)) for o in self.outputs)
        total = sum(self.faults.values())
        rec = [s for s in self.recover_s if s > 0]
        return {
            "faults_injected": dict(self.faults), "faults_total": total,
            "runs_completed": self.runs["completed"], "runs_recovered": self.runs["recovered"],
            "runs_unrecovered": self.runs["unrecovered"], "failed_with_clear_line": self.runs["failed_clear"],
            "unclear_errors": self.runs["unclear"],
            "entries": len(entries), "entries_lost_or_corrupt": len(bad) + lost_outputs + self.lost,
            "verify_clean": not bad, "stages_recomputed_needlessly": self.recomputed,
            "truncated_outputs": self.truncated,
            "recover_s_p50": round(statistics.median(rec), 1) if rec else None,
            "recover_s_max": round(max(rec), 1) if rec else None,
            "s3_requests_faulted": dict(self.proxy.faulted),
            "wall_s": round(wall_s, 1), "per_fault_s": round(wall_s / total, 1) if total else None,
            "seed": self.args.seed, "quick": self.args.quick, "errors": self.errors[:10],
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faults", type=int, default=100, help="faults to inject in all")
    ap.add_argument("--seed", type=int, default=1, help="seed of the fault kinds, targets and moments")
    ap.add_argument("--quick", action="store_true", help="sample-clip runs only, no avatar (the tests)")
    ap.add_argument("--kinds", default="", help=f"comma-separated subset of {','.join(KINDS)}")
    ap.add_argument("--each", action="store_true",
                    help="the kinds in turn, in the order given, one fault each (with --faults: the count of them)")
    ap.add_argument("--workdir", default="", help="folder for the data roots and logs (default: a new temp one)")
    ap.add_argument("--time-limit-s", type=float, default=1500, help="stop injecting after this many seconds")
    args = ap.parse_args()
    bench = Bench(args)
    try:
        report = bench.run()
    finally:
        bench.stop_services()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
