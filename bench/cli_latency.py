"""What a person waits for at the command line: each command's wall time as a process.

Commands, each a new process of the `talkflow` program (talkflow.warm:main):
  help      `talkflow --help`
  refused   a refused bad input (`talkflow render --person demo --audio <missing file>`)
  demo      `talkflow demo`, every stage a cache hit
  portrait  `talkflow portrait` of a character whose fit and rig are cached, with NEW audio
  render    `talkflow render --person demo --text <a NEW sentence>`
in four conditions:
  ephemeral  TALKFLOW_EMBEDDED_SERVER=ephemeral: a temporary Prefect server per command (as before)
  cold       the background server is stopped before each command: the first command of a day
  server     the background server is running, no warm process (TALKFLOW_WARM_COMMANDS=0)
  warm       the background server and the data root's warm process are running (talkflow.warm)
For portrait and render, `*_stages_s` is the time of the stages the command computed (from the data
root's journal) and `*_overhead_s` the rest of the wall time. `imports_s`: where a command's start-up
goes, as the wall time of a process that only imports one thing (Python itself, the CLI, Prefect,
torch, each flow module); `--imports-only` measures just that (no data root, seconds).

The data root (--data-root, default a new temporary folder) is prepared first: `talkflow demo` and a
first portrait (minutes on a CPU the first time; seconds when the root already holds them).
Prints one JSON object as its last line, with the targets (2 CPU cores): warm demo < 5 s, warm
portrait overhead <= 2 s, refused < 2 s, cold demo no slower than ephemeral.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = [sys.executable, "-c", "from talkflow.warm import main; main()"]  # what `talkflow` runs
CHARACTER = "bench"
SENTENCES = {  # a new one per condition: never cached before
    "setup": "A first sentence, to fit the portrait.",
    "ephemeral": "Every morning the baker opens the shop at six.",
    "cold": "The river runs quietly under the old stone bridge.",
    "server": "A gentle wind moved the tall grass by the road.",
    "warm": "She packed a small bag and left before sunrise.",
}


def env_for(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            "TALKFLOW_DATA_ROOT": str(root), "COLUMNS": "200", **extra}


def talkflow(root: Path, *args: str, expect: int = 0, **extra: str) -> float:
    """Wall time of one command, as a process."""
    t0 = time.perf_counter()
    out = subprocess.run([*PROGRAM, *args], cwd=ROOT, env=env_for(root, **extra),
                         capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if out.returncode != expect:
        sys.exit(f"talkflow {' '.join(args)} exited {out.returncode}, not {expect}:\n{out.stdout[-2000:]}\n"
                 f"{out.stderr[-3000:]}")
    return wall


def journal(root: Path) -> list[dict]:
    path = root / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def timed_with_stages(root: Path, *args: str, **extra: str) -> tuple[float, float, list[str]]:
    """(wall s, seconds of the stages it computed, their names)."""
    n = len(journal(root))
    wall = talkflow(root, *args, **extra)
    computed = journal(root)[n:]
    return wall, sum(e["seconds"] for e in computed), [e["stage"] for e in computed]


def speech(path: Path, text: str) -> Path:
    """A spoken sentence (espeak-ng; a tone when it is missing)."""
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    else:
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=200:duration=3",
                        str(path)], check=True)
    return path


DEMO_ARGS: list[str] = []  # --demo-text/--demo-new-text: a root whose demo was made with other sentences


def prepare(root: Path, work: Path) -> tuple[Path, float]:
    """The demo and a first portrait of the character, cached; returns the portrait image."""
    import numpy as np
    from PIL import Image
    from skimage import data

    image = work / "astronaut.png"
    Image.fromarray(np.asarray(data.astronaut())).save(image)
    t0 = time.perf_counter()
    talkflow(root, "demo", *DEMO_ARGS)
    talkflow(root, "portrait", "--character", CHARACTER, "--image", str(image), "--renderer", "warp",
             "--audio", str(speech(work / "setup.wav", SENTENCES["setup"])))
    return image, time.perf_counter() - t0


COMMANDS = ("help", "refused", "demo", "portrait", "render")
IMPORTS = {"python": "pass", "talkflow.cli": "import talkflow.cli", "prefect": "import prefect",
           "torch": "import torch", "flows.demo": "import flows.demo", "flows.render": "import flows.render",
           "flows.portrait": "import flows.portrait"}


def import_costs(root: Path, repeat: int = 2) -> dict[str, float]:
    """Best-of-`repeat` wall time of a process that imports one thing (and whether torch came with it)."""
    out: dict[str, float] = {}
    for name, code in IMPORTS.items():
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env_for(root), check=True, capture_output=True)
            best = min(best, time.perf_counter() - t0)
        out[name] = round(best, 2)
    return out


def wait_warm(root: Path, timeout_s: float = 180) -> None:
    """The data root's warm process, started by a cached demo if none runs, ready to serve."""
    sys.path.insert(0, str(ROOT))
    from talkflow import warm

    home = root / "prefect"
    if warm.status(home) is None:
        talkflow(root, "demo", *DEMO_ARGS)
    deadline = time.monotonic() + timeout_s
    while warm.status(home) is None:
        if time.monotonic() > deadline:
            sys.exit(f"no warm process after {timeout_s:.0f} s: {(home / warm.LOG_NAME).read_text()[-2000:]}")
        time.sleep(0.5)


def condition(name: str, root: Path, image: Path, work: Path, commands: tuple[str, ...] = COMMANDS) -> dict:
    extra = {"ephemeral": {"TALKFLOW_EMBEDDED_SERVER": "ephemeral"},
             "server": {"TALKFLOW_WARM_COMMANDS": "0"}}.get(name, {})

    def before() -> None:
        if name == "cold":
            talkflow(root, "server", "stop")
        elif name in ("server", "warm"):
            talkflow(root, "server", "start")
        if name == "warm":
            wait_warm(root)

    out: dict[str, float | list[str]] = {}
    if "help" in commands:
        before()
        out["help_s"] = talkflow(root, "--help", **extra)
    if "refused" in commands:
        before()
        out["refused_s"] = talkflow(root, "render", "--person", "demo", "--audio", str(work / "missing.wav"),
                                    expect=2, **extra)
    if "demo" in commands:
        before()
        n = len(journal(root))
        out["demo_cached_s"] = talkflow(root, "demo", *DEMO_ARGS, **extra)
        if len(journal(root)) != n:
            sys.exit(f"{name}: the cached demo computed {[e['stage'] for e in journal(root)[n:]]}")
    if "portrait" in commands:
        audio = speech(work / f"{name}.wav", SENTENCES[name])
        before()
        wall, stages, names = timed_with_stages(root, "portrait", "--character", CHARACTER, "--image", str(image),
                                                "--renderer", "warp", "--audio", str(audio), **extra)
        out |= {"portrait_s": wall, "portrait_stages_s": stages, "portrait_overhead_s": wall - stages,
                "portrait_computed": names}
    if "render" in commands:
        before()
        wall, stages, names = timed_with_stages(root, "render", "--person", "demo", "--text", SENTENCES[name],
                                                **extra)
        out |= {"render_s": wall, "render_stages_s": stages, "render_overhead_s": wall - stages,
                "render_computed": names}
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, help="A data root to reuse (default: a new temporary one).")
    parser.add_argument("--conditions", default="ephemeral,cold,server,warm", help="Which conditions, in this order.")
    parser.add_argument("--commands", default=",".join(COMMANDS), help="Which commands (default: all).")
    parser.add_argument("--demo-text", help="The demo's --text (a root made with other sentences).")
    parser.add_argument("--demo-new-text", help="The demo's --new-text.")
    parser.add_argument("--imports-only", action="store_true", help="Only the import costs (no data root).")
    args = parser.parse_args()
    if args.imports_only:
        with tempfile.TemporaryDirectory(prefix="talkflow-cli-latency-") as tmp:
            print(json.dumps({"bench": "cli_latency", "imports_s": import_costs(Path(tmp))}))
        return
    for flag, value in (("--text", args.demo_text), ("--new-text", args.demo_new_text)):
        if value:
            DEMO_ARGS.extend([flag, value])
    root = (args.data_root or Path(tempfile.mkdtemp(prefix="talkflow-cli-latency-"))).resolve()
    work = Path(tempfile.mkdtemp(prefix="talkflow-cli-latency-inputs-"))
    imports = import_costs(root)
    image, prepare_s = prepare(root, work)
    results = {"bench": "cli_latency", "data_root": str(root), "prepare_s": round(prepare_s, 1), "imports_s": imports}
    try:
        for name in args.conditions.split(","):
            results[name] = condition(name, root, image, work, tuple(args.commands.split(",")))
            print(json.dumps({name: results[name]}), flush=True)
    finally:
        talkflow(root, "server", "stop")
        shutil.rmtree(work, ignore_errors=True)
    warm, cold, eph = results.get("warm", {}), results.get("cold", {}), results.get("ephemeral", {})
    results["targets"] = {
        "warm_demo_cached_lt_5s": warm.get("demo_cached_s", 1e9) < 5,
        "warm_portrait_overhead_le_2s": warm.get("portrait_overhead_s", 1e9) <= 2,
        "refused_lt_2s": max(c.get("refused_s", 0) for c in (warm, cold, eph)) < 2,
        "cold_demo_not_slower_than_ephemeral": cold.get("demo_cached_s", 1e9) <= eph.get("demo_cached_s", 0) * 1.05,
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
