"""Errors the input itself shows are refused before Prefect starts: one stderr line, within a few
seconds (docs/media-contract.md, "What an input must be")."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from talkflow.contract import MAX_AUDIO_GAP_S, MIN_CLIP_S, MIN_PORTRAIT_PX
from tests.mediafiles import make_clip

ROOT = Path(__file__).resolve().parents[1]
# Runs the CLI and records, at exit, whether Prefect was ever imported.
RUN = ("import atexit, os, sys\n"
       "atexit.register(lambda: open(os.environ['PREFECT_MARK'], 'w').write(str('prefect' in sys.modules)))\n"
       "from talkflow.cli import main\n"
       "main()\n")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("inputs")
    Image.new("RGB", (112, 112), (120, 100, 90)).save(d / "small.png")
    Image.new("RGB", (256, 256), (120, 100, 90)).save(d / "portrait.png")
    (d / "notes.png").write_text("not an image\n")
    return {
        "short": str(make_clip(d / "short.mp4", duration=0.52, fps=25, size="64x48")),
        "early": str(make_clip(d / "early.mp4", duration=5.08, fps=25, size="64x48", audio_s=3.18)),
        "small": str(d / "small.png"),
        "portrait": str(d / "portrait.png"),
        "notimage": str(d / "notes.png"),
        "silent": str(make_clip(d / "silent.mp4", duration=1.2, fps=25, size="64x48", audio=False)),
    }


CASES = [
    pytest.param(["preprocess", "{short}", "--person", "bob"], f"at least {MIN_CLIP_S:.2f} s is required",
                 id="clip-too-short"),
    pytest.param(["preprocess", "{early}", "--person", "bob"], "its sound ends at 3.18 s, 1.90 s before its picture",
                 id="audio-ends-early"),
    pytest.param(["preprocess", "{silent}", "--person", "bob"], "has no audio track", id="clip-without-sound"),
    pytest.param(["preprocess", "{portrait}", "--person", "bob"], "still image", id="clip-is-a-picture"),
    pytest.param(["preprocess", "{short}", "--person", "bob", "--features", "hubert"],
                 "talkflow assets add hubert", id="features-model-missing"),
    pytest.param(["portrait", "--character", "ada", "--image", "{small}", "--text", "Hi."],
                 f"is 112x112 px; give at least {MIN_PORTRAIT_PX}x{MIN_PORTRAIT_PX} px", id="portrait-too-small"),
    pytest.param(["portrait", "--character", "ada", "--image", "{notimage}", "--text", "Hi."],
                 "is not an image", id="portrait-not-an-image"),
    pytest.param(["portrait", "--character", "ada", "--image", "{portrait}", "--audio", "{silent}"],
                 "has no audio track", id="portrait-speech-without-sound"),
    pytest.param(["render", "--person", "bob", "--audio", "{silent}"], "has no audio track",
                 id="render-speech-without-sound"),
    pytest.param(["features", "{silent}"], "has no audio track", id="features-without-sound"),
    pytest.param(["features", "{early}", "--out", "{notimage}/x.npy"], "cannot be written", id="unwritable-output"),
    pytest.param(["render", "--person", "bob", "--text", "Hi.", "--out", "{root}"], "is a folder",
                 id="output-is-a-folder"),
]


@pytest.mark.parametrize("args, message", CASES)
def test_refused_before_prefect_in_one_line(inputs, tmp_path, args, message):
    root, mark = tmp_path / "root", tmp_path / "prefect-imported"
    env = {**os.environ, "TALKFLOW_DATA_ROOT": str(root), "COLUMNS": "400", "PREFECT_MARK": str(mark)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RUN, *[a.format(**inputs, root=tmp_path) for a in args]], cwd=ROOT,
                         env=env,
                         capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - t0
    assert out.returncode == 2 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr
    assert message in out.stderr
    assert mark.read_text() == "False"  # Prefect never imported: no server, no flow
    assert not list(root.rglob("server.json")) and not (root / "store").exists()
    assert wall < 5.0, wall  # about 1 s on a quiet machine


def test_the_audio_rule_trims_a_little_and_refuses_more(tmp_path):
    """Within MAX_AUDIO_GAP_S the check passes (the normalize stage trims); beyond it, it refuses."""
    from talkflow import checks, media
    from talkflow.errors import AudioEndsEarly

    close = make_clip(tmp_path / "close.mp4", duration=2.0, fps=25, size="64x48", audio_s=2.0 - MAX_AUDIO_GAP_S / 2)
    far = make_clip(tmp_path / "far.mp4", duration=2.0, fps=25, size="64x48", audio_s=2.0 - 2 * MAX_AUDIO_GAP_S)
    assert checks.talking_video(close) == close
    assert media.audio_shortfall_s(media.probe(close)) == pytest.approx(MAX_AUDIO_GAP_S / 2, abs=0.05)
    with pytest.raises(AudioEndsEarly, match="before its picture"):
        checks.talking_video(far)
    checks.talking_video(far, max_audio_gap_s=1.5)  # a config that allows more


@pytest.mark.slow
def test_normalize_trims_the_picture_to_the_sound_with_a_warning(tmp_path):
    from talkflow import media
    from talkflow.store import get_store
    from tasks.media import NormalizeConfig, normalize_video

    src = make_clip(tmp_path / "close.mp4", duration=2.0, fps=25, size="64x48", audio_s=1.7)
    result = normalize_video(src, NormalizeConfig(size=32))
    assert any("trimmed to the sound" in w for w in result.meta["warnings"])
    video = media.probe(get_store().fetch(result["video"]))
    assert result.meta["n_frames"] == video.n_frames and abs(video.duration_s - 1.7) <= 0.05
    samples, rate = media.read_wav(get_store().fetch(result["audio"]))
    assert abs(samples.size / rate - video.duration_s) <= 0.05
