"""The command line: exit codes, one-line errors, and the commands that need no flow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mediafiles import make_clip

ROOT = Path(__file__).resolve().parents[1]


def talkflow(*args: str, data_root: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "talkflow.cli", *args],
        cwd=ROOT,
        env={**os.environ, "TALKFLOW_DATA_ROOT": str(data_root), "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_media_probe(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", duration=1.0, fps=25, size="64x48")
    out = talkflow("media", "probe", str(clip), data_root=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "has_audio" in out.stdout and "True" in out.stdout and "64" in out.stdout


def test_user_error_is_one_line_and_nonzero(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n" * 100)
    out = talkflow("media", "probe", str(bad), data_root=tmp_path)
    assert out.returncode == 2
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and "notes.txt" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


def test_usage_error_exit_code(tmp_path):
    out = talkflow("cache", "prune", data_root=tmp_path)
    assert out.returncode == 2 and "--older-than" in out.stdout
    out = talkflow("cache", "prune", "--character", "../x", data_root=tmp_path)
    assert out.returncode == 2 and "invalid character" in out.stdout


def test_doctor_reports_tools_and_assets(tmp_path):
    out = talkflow("doctor", data_root=tmp_path)
    assert out.returncode == 0, out.stderr
    for word in ("ffmpeg", "torch", "pytorch3d", "embedded", "store", "asset bfm",
                 "01_MorphableModel.mat", "log-mel"):
        assert word in out.stdout, word
    assert "portrait renderer" in out.stdout and "warp (the portrait" in out.stdout


def test_portrait_generator_renderer_without_a_generator_is_a_one_line_error(tmp_path):
    out = talkflow("portrait", "--character", "ada", "--image", str(tmp_path / "none.png"), "--text", "Hi.",
                   "--renderer", "generator", data_root=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) <= 2 and lines[0].startswith("error:") and "talkflow assets add generator" in out.stdout
    bad = talkflow("portrait", "--character", "ada", "--image", "x.png", "--text", "Hi.", "--renderer", "nerf",
                   data_root=tmp_path)
    assert bad.returncode == 2 and "--renderer" in bad.stdout


def test_assets_add_and_ls(tmp_path):
    bfm = tmp_path / "01_MorphableModel.mat"
    bfm.write_bytes(b"x")
    assert talkflow("assets", "add", "bfm", str(bfm), data_root=tmp_path).returncode == 0
    out = talkflow("assets", "ls", data_root=tmp_path)
    assert str(bfm) in out.stdout
    bad = talkflow("assets", "add", "bfm", str(tmp_path / "missing.mat"), data_root=tmp_path)
    assert bad.returncode == 2 and "does not exist" in bad.stdout


@pytest.mark.slow
def test_sample_clip_then_cache_commands(tmp_path):
    out_mp4 = tmp_path / "clip.mp4"
    run = talkflow("sample-clip", str(out_mp4), "--text", "Hi there.", "--size", "128",
                   data_root=tmp_path / "root")
    assert run.returncode == 0, run.stdout + run.stderr
    assert out_mp4.stat().st_size > 1000
    ls = talkflow("cache", "ls", data_root=tmp_path / "root")
    assert "tts v1" in ls.stdout and "sample_clip v1" in ls.stdout
    assert talkflow("cache", "verify", data_root=tmp_path / "root").returncode == 0
    du = talkflow("cache", "du", data_root=tmp_path / "root")
    assert "entries     : 2" in du.stdout
    pruned = talkflow("cache", "prune", "--max-size", "0", data_root=tmp_path / "root")
    assert pruned.returncode == 0 and "2 entries" in pruned.stdout
    assert "tts" not in talkflow("cache", "ls", data_root=tmp_path / "root").stdout
