"""The media stage as cached Prefect tasks: round trip on the sample clip, and bad input."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from flows.media import MediaConfig, media_stage
from flows.sample_clip import SampleClipConfig, make_sample_clip
from talkflow import media
from talkflow.cache_admin import list_entries
from talkflow.errors import EmptyMedia, MediaTooShort, NoAudioStream, NotAMedia, NoVideoStream
from talkflow.settings import get_settings
from talkflow.store import get_store
from tasks.media import FramesConfig, NormalizeConfig, normalize_video
from tests.mediafiles import ffmpeg_run, make_clip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample_clip():
    return make_sample_clip("Testing one two three.", SampleClipConfig(size=256, seed=3))


def test_sample_clip_is_a_talking_video(sample_clip):
    info = media.probe(get_store().fetch(sample_clip["video"]))
    assert info.has_video and info.has_audio and (info.width, info.height) == (256, 256)
    assert info.fps == pytest.approx(25)
    assert 1.0 < info.duration_s < 5.0
    assert info.n_frames == sample_clip.meta["n_frames"]
    assert abs(info.n_frames / 25 - info.duration_s) <= 1 / 25 + 1e-3


def test_media_round_trip(sample_clip, journal):
    clip = get_store().fetch(sample_clip["video"])
    config = MediaConfig(normalize=NormalizeConfig(size=128))
    result = media_stage(clip, config)
    norm = result.normalized
    n = norm.meta["n_frames"]
    assert norm.meta["fps"] == 25 and n == sample_clip.meta["n_frames"]
    video = media.probe(get_store().fetch(norm["video"]))
    assert (video.width, video.height, video.fps, video.has_audio) == (128, 128, 25, False)
    samples, rate = media.read_wav(get_store().fetch(norm["audio"]))
    assert rate == 16000 and abs(len(samples) / rate - video.duration_s) < 0.1
    frames_dir = get_store().fetch(result.frames["frames"])
    assert result.frames.meta["n_frames"] == n == len(list(frames_dir.glob("*.jpg")))
    out = media.probe(get_store().fetch(result.video["video"]))
    assert out.has_video and out.has_audio and out.video_codec == "h264"
    assert out.audio_codec == "aac" and out.n_frames == n
    assert abs(out.duration_s - n / 25) <= 1 / 25 + 1e-3

    # everything again: four cache hits, no work
    before = [journal.count(s) for s in ("probe", "normalize", "frames", "mux")]
    again = media_stage(clip, config)
    assert again == result
    assert [journal.count(s) for s in ("probe", "normalize", "frames", "mux")] == before
    # a frames config change recomputes frames and mux, not normalize
    media_stage(clip, config.model_copy(update={"frames": FramesConfig(ext="png")}))
    after = [journal.count(s) for s in ("probe", "normalize", "frames", "mux")]
    assert after == [before[0], before[1], before[2] + 1, before[3] + 1]


def _text(path: Path) -> Path:
    path.write_text("this is not a video\n" * 50)
    return path


def _wav(path: Path) -> Path:
    ffmpeg_run("-f", "lavfi", "-i", "sine=duration=2", str(path))
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _truncated(path: Path) -> Path:
    full = make_clip(path.with_name("full.mp4"), duration=2)
    path.write_bytes(full.read_bytes()[:2048])
    return path


@pytest.mark.parametrize(
    ("maker", "error", "words"),
    [
        (_text, NotAMedia, "not a readable audio or video"),
        (_wav, NoVideoStream, "no video stream"),
        (lambda p: make_clip(p, audio=False), NoAudioStream, "no audio track"),
        (lambda p: make_clip(p, duration=0.5), MediaTooShort, "at least 1.00 s"),
        (_empty, EmptyMedia, "empty"),
        (_truncated, NotAMedia, "truncated"),
    ],
    ids=["text", "audio-only", "no-audio", "too-short", "empty", "truncated"],
)
def test_bad_input_fails_early_and_caches_nothing(tmp_path, journal, maker, error, words):
    src = maker(tmp_path / f"input-{uuid.uuid4().hex[:6]}.mp4")
    store = get_store()
    entries, objects = {e.key for e in list_entries(store)}, set(store.iter_keys())
    n = journal.count("normalize")
    with pytest.raises(error, match=words):
        normalize_video(src, NormalizeConfig(min_duration_s=1.0))
    assert {e.key for e in list_entries(store)} == entries  # no cache entry
    assert set(store.iter_keys()) == objects  # no payload either
    assert journal.count("normalize") == n
    assert not list(get_settings().work_dir.glob("normalize-*"))  # scratch cleaned up


def test_frame_count_matches_duration(tmp_path):
    src = make_clip(tmp_path / "c.mp4", duration=1.6, fps=30, size="96x64")
    result = normalize_video(src, NormalizeConfig(size=64))
    assert result.meta["n_frames"] == 40  # 1.6 s at 25 fps
    assert result.meta["source"]["fps"] == pytest.approx(30)
