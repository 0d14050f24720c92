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
        env={**os.environ, "TALKFLOW_DATA_ROOT": str(data_root), "COLUMNS": "400", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_media_probe(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", duration=1.0, fps=25, size="64x48")
    out = talkflow("media", "probe", str(clip), data_root=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "has_audio" in out.stdout and "True" in out.stdout and "64" in out.stdout


def one_line_error(out: subprocess.CompletedProcess) -> str:
    """A user error: exit code 2, nothing on stdout, exactly one line on stderr."""
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == "" and out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr
    return out.stderr


def test_user_error_is_one_line_and_nonzero(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n" * 100)
    assert "notes.txt" in one_line_error(talkflow("media", "probe", str(bad), data_root=tmp_path))


def test_usage_error_exit_code(tmp_path):
    assert "--older-than" in one_line_error(talkflow("cache", "prune", data_root=tmp_path))
    out = talkflow("cache", "prune", "--character", "../x", data_root=tmp_path)
    assert "invalid character" in one_line_error(out)


def test_help_says_what_talkflow_is(tmp_path):
    out = talkflow("--help", data_root=tmp_path)
    assert out.returncode == 0
    assert "talking-head videos" in out.stdout and "only module" not in out.stdout
    for command in ("preprocess", "train", "render", "features", "portrait", "demo"):
        assert command in out.stdout


@pytest.mark.parametrize("args, message", [
    (["preprocess", "{noaudio}", "--person", "../x"], "invalid person '../x'"),
    (["preprocess", "{noaudio}", "--person", "bob"], "'noaudio.mp4' has no audio track"),
    (["preprocess", "{missing}", "--person", "bob"], "does not exist"),
    (["preprocess", "{noaudio}", "--person", "bob", "--features", "mfcc"], "--features must be one of"),
    (["train", "--person", "bob", "--stage", "eyes"], "--stage must be one of auto, head, lips, torso"),
    (["train", "--person", "bob", "--gpu", "-1"], "gpu_id must be a GPU index"),
    (["render", "--person", "bob"], "give exactly one of audio or text"),
    (["render", "--person", "bob", "--audio", "{missing}"], "does not exist"),
    (["features", "{noaudio}"], "has no audio track"),
    (["features", "{noaudio}", "--kind", "mfcc"], "--kind must be one of logmel, phonemes, visemes, hubert, wav2vec2"),
    (["features", "{noaudio}", "--kind", "deepspeech"], "talkflow does not compute deepspeech features"),
])
def test_bad_input_is_refused_before_prefect_starts(tmp_path, args, message):
    """One line on stderr within the CPU time of Python's start and the checks: no Prefect server
    starts (it takes 8-20 s), no flow runs, nothing is written to the data root."""
    import resource
    import time

    paths = {"noaudio": str(make_clip(tmp_path / "noaudio.mp4", duration=1.0, fps=25, size="64x48", audio=False)),
             "missing": str(tmp_path / "missing.mp4")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = talkflow(*[a.format(**paths) for a in args], data_root=tmp_path / "root")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert message in one_line_error(out)
    assert cpu < 2.0, cpu  # the check's own cost (wall time also counts the other processes on the machine)
    assert wall < 10.0, wall
    assert not (tmp_path / "root" / "store").exists() and not (tmp_path / "root" / "journal.jsonl").exists()


@pytest.mark.slow
def test_error_inside_a_flow_is_one_line_and_caches_nothing(tmp_path):
    """No face in the video: found by the landmarks stage, inside the flow."""
    clip = make_clip(tmp_path / "noface.mp4", duration=1.2, fps=25, size="96x96")
    out = talkflow("preprocess", str(clip), "--person", "bob", "--size", "96", data_root=tmp_path / "root")
    message = one_line_error(out)  # dlib finds nothing; the mesh fallback's detector may see tiny "faces"
    assert "no usable face" in message or "face is too small" in message
    assert "Failed to write result" not in out.stderr
    ls = talkflow("cache", "ls", data_root=tmp_path / "root")
    assert "landmarks" not in ls.stdout and "normalize" in ls.stdout  # the stages before it are kept


def test_doctor_reports_tools_and_assets(tmp_path):
    out = talkflow("doctor", data_root=tmp_path)
    assert out.returncode == 0, out.stderr
    for word in ("ffmpeg", "torch", "pytorch3d", "embedded", "store", "asset bfm",
                 "01_MorphableModel.mat", "log-mel", "network face_mesh", "selfie_segmentation.tflite"):
        assert word in out.stdout, word
    assert "renderer warp" in out.stdout and "the portrait itself, warped by its 3DMM" in out.stdout
    assert "auto picks it" in out.stdout and "renderer generator" in out.stdout  # off without a generator


def test_portrait_generator_renderer_without_a_generator_is_a_one_line_error(tmp_path):
    out = talkflow("portrait", "--character", "ada", "--image", str(tmp_path / "none.png"), "--text", "Hi.",
                   "--renderer", "generator", data_root=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stdout + out.stderr
    assert "talkflow assets add generator" in one_line_error(out)
    bad = talkflow("portrait", "--character", "ada", "--image", "x.png", "--text", "Hi.", "--renderer", "nerf",
                   data_root=tmp_path)
    assert "--renderer" in one_line_error(bad)


def test_assets_add_and_ls(tmp_path):
    bfm = tmp_path / "01_MorphableModel.mat"
    bfm.write_bytes(b"x")
    assert talkflow("assets", "add", "bfm", str(bfm), data_root=tmp_path).returncode == 0
    out = talkflow("assets", "ls", data_root=tmp_path)
    assert str(bfm) in out.stdout
    bad = talkflow("assets", "add", "bfm", str(tmp_path / "missing.mat"), data_root=tmp_path)
    assert "does not exist" in one_line_error(bad)


@pytest.mark.slow
def test_sample_clip_then_cache_commands(tmp_path):
    out_mp4 = tmp_path / "clip.mp4"
    run = talkflow("sample-clip", str(out_mp4), "--text", "Hi there.", "--size", "128",
                   data_root=tmp_path / "root")
    assert run.returncode == 0, run.stdout + run.stderr
    assert out_mp4.stat().st_size > 1000
    ls = talkflow("cache", "ls", data_root=tmp_path / "root")
    assert "tts v1" in ls.stdout and "sample_clip v2" in ls.stdout
    assert talkflow("cache", "verify", data_root=tmp_path / "root").returncode == 0
    du = talkflow("cache", "du", data_root=tmp_path / "root")
    assert "entries     : 2" in du.stdout
    pruned = talkflow("cache", "prune", "--max-size", "0", data_root=tmp_path / "root")
    assert pruned.returncode == 0 and "2 entries" in pruned.stdout
    assert "tts" not in talkflow("cache", "ls", data_root=tmp_path / "root").stdout
