"""The preprocessing flow end to end on the sample clip: a complete, consistent dataset; a
parsing change recomputes only what depends on it; bad input fails early."""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from flows.preprocess import PreprocessConfig, preprocess_video
from flows.sample_clip import SampleClipConfig, make_sample_clip
from models.face.parsing import ClassicalParsingConfig, ParsingConfig
from talkflow.cache import computed_stages
from talkflow.errors import FaceNotFound, FaceTooSmall, InputError, MediaTooShort
from talkflow.store import get_store
from tasks.dataset import materialize_dataset
from tasks.media import NormalizeConfig, normalize_video
from tasks.tracking import TrackingConfig
from tests.mediafiles import ffmpeg_run, make_clip

pytestmark = pytest.mark.slow
PERSON = "orbit"  # a person and a sentence no other test file uses: every stage below computes here
STAGES = ("normalize", "frames", "landmarks", "audio_features", "parsing", "background", "composite",
          "blinks", "tracking", "dataset")


def computed_since(started: float, person: str) -> Counter[str]:
    """Stages computed for `person` since `started` (by key: the worker's data root is shared with
    its other tests, which compute stages of other people meanwhile)."""
    return Counter(e["stage"] for e in computed_stages() if e["at"] >= started and e["key"].startswith(f"{person}."))


def small_config(**parsing) -> PreprocessConfig:
    return PreprocessConfig(
        normalize=NormalizeConfig(size=256),
        parsing=ParsingConfig(classical=ClassicalParsingConfig(**parsing)),
        tracking=TrackingConfig(photometric=True, photometric_iters=5),
    )


@pytest.fixture(scope="module")
def clip():
    result = make_sample_clip("Seven eight nine ten eleven.", SampleClipConfig(size=256, seed=19))
    return get_store().fetch(result["video"])


def test_dataset_complete_and_consistent(clip, tmp_path, journal):
    before = {s: journal.count(s) for s in STAGES}
    started = time.time()
    ds = preprocess_video(clip, PERSON, small_config())
    n = ds.meta["n_frames"]
    assert n > 25 and ds.meta["n_train"] + ds.meta["n_val"] == n
    root = materialize_dataset(ds, tmp_path / "ds")
    for folder, ext in (("ori_imgs", "jpg"), ("ori_imgs", "lms"), ("parsing", "png"), ("gt_imgs", "jpg"),
                        ("torso_imgs", "png")):
        assert len(list((root / folder).glob(f"*.{ext}"))) == n, folder
    feats = np.load(root / "aud_feats.npy")
    assert feats.shape == (n, 16, 80) and np.isfinite(feats).all()
    assert json.loads((root / "aud_feats.json").read_text())["kind"] == "logmel"
    assert len((root / "au.csv").read_text().splitlines()) == n + 1
    train = json.loads((root / "transforms_train.json").read_text())
    val = json.loads((root / "transforms_val.json").read_text())
    ids = [f["img_id"] for f in train["frames"] + val["frames"]]
    assert ids == list(range(n)) and train["cx"] == 128
    c2w = np.array([f["transform_matrix"] for f in train["frames"]])
    rot = c2w[:, :3, :3]
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-4)
    # parsing masks: head above torso, plausible shares
    labels = np.asarray(Image.open(root / "parsing" / "10.png").convert("RGB"))
    head = np.all(labels == (255, 0, 0), -1)
    torso = np.all(labels == (0, 0, 255), -1)
    assert 0.1 < head.mean() < 0.6 and torso.mean() > 0.02
    assert np.argwhere(head)[:, 0].mean() < np.argwhere(torso)[:, 0].mean()
    torso_rgba = np.asarray(Image.open(root / "torso_imgs" / "10.png"))
    background = np.all(labels == (255, 255, 255), -1)
    assert torso_rgba.shape == (256, 256, 4)
    assert (torso_rgba[..., 3][torso] == 255).mean() > 0.95
    assert (torso_rgba[..., 3][background] == 0).mean() > 0.95
    top_of_head = head & (np.arange(256)[:, None] < np.argwhere(head)[:, 0].mean())
    assert (torso_rgba[..., 3][top_of_head] == 0).all()  # the head is cut out (ER-NeRF extends the neck under the chin)
    ours = computed_since(started, PERSON)
    assert {s: ours[s] for s in STAGES[2:]} == {s: 1 for s in STAGES[2:]}, (ours, [
        (s, journal.count(s) - before[s]) for s in STAGES])
    # the branches after the landmarks ran concurrently: parsing and tracking overlapped in time
    runs = {e["stage"]: (e["at"] - e["seconds"], e["at"]) for e in computed_stages()}
    assert runs["parsing"][0] < runs["tracking"][1] and runs["tracking"][0] < runs["parsing"][1]

    # a parsing config change recomputes parsing and what uses it, not landmarks/features/tracking
    again = time.time()
    preprocess_video(clip, PERSON, small_config(neck_band=0.6))
    changed = set(computed_since(again, PERSON))
    assert changed == {"parsing", "background", "composite", "dataset"}


def test_no_face_fails_before_parsing(tmp_path, journal):
    video = make_clip(tmp_path / "noface.mp4", duration=2.0, fps=25, size="256x256")
    n = journal.count("parsing")
    with pytest.raises(FaceNotFound, match="frames"):
        preprocess_video(video, "nobody", small_config())
    assert journal.count("parsing") == n


def test_small_face_is_rejected(tmp_path):
    from models.synth.talking_photo import sample_portrait

    face = sample_portrait(96)
    canvas = np.full((720, 720, 3), 90, np.uint8)
    canvas[300:396, 300:396] = face  # a 96 px portrait: the face is ~40 px
    Image.fromarray(canvas).save(tmp_path / "still.png")
    video = tmp_path / "tiny.mp4"
    ffmpeg_run("-loop", "1", "-i", str(tmp_path / "still.png"), "-f", "lavfi", "-i", "sine=duration=2",
               "-t", "2", "-r", "25", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-c:a", "aac", str(video))
    config = PreprocessConfig(normalize=NormalizeConfig(size=512))
    with pytest.raises(FaceTooSmall):
        preprocess_video(video, "tiny", config)


def test_too_short_and_bad_person(tmp_path):
    short = make_clip(tmp_path / "short.mp4", duration=0.5)
    with pytest.raises(MediaTooShort):
        preprocess_video(short, "astro", small_config())
    with pytest.raises(InputError, match="invalid person"):
        preprocess_video(short, "../../etc", small_config())


def test_variable_frame_rate_is_resampled(tmp_path):
    src = make_clip(tmp_path / "cfr.mp4", duration=3.0, fps=30, size="128x128")
    vfr = tmp_path / "vfr.mp4"
    # drop every third frame with their timestamps kept: the frame rate becomes irregular
    ffmpeg_run("-i", str(src), "-vf", "select='not(eq(mod(n\\,3)\\,2))'", "-fps_mode", "vfr",
               "-c:v", "libx264", "-c:a", "aac", str(vfr))
    result = normalize_video(vfr, NormalizeConfig(size=64))
    assert result.meta["source"]["variable_frame_rate"]
    assert any("variable frame rate" in w for w in result.meta["warnings"])
    assert result.meta["n_frames"] == pytest.approx(75, abs=2)  # 3 s at a constant 25 fps
