"""Fast unit tests for talkflow.media using tiny lavfi-generated clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talkflow import media
from talkflow.errors import (
    EmptyMedia,
    InputError,
    MediaError,
    MediaTooShort,
    MediaUnreadable,
    NoAudioStream,
    NotAMedia,
    NoVideoStream,
)
from tests.mediafiles import ffmpeg_run as _ffmpeg
from tests.mediafiles import make_clip as _make_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """2 s, 30 fps, 320x240 H.264 + AAC mp4."""
    return _make_clip(tmp_path_factory.mktemp("clip") / "talk.mp4")


# ------------------------------------------------------------------ happy paths


def test_probe_clip(clip):
    info = media.probe(clip)
    assert info.path == str(clip)
    assert "mp4" in info.format_name
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    assert info.has_video and info.has_audio
    assert (info.width, info.height) == (320, 240)
    assert info.fps == pytest.approx(30.0)
    assert info.nominal_fps == pytest.approx(30.0)
    assert info.n_frames == 60
    assert info.video_codec == "h264"
    assert info.audio_codec == "aac"
    assert info.sample_rate == 44100
    assert info.channels == 1
    assert info.variable_frame_rate is False
    media.require_video(info, need_audio=True, min_duration_s=1.0)


def test_normalize_video(clip, tmp_path):
    out_v, out_a = tmp_path / "norm.mp4", tmp_path / "norm.wav"
    media.normalize_video(clip, out_v, out_a, fps=25, size=64)
    v = media.probe(out_v)
    assert (v.width, v.height) == (64, 64)
    assert v.fps == pytest.approx(25.0)
    assert abs(v.n_frames - 50) <= 1
    assert not v.has_audio
    assert v.video_codec == "h264"
    a = media.probe(out_a)
    assert (a.sample_rate, a.channels, a.audio_codec) == (16000, 1, "pcm_s16le")
    samples, sr = media.read_wav(out_a)
    assert sr == 16000 and samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) / sr == pytest.approx(2.0, abs=0.05)
    assert not list(tmp_path.glob(".*tmp*"))  # temp files cleaned up


def test_normalize_without_audio_writes_no_wav(tmp_path):
    src = _make_clip(tmp_path / "mute.mp4", duration=0.4, size="96x64", audio=False)
    media.normalize_video(src, tmp_path / "n.mp4", tmp_path / "n.wav", size=32)
    assert (tmp_path / "n.mp4").is_file()
    assert not (tmp_path / "n.wav").exists()


def test_extract_frames_and_audio(clip, tmp_path):
    out = tmp_path / "ori_imgs"
    out.mkdir()
    (out / "99.jpg").write_bytes(b"stale")  # stale frame from an earlier run is removed
    n = media.extract_frames(clip, out)
    assert n == 60
    assert sorted(int(p.stem) for p in out.glob("*.jpg")) == list(range(60))
    assert media.extract_frames(clip, tmp_path / "png", ext="png") == 60
    wav = tmp_path / "a.wav"
    media.extract_audio(clip, wav, sample_rate=8000)
    samples, sr = media.read_wav(wav)
    assert sr == 8000 and len(samples) / sr == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize(
    "audio_s", [1.0, 3.0]
)  # shorter audio is padded, longer is cut
def test_mux_round_trip(tmp_path, audio_s):
    frames = [
        np.full((33, 47, 3), 10 * i, np.uint8) for i in range(20)
    ]  # odd size on purpose
    fdir = tmp_path / "frames"
    assert media.write_frames(frames, fdir) == 20
    wav = tmp_path / "a.wav"
    t = np.arange(int(16000 * audio_s)) / 16000
    media.write_wav(wav, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    out = tmp_path / "out.mp4"
    media.mux(fdir, wav, out, fps=25)
    info = media.probe(out)
    assert info.has_video and info.has_audio
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.width, info.height) == (48, 34)
    assert info.n_frames == 20
    assert abs(info.duration_s - 20 / 25) <= 1 / 25


def test_mux_video_only(tmp_path):
    fdir = tmp_path / "f"
    media.write_frames(
        (np.zeros((16, 16, 3), np.uint8) for _ in range(5)), fdir, ext="png"
    )
    out = tmp_path / "v.mp4"
    media.mux(fdir, None, out, fps=25, ext="png")
    info = media.probe(out)
    assert info.has_video and not info.has_audio and info.n_frames == 5


def test_wav_round_trip(tmp_path):
    x = np.array(
        [0.0, 0.5, -0.5, 1.5, -2.0], np.float32
    )  # out of range values are clipped
    media.write_wav(tmp_path / "x.wav", x, 22050)
    y, sr = media.read_wav(tmp_path / "x.wav")
    assert sr == 22050
    np.testing.assert_allclose(y, [0.0, 0.5, -0.5, 1.0, -1.0], atol=1e-4)
    media.write_wav(tmp_path / "i.wav", np.array([0, 1000, -1000], np.int16), 8000)
    y, _ = media.read_wav(tmp_path / "i.wav")
    np.testing.assert_allclose(y * 32768, [0, 1000, -1000])


def test_write_frames_rejects_bad_shape(tmp_path):
    with pytest.raises(ValueError):
        media.write_frames([np.zeros((4, 4), np.uint8)], tmp_path)
    with pytest.raises(ValueError):
        media.write_frames([np.zeros((4, 4, 3), np.uint8)], tmp_path, ext="gif")


# ------------------------------------------------------------------ error cases


def _assert_msg(exc: pytest.ExceptionInfo, name: str) -> None:
    assert isinstance(exc.value, MediaError) and isinstance(exc.value, InputError)
    assert name in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(MediaUnreadable) as exc:
        media.probe(tmp_path / "nope.mp4")
    _assert_msg(exc, "nope.mp4")


def test_directory(tmp_path):
    d = tmp_path / "adir"
    d.mkdir()
    with pytest.raises(MediaUnreadable) as exc:
        media.probe(d)
    _assert_msg(exc, "adir")


@pytest.mark.parametrize(
    "lines", [1, 300]
)  # long text is parsed by ffprobe's 'tty' demuxer
def test_text_file(tmp_path, lines):
    f = tmp_path / "notes.txt"
    f.write_text("".join(f"this is line {i} of plain text\n" for i in range(lines)))
    with pytest.raises(NotAMedia) as exc:
        media.probe(f)
    _assert_msg(exc, "notes.txt")


def test_png_is_not_a_video(tmp_path):
    png = tmp_path / "face.png"
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=1", "-frames:v", "1", str(png)
    )
    info = media.probe(png)  # probing reports it faithfully
    assert (
        info.has_video and info.n_frames == 1 and (info.width, info.height) == (64, 48)
    )
    with pytest.raises(NoVideoStream) as exc:
        media.require_video(info, need_audio=False)
    _assert_msg(exc, "face.png")


def test_audio_only_has_no_video(tmp_path):
    wav = tmp_path / "voice.wav"
    media.write_wav(wav, np.zeros(1600, np.float32), 16000)
    info = media.probe(wav)
    assert not info.has_video and info.has_audio and info.sample_rate == 16000
    with pytest.raises(NoVideoStream):
        media.require_video(info)


def test_video_without_audio(tmp_path):
    src = _make_clip(tmp_path / "silent.mp4", duration=0.4, size="64x48", audio=False)
    info = media.probe(src)
    media.require_video(info, need_audio=False)
    with pytest.raises(NoAudioStream) as exc:
        media.require_video(info, need_audio=True)
    _assert_msg(exc, "silent.mp4")
    with pytest.raises(NoAudioStream):
        media.extract_audio(src, tmp_path / "x.wav")
    assert not (tmp_path / "x.wav").exists()


def test_too_short(tmp_path):
    src = _make_clip(tmp_path / "short.mp4", duration=0.5, size="64x48")
    with pytest.raises(MediaTooShort) as exc:
        media.require_video(media.probe(src), min_duration_s=1)
    _assert_msg(exc, "short.mp4")
    assert "1.00 s" in str(exc.value) and "0.5" in str(exc.value)


def test_empty_file(tmp_path):
    f = tmp_path / "empty.mp4"
    f.write_bytes(b"")
    with pytest.raises(EmptyMedia) as exc:
        media.probe(f)
    _assert_msg(exc, "empty.mp4")


def test_truncated_mp4(clip, tmp_path):
    f = tmp_path / "cut.mp4"
    f.write_bytes(clip.read_bytes()[:1024])
    with pytest.raises(NotAMedia) as exc:
        media.probe(f)
    _assert_msg(exc, "cut.mp4")
    with pytest.raises(NotAMedia):
        media.normalize_video(f, tmp_path / "n.mp4", tmp_path / "n.wav")


def test_mux_errors(tmp_path):
    with pytest.raises(MediaUnreadable):
        media.mux(tmp_path / "nothing", None, tmp_path / "o.mp4")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(EmptyMedia):
        media.mux(tmp_path / "nothing", None, tmp_path / "o.mp4")


def test_ffmpeg_failure_is_media_error(clip, tmp_path):
    # An encoder option ffmpeg rejects surfaces as MediaError carrying ffmpeg's stderr.
    with pytest.raises(MediaError) as exc:
        media.normalize_video(
            clip, tmp_path / "n.mp4", tmp_path / "n.wav", size=64, crf=-5
        )
    assert "ffmpeg" in str(exc.value)
    assert not (tmp_path / "n.mp4").exists()
