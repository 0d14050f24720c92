"""Pure media helpers over ffmpeg/ffprobe (via ffmpeg-python) plus small Pillow/wave I/O.

Every user-facing failure raises a typed error from :mod:`talkflow.errors` whose message
names the file, says what was wrong and what to do about it.
"""

from __future__ import annotations

import errno
import math
import os
import re
import wave
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import ffmpeg
import pydantic

from talkflow.contract import AUDIO_SLACK_S, SAMPLE_RATE, VIDEO_FPS
from talkflow.errors import (
    AudioEndsEarly,
    EmptyMedia,
    MediaError,
    MediaTooShort,
    MediaUnreadable,
    NoAudioStream,
    NotAMedia,
    NoVideoStream,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "MediaInfo",
    "FrameFolder",
    "audio_shortfall_s",
    "extract_audio",
    "extract_frames",
    "mux",
    "normalize_video",
    "probe",
    "read_wav",
    "require_video",
    "write_frames",
    "write_wav",
]

# Global ffmpeg flags: never read stdin, only log errors (captured and reported on failure).
_FFMPEG_GLOBAL = ("-nostdin", "-hide_banner", "-loglevel", "error")
# Demuxers that hold one still picture rather than a video (png_pipe, jpeg_pipe, ... end in "_pipe").
_IMAGE_FORMATS = {"image2", "apng", "webp"}
# Demuxers that "succeed" on plain text; such files are not media.
_TEXT_FORMATS = {"tty"}
_IMAGE_EXTS = {"jpg", "png"}
_STDERR_TAIL = 1500  # characters of ffmpeg/ffprobe stderr quoted in errors


class MediaInfo(pydantic.BaseModel):
    """What ffprobe says about a file (first audio and first real video stream)."""

    path: str
    format_name: str
    duration_s: float
    has_video: bool
    width: int | None = None
    height: int | None = None
    fps: float | None = None  # average frame rate (avg_frame_rate)
    nominal_fps: float | None = None  # r_frame_rate
    n_frames: int | None = None  # nb_frames when present, else round(duration * fps)
    video_codec: str | None = None
    has_audio: bool
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    variable_frame_rate: bool = False  # avg and r frame rates differ by more than 1 %
    video_end_s: float | None = None  # where the picture ends (stream start + duration), when ffprobe says
    audio_end_s: float | None = None  # where the sound ends, when ffprobe says


# --------------------------------------------------------------------------- helpers


def _name(path: str | Path) -> str:
    return Path(path).name or str(path)


def _check_readable(path: str | Path) -> Path:
    """Return ``path`` as a Path, or raise MediaUnreadable if it is not a readable file."""
    p = Path(path)
    if not p.exists():
        raise MediaUnreadable(
            f"Media file '{_name(p)}' does not exist ({p}). Check the path and upload the file again."
        )
    if p.is_dir():
        raise MediaUnreadable(
            f"'{_name(p)}' is a directory, not a media file ({p}). Pass the path of a video or audio file."
        )
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        raise MediaUnreadable(
            f"Media file '{_name(p)}' cannot be read ({exc.strerror or exc}). "
            "Check its permissions or copy it somewhere readable."
        ) from exc
    return p


def _rate(text: str | None) -> float | None:
    """Parse an ffprobe rate like '30000/1001'; None for absent or '0/0'."""
    if not text:
        return None
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _float(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    # drop NaN / inf / negatives
    return value if math.isfinite(value) and value >= 0 else None


def _int(text) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _stream_end(stream: dict) -> float | None:
    """Start + duration of a stream, s: its `duration`, else a DURATION tag (Matroska); None if unknown."""
    duration = _float(stream.get("duration"))
    if duration is None:
        tag = (stream.get("tags") or {}).get("DURATION") or ""
        m = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", tag.strip())
        duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else None
    if duration is None:
        return None
    return (_float(stream.get("start_time")) or 0.0) + duration


def _rotation(stream: dict) -> int:
    """Display rotation in degrees from the 'rotate' tag or display-matrix side data."""
    rot = _int((stream.get("tags") or {}).get("rotate"))
    if rot is None:
        for side in stream.get("side_data_list") or []:
            if "rotation" in side:
                rot = _int(side["rotation"])
                break
    return (rot or 0) % 360


def _is_still_format(format_name: str) -> bool:
    names = set(format_name.split(","))
    return bool(names & _IMAGE_FORMATS) or any(n.endswith("_pipe") for n in names)


def _stderr_tail(exc: ffmpeg.Error) -> str:
    text = (exc.stderr or b"").decode("utf-8", "replace").strip()
    return text[-_STDERR_TAIL:] if text else "(no output)"


_NO_SPACE = "No space left on device"


def _raise_if_disk_full(stderr: bytes | None) -> None:
    """ffmpeg exits 0 when the disk fills while it writes its trailer (the mp4 is left without its
    index, unreadable): its stderr is the only sign, so read it."""
    text = (stderr or b"").decode("utf-8", "replace")
    if _NO_SPACE not in text:
        return
    where = re.search(r"(?:Error writing trailer of|Error closing file) (.+?): " + _NO_SPACE, text)
    raise OSError(errno.ENOSPC, f"ffmpeg could not write its output: {_NO_SPACE}",
                  where.group(1) if where else None)


def _run(stream, what: str, src: str | Path) -> None:
    """Run an ffmpeg-python graph quietly; turn failures into MediaError."""
    try:
        _, err = stream.global_args(*_FFMPEG_GLOBAL).run(
            overwrite_output=True, capture_stdout=True, capture_stderr=True
        )
        _raise_if_disk_full(err)
    except ffmpeg.Error as exc:
        raise MediaError(
            f"ffmpeg failed to {what} '{_name(src)}'. The file may be corrupt or use an unsupported "
            f"codec; re-encode it (e.g. to H.264/AAC mp4) and try again. ffmpeg said: {_stderr_tail(exc)}"
        ) from exc
    except FileNotFoundError as exc:  # the binary itself is missing
        raise RuntimeError(
            "ffmpeg is not installed or not on PATH; install ffmpeg."
        ) from exc


def _tmp_path(dst: Path) -> Path:
    """Sibling temp name keeping the suffix (ffmpeg picks the muxer from it)."""
    return dst.with_name(f".{dst.stem}.tmp-{os.getpid()}{dst.suffix}")


def _cleanup(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _check_ext(ext: str) -> str:
    ext = ext.lower().lstrip(".")
    if ext not in _IMAGE_EXTS:
        raise ValueError(
            f"frame extension must be one of {sorted(_IMAGE_EXTS)}, got {ext!r}"
        )
    return ext


def _numbered(frames_dir: Path, ext: str) -> list[Path]:
    """Files named <int>.<ext> in frames_dir, in numeric order."""
    pat = re.compile(rf"^(\d+)\.{re.escape(ext)}$")
    found = [
        (int(m.group(1)), p) for p in frames_dir.iterdir() if (m := pat.match(p.name))
    ]
    return [p for _, p in sorted(found)]


def _count_contiguous(frames_dir: Path, ext: str) -> int:
    """How many of 0.ext, 1.ext, ... exist without a gap."""
    n = 0
    while (frames_dir / f"{n}.{ext}").is_file():
        n += 1
    return n


# --------------------------------------------------------------------------- probing


def probe(path: str | Path) -> MediaInfo:
    """Describe a media file with ffprobe.

    Raises MediaUnreadable (missing, directory, unreadable), EmptyMedia (0-byte file or no
    duration and no frames), NotAMedia (ffprobe fails or finds no audio/video stream).
    A still image is reported faithfully (a 1-frame video); :func:`require_video` rejects it.
    """
    p = _check_readable(path)
    name = _name(p)
    if p.stat().st_size == 0:
        raise EmptyMedia(
            f"Media file '{name}' is empty (0 bytes). Upload the file again; the copy may have failed."
        )
    try:
        data = ffmpeg.probe(str(p), v="error")
    except ffmpeg.Error as exc:
        raise NotAMedia(
            f"'{name}' is not a readable audio or video file (ffprobe: {_stderr_tail(exc)}). "
            "It may be truncated, corrupt or of another type; provide a valid video/audio file "
            "(e.g. mp4, mov, wav)."
        ) from exc
    except FileNotFoundError as exc:
        raise RuntimeError(
            "ffprobe is not installed or not on PATH; install ffmpeg."
        ) from exc

    fmt = data.get("format") or {}
    format_name = str(fmt.get("format_name") or "")
    streams = data.get("streams") or []
    # Cover art in audio files is an 'attached_pic' video stream; it is not a video.
    videos = [
        s
        for s in streams
        if s.get("codec_type") == "video"
        and not (s.get("disposition") or {}).get("attached_pic")
    ]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if format_name in _TEXT_FORMATS or (not videos and not audios):
        raise NotAMedia(
            f"'{name}' contains no audio or video stream (format: {format_name or 'unknown'}). "
            "Provide a video or audio file (e.g. mp4, mov, wav)."
        )

    still = _is_still_format(format_name)
    duration = _float(fmt.get("duration"))
    if duration is None:
        durations = [
            d for s in videos + audios if (d := _float(s.get("duration"))) is not None
        ]
        duration = max(durations) if durations else None

    width = height = fps = nominal = n_frames = None
    vcodec = None
    if videos:
        v = videos[0]
        vcodec = v.get("codec_name")
        width, height = _int(v.get("width")), _int(v.get("height"))
        if _rotation(v) in (90, 270) and width and height:
            width, height = height, width  # report displayed size (ffmpeg autorotates)
        fps, nominal = _rate(v.get("avg_frame_rate")), _rate(v.get("r_frame_rate"))
        n_frames = _int(v.get("nb_frames"))
        if not n_frames and still:
            n_frames = 1
        if not n_frames and duration and (fps or nominal):
            n_frames = round(duration * (fps or nominal))
    vfr = bool(fps and nominal and abs(fps - nominal) > 0.01 * max(fps, nominal))

    if not duration and not n_frames:
        raise EmptyMedia(
            f"'{name}' has zero duration and no frames. Re-export or re-record the media and upload it again."
        )

    a = audios[0] if audios else {}
    return MediaInfo(
        video_end_s=_stream_end(videos[0]) if videos and not still else None,
        audio_end_s=_stream_end(a) if a else None,
        path=str(p),
        format_name=format_name,
        duration_s=duration or 0.0,
        has_video=bool(videos),
        width=width,
        height=height,
        fps=fps,
        nominal_fps=nominal,
        n_frames=n_frames,
        video_codec=vcodec,
        has_audio=bool(audios),
        audio_codec=a.get("codec_name"),
        sample_rate=_int(a.get("sample_rate")),
        channels=_int(a.get("channels")),
        variable_frame_rate=vfr,
    )


def audio_shortfall_s(info: MediaInfo) -> float:
    """How long the picture outlasts the sound, s (0 when it does not, or when ffprobe cannot tell)."""
    if info.video_end_s is None or info.audio_end_s is None:
        return 0.0
    return max(info.video_end_s - info.audio_end_s, 0.0)


def require_video(
    info: MediaInfo, *, need_audio: bool = True, min_duration_s: float = 0.0,
    max_audio_gap_s: float | None = None,
) -> None:
    """Raise unless ``info`` is a real (moving) video, with audio if ``need_audio``, long enough, and
    (with ``max_audio_gap_s``) with a sound track that ends at most that long before the picture."""
    name = _name(info.path)
    if not info.has_video:
        raise NoVideoStream(
            f"'{name}' has no video stream (it looks like audio only). Provide a video of the speaker's face."
        )
    if _is_still_format(info.format_name) or (
        info.n_frames is not None and info.n_frames <= 1
    ):
        raise NoVideoStream(
            f"'{name}' is a still image, not a video. Provide a video clip (e.g. mp4) of the speaker's face."
        )
    if need_audio and not info.has_audio:
        raise NoAudioStream(
            f"'{name}' has no audio track. Provide a video with the speaker's voice, or supply the audio separately."
        )
    if info.duration_s <= 0:
        raise EmptyMedia(
            f"'{name}' has zero duration. Re-export the video and upload it again."
        )
    if info.duration_s < min_duration_s:
        raise MediaTooShort(
            f"'{name}' is {info.duration_s:.2f} s long but at least {min_duration_s:.2f} s is required. "
            "Provide a longer video."
        )
    gap = audio_shortfall_s(info) if need_audio and max_audio_gap_s is not None else 0.0
    if gap > max(max_audio_gap_s or 0.0, AUDIO_SLACK_S):
        raise AudioEndsEarly(
            f"'{name}': its sound ends at {info.audio_end_s:.2f} s, {gap:.2f} s before its picture "
            f"({info.video_end_s:.2f} s; at most {max_audio_gap_s:.2f} s is trimmed). Re-export it with the whole "
            f"sound track, or cut the video to its sound: ffmpeg -i '{name}' -t {info.audio_end_s:.2f} cut.mp4"
        )


# --------------------------------------------------------------------------- transcoding


def normalize_video(
    src: str | Path,
    dst_video: str | Path,
    dst_wav: str | Path,
    *,
    fps: int = VIDEO_FPS,
    size: int = 512,
    sample_rate: int = SAMPLE_RATE,
    crf: int = 18,
    duration_s: float | None = None,
) -> None:
    """Transcode ``src`` to a square constant-fps H.264 mp4 (no audio) plus a mono 16-bit wav.

    The video is centre-cropped to a square of side min(w, h), scaled to ``size`` x ``size``
    and resampled to exactly ``fps``; ``duration_s`` cuts both at that time (the end of a sound
    track shorter than the picture). ``dst_wav`` is written only when ``src`` has audio.
    Both outputs come from a single ffmpeg run and are moved into place only on success.
    """
    info = probe(src)
    if not info.has_video:
        raise NoVideoStream(
            f"'{_name(src)}' has no video stream to normalize. Provide a video file."
        )
    dst_video, dst_wav = Path(dst_video), Path(dst_wav)
    tmp_v, tmp_a = _tmp_path(dst_video), _tmp_path(dst_wav)

    inp = ffmpeg.input(str(src))
    cut = {} if duration_s is None else {"t": f"{duration_s:.6f}"}
    side = "min(iw,ih)"  # ffmpeg-python escapes the comma for the filtergraph
    video = (
        inp.video.filter("fps", fps=fps)
        .filter("crop", side, side)  # centred by default
        .filter("scale", size, size)
        .filter("setsar", 1)
        .filter("format", "yuv420p")
    )
    outputs = [
        video.output(
            str(tmp_v),
            vcodec="libx264",
            crf=crf,
            pix_fmt="yuv420p",
            r=fps,
            movflags="+faststart",
            **cut,
        )
    ]
    if info.has_audio:
        outputs.append(
            inp.audio.output(
                str(tmp_a), acodec="pcm_s16le", ac=1, ar=sample_rate, f="wav", **cut
            )
        )
    try:
        _run(ffmpeg.merge_outputs(*outputs), "normalize", src)
        os.replace(tmp_v, dst_video)
        if info.has_audio:
            os.replace(tmp_a, dst_wav)
    finally:
        _cleanup(tmp_v, tmp_a)


def extract_frames(
    video: str | Path, out_dir: str | Path, *, ext: str = "jpg", quality: int = 2
) -> int:
    """Write every frame of ``video`` as out_dir/0.ext, 1.ext, ... (ER-NeRF ori_imgs layout).

    ``quality`` is ffmpeg's JPEG -q:v (1 best .. 31 worst); ignored for png. Stale numbered
    frames with the same extension are removed first. Returns the number of frames written.
    """
    ext = _check_ext(ext)
    _check_readable(video)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in _numbered(out, ext):
        stale.unlink()
    opts: dict = {"start_number": 0, "vsync": "passthrough"}
    if ext == "jpg":
        opts["q:v"] = quality
    _run(
        ffmpeg.input(str(video)).video.output(str(out / f"%d.{ext}"), **opts),
        "extract frames from",
        video,
    )
    n = _count_contiguous(out, ext)
    if n == 0:
        raise EmptyMedia(
            f"No frames could be decoded from '{_name(video)}'. Provide a video with picture content."
        )
    return n


def extract_audio(
    src: str | Path, dst_wav: str | Path, *, sample_rate: int = SAMPLE_RATE
) -> None:
    """Decode the first audio stream of ``src`` to a mono 16-bit PCM wav at ``sample_rate``."""
    info = probe(src)
    if not info.has_audio:
        raise NoAudioStream(
            f"'{_name(src)}' has no audio track to extract. Provide a file that contains speech audio."
        )
    dst = Path(dst_wav)
    tmp = _tmp_path(dst)
    try:
        _run(
            ffmpeg.input(str(src)).audio.output(
                str(tmp), acodec="pcm_s16le", ac=1, ar=sample_rate, f="wav"
            ),
            "extract audio from",
            src,
        )
        os.replace(tmp, dst)
    finally:
        _cleanup(tmp)


def mux(
    frames_dir: str | Path,
    audio: str | Path | None,
    out_mp4: str | Path,
    *,
    fps: int = VIDEO_FPS,
    ext: str = "jpg",
    crf: int = 18,
) -> None:
    """Encode frames 0.ext, 1.ext, ... at ``fps`` into an H.264 (+ AAC) mp4 with +faststart.

    The video length follows the frames; audio is padded with silence or cut so the output
    lasts n_frames / fps. Odd frame sizes are padded by one pixel to even dimensions.
    """
    ext = _check_ext(ext)
    fdir = Path(frames_dir)
    if not fdir.is_dir():
        raise MediaUnreadable(
            f"Frames directory '{fdir}' does not exist. Run the rendering step first."
        )
    n = _count_contiguous(fdir, ext)
    if n == 0:
        raise EmptyMedia(
            f"Frames directory '{fdir}' has no frames named 0.{ext}, 1.{ext}, ... Run the rendering step first."
        )
    duration = n / fps
    video = (
        ffmpeg.input(str(fdir / f"%d.{ext}"), f="image2", framerate=fps, start_number=0)
        .video.filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")
        .filter("format", "yuv420p")
    )
    vopts = {
        "vcodec": "libx264",
        "crf": crf,
        "pix_fmt": "yuv420p",
        "r": fps,
        "movflags": "+faststart",
    }
    streams = [video]
    if audio is not None:
        ainfo = probe(audio)
        if not ainfo.has_audio:
            raise NoAudioStream(
                f"'{_name(audio)}' has no audio track to mux. Provide a wav/mp3/m4a with speech."
            )
        streams.append(ffmpeg.input(str(audio)).audio.filter("apad"))
        vopts.update(acodec="aac", audio_bitrate="128k", shortest=None)
    dst = Path(out_mp4)
    tmp = _tmp_path(dst)
    try:
        # -t caps the padded audio at the exact video length; -shortest is a second guard.
        _run(
            ffmpeg.output(*streams, str(tmp), t=f"{duration:.6f}", **vopts),
            "mux frames into",
            dst,
        )
        os.replace(tmp, dst)
    finally:
        _cleanup(tmp)


# --------------------------------------------------------------------------- numpy / Pillow / wave I/O
# (imported where used: probing a file, the checks' job, loads neither)


def write_frames(
    frames: Iterable[np.ndarray],
    out_dir: str | Path,
    *,
    ext: str = "jpg",
    quality: int = 95,
) -> int:
    """Save HxWx3 uint8 RGB arrays as out_dir/0.ext, 1.ext, ...; returns how many were written.

    ``quality`` is Pillow's JPEG quality (1..95); ignored for png.
    """
    import numpy as np
    from PIL import Image

    ext = _check_ext(ext)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, frame in enumerate(frames):
        arr = np.asarray(frame)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(
                f"frame {i} must be an HxWx3 uint8 array, got shape {arr.shape} dtype {arr.dtype}"
            )
        img = Image.fromarray(np.ascontiguousarray(arr), "RGB")
        if ext == "jpg":
            img.save(out / f"{i}.jpg", "JPEG", quality=quality)
        else:
            img.save(out / f"{i}.png", "PNG")
        n += 1
    return n


class FrameFolder(Sequence):
    """Frames 0.ext, 1.ext, ... of a folder as a lazy sequence of (H,W,C) uint8 arrays.

    Keeps a long clip out of memory: each item is decoded when it is read.
    """

    def __init__(self, folder: str | Path, ext: str = "jpg", mode: str = "RGB"):
        self.folder, self.ext, self.mode = Path(folder), _check_ext(ext), mode
        self._n = _count_contiguous(self.folder, self.ext)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        import numpy as np
        from PIL import Image

        with Image.open(self.folder / f"{i % self._n}.{self.ext}") as img:
            return np.asarray(img.convert(self.mode))


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM wav as float32 mono samples in [-1, 1] (channels averaged) and its rate."""
    import numpy as np

    p = _check_readable(path)
    try:
        with wave.open(str(p), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise NotAMedia(
            f"'{p.name}' is not a PCM wav file ({exc}). Convert it with extract_audio() first."
        ) from exc
    if width != 2:
        raise MediaError(
            f"'{p.name}' uses {8 * width}-bit samples; only 16-bit PCM is supported. "
            "Convert it with extract_audio() first."
        )
    data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        data = (
            data[: len(data) - len(data) % channels].reshape(-1, channels).mean(axis=1)
        )
    return np.ascontiguousarray(data, dtype=np.float32), rate


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono samples (float in [-1, 1], clipped, or int16) as a 16-bit PCM wav."""
    import numpy as np

    arr = np.asarray(samples)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"write_wav expects mono 1-D samples, got shape {arr.shape}")
    if arr.dtype == np.int16:
        pcm = arr
    elif np.issubdtype(arr.dtype, np.floating):
        pcm = np.round(np.clip(arr, -1.0, 1.0) * 32767.0).astype(np.int16)
    else:
        raise ValueError(
            f"write_wav expects float or int16 samples, got dtype {arr.dtype}"
        )
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.astype("<i2").tobytes())
