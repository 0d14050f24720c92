"""Importing models/ or tasks/ has no side effect: no environment variable set, no file written.

Each check runs in a fresh interpreter (the test process itself has long imported everything).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import importlib, json, os, pkgutil, sys
before = dict(os.environ)
names = []
for package in sys.argv[1:]:
    pkg = importlib.import_module(package)
    names.append(package)
    for mod in pkgutil.walk_packages(pkg.__path__, package + "."):
        importlib.import_module(mod.name)
        names.append(mod.name)
after = dict(os.environ)
changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
print(json.dumps({"modules": names, "changed": changed, "prefect": "prefect" in sys.modules}))
"""


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def import_all(packages: list[str], tmp_path: Path, **extra_env: str) -> dict:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TALKFLOW_"))}
    env |= {"HOME": str(home), "PYTHONPATH": str(ROOT), "TALKFLOW_DATA_ROOT": str(tmp_path / "root"),
            **extra_env}
    before = files_under(tmp_path)
    out = subprocess.run([sys.executable, "-c", SCRIPT, *packages], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["new_files"] = sorted(files_under(tmp_path) - before)
    return result


def test_importing_models_changes_nothing_and_never_imports_prefect(tmp_path):
    result = import_all(["models"], tmp_path)
    assert "models.nerffacespeech.pti" in result["modules"] and "models.face.parsing" in result["modules"]
    assert result["changed"] == [] and result["new_files"] == []
    assert result["prefect"] is False


@pytest.mark.slow
def test_importing_tasks_changes_nothing(tmp_path):
    # Prefect itself creates its home folder when imported; give it an existing one, so that any
    # new file or variable comes from talkflow
    prefect_home = tmp_path / "prefect-home"
    prefect_home.mkdir()
    result = import_all(["tasks"], tmp_path, PREFECT_HOME=str(prefect_home))
    assert "tasks.train" in result["modules"] and "tasks.portrait" in result["modules"]
    assert result["changed"] == [] and result["new_files"] == []
    assert not (tmp_path / "root").exists()


# What a command imports, as a process: `talkflow --help`, the commands that only read the cache or
# the store, and refused input, answer without torch or Prefect (each takes seconds to import).
HEAVY = ("torch", "prefect")
LIGHT_COMMANDS = {
    "help": ["--help"],
    "cache ls": ["cache", "ls"],
    "cache du": ["cache", "du"],
    "cache verify": ["cache", "verify"],
    "character rm": ["character", "rm", "nobody"],
    "assets ls": ["assets", "ls"],
    "server status": ["server", "status"],
    "refused render": ["render", "--person", "demo", "--audio", "missing.wav"],
    "refused portrait": ["portrait", "--character", "a", "--image", "missing.png", "--text", "hi"],
    "refused preprocess": ["preprocess", "missing.mp4", "--person", "a"],
}

COMMAND = """
import sys
sys.argv = ["talkflow", *sys.argv[1:]]
try:
    from talkflow.warm import main  # the `talkflow` program
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted(m for m in {HEAVY} if m in sys.modules)
print("HEAVY", ",".join(heavy), "EXIT", code, file=sys.stderr)
"""


@pytest.mark.parametrize("name", list(LIGHT_COMMANDS))
def test_light_commands_import_neither_torch_nor_prefect(name, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TALKFLOW_"))}
    env |= {"PYTHONPATH": str(ROOT), "TALKFLOW_DATA_ROOT": str(tmp_path / "root"), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", COMMAND.replace("{HEAVY}", repr(HEAVY)), *LIGHT_COMMANDS[name]],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    last = [line for line in out.stderr.splitlines() if line.startswith("HEAVY")]
    assert last, out.stderr[-2000:]
    _, heavy, _, code = last[-1].split(" ")
    assert heavy == "", f"`talkflow {' '.join(LIGHT_COMMANDS[name])}` imported {heavy}"
    assert code in ("0", "1", "2", "None"), out.stderr[-2000:]  # ran, or refused with its one-line error
    if name.startswith("refused"):
        assert code == "2" and "error:" in out.stderr


def imported_heavy(modules: list[str], tmp_path: Path) -> list[str]:
    """Which of torch and scipy a fresh interpreter holds after importing `modules`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TALKFLOW_"))}
    env |= {"PYTHONPATH": str(ROOT), "TALKFLOW_DATA_ROOT": str(tmp_path / "root"), "HOME": str(tmp_path)}
    code = f"import json, sys, {', '.join(modules)}; " \
           "print(json.dumps(sorted(m for m in ('torch', 'scipy') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_demo_flow_imports_no_torch(tmp_path):
    """A demo whose stages are all cached never needs torch: the flows' parameters (configs) and
    the stage modules import without it; each stage imports its models when it computes."""
    assert imported_heavy(["flows.demo", "flows.features", "flows.import_dataset"], tmp_path) == []


def test_the_portrait_flow_imports_no_torch(tmp_path):
    """The portrait flow, its renderers and their stages import without torch (the configs live in
    models.nerffacespeech.config and models.portrait_warp.config; the model packages export lazily),
    so a refused or fully cached portrait never loads it."""
    modules = ["flows.portrait", "flows.renderers", "flows.renderers.generator", "flows.renderers.warp",
               "tasks.portrait", "models.nerffacespeech", "models.portrait_warp"]
    assert "torch" not in imported_heavy(modules, tmp_path)
