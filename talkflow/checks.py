"""Checks of a user's input that need no Prefect: names, paths, kinds, media streams.

The CLI and the API run them before any flow (so before a Prefect server starts: a bad name or
path fails in a fraction of a second); the flows and tasks run the same checks again, since they
can also be started from the Prefect UI or a schedule. Importing this module imports neither
Prefect nor torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, get_args

from talkflow.contract import (
    COMPUTED_KINDS,
    MAX_AUDIO_GAP_S,
    MAX_SPEECH_S,
    MIN_CLIP_S,
    MIN_PORTRAIT_PX,
    FeatureKind,
    FeatureSpec,
    feature_spec,
)
from talkflow.errors import ImageTooSmall, InputError, MediaError, MediaUnreadable, SpeechError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

TrainStage = Literal["auto", "head", "lips", "torso"]


def validate_name(name: str, what: str = "name") -> str:
    """A person/character name used as a cache namespace and a folder name: no path tricks."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InputError(
            f"invalid {what} {name!r}: use 1-64 letters, digits, '_' or '-', starting with a "
            "letter or digit (no '/', '..' or spaces)"
        )
    return name


def choice(value: str, allowed: type | tuple[str, ...], what: str) -> str:
    """`value` if it is one of `allowed` (a tuple, or a Literal type), else an InputError listing them."""
    options = get_args(allowed) if not isinstance(allowed, tuple) else allowed
    if value not in options:
        raise InputError(f"{what} must be one of {', '.join(options)}, not {value!r}")
    return value


def existing_file(path: Path | str, what: str = "file") -> Path:
    """The path, if it names an existing file (not a folder)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise MediaUnreadable(f"the {what} '{p}' does not exist. Check the path and try again.")
    if not p.is_file():
        raise MediaUnreadable(f"the {what} '{p}' is a folder, not a file; give the file itself")
    return p


def audio_or_text(audio: Path | str | None, text: str | None) -> Path | str:
    """The one audio-or-text rule: exactly one of them; an audio path must hold speech (`speech_audio`),
    a text must say something."""
    if (audio is None) == (text is None):
        raise InputError("give exactly one of audio or text")
    if audio is not None:
        return speech_audio(audio)
    if not text.strip():
        raise SpeechError("the text to speak is empty; give at least one word")
    return text


def talking_video(path: Path | str, *, need_audio: bool = True, min_duration_s: float = MIN_CLIP_S,
                  max_audio_gap_s: float = MAX_AUDIO_GAP_S) -> Path:
    """A readable video (ffprobe) with a moving picture of at least `min_duration_s` and, if asked, a
    sound track that ends at most `max_audio_gap_s` before the picture (docs/media-contract.md)."""
    p = existing_file(path, "video")
    from talkflow import media  # after the cheap checks: a missing file is refused before ffmpeg loads

    media.require_video(media.probe(p), need_audio=need_audio, min_duration_s=min_duration_s,
                        max_audio_gap_s=max_audio_gap_s if need_audio else None)
    return p


def speech_audio(path: Path | str, max_duration_s: float = MAX_SPEECH_S) -> Path:
    """A readable file with an audio stream (any container ffmpeg reads) of at most `max_duration_s`."""
    p = existing_file(path, "audio")
    from talkflow import media  # after the cheap checks: a missing file is refused before ffmpeg loads
    from talkflow.errors import NoAudioStream

    info = media.probe(p)
    if not info.has_audio:
        raise NoAudioStream(f"'{p.name}' has no audio track; give a wav/mp3/m4a with speech")
    if info.duration_s > max_duration_s:
        raise MediaError(f"'{p.name}' lasts {info.duration_s:.0f} s, more than {max_duration_s:.0f} s; split it "
                         "and render the parts")
    return p


def output_file(path: Path | str | None, what: str = "output") -> Path | None:
    """The path a command will write (None: its default), if a file can be made there: not a folder,
    and its nearest existing parent a writable folder."""
    import os

    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError(f"the {what} '{p}' is a folder; give a file name in it")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"the {what} '{p}' cannot be written ('{parent}' is not a writable folder); "
                         "give a path in a folder you can write to")
    return p


def portrait_image(path: Path | str, min_size: int = MIN_PORTRAIT_PX) -> Path:
    """A readable image file of at least `min_size` px a side (its header is read, not its pixels)."""
    from PIL import Image, UnidentifiedImageError

    p = existing_file(path, "image")
    try:
        with Image.open(p) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"'{p.name}' is not an image Pillow can read ({exc}); give a PNG or JPEG portrait") from exc
    if min(width, height) < min_size:
        raise ImageTooSmall(f"the portrait '{p.name}' is {width}x{height} px; give at least {min_size}x{min_size} px "
                            "with the face filling a good part of it")
    return p


def feature_kind(kind: str, what: str = "kind") -> FeatureSpec:
    """The table row of an audio feature kind talkflow can compute now: InputError for an unknown kind or
    one it cannot compute (DeepSpeech), AssetMissing (naming how to register it) for a missing model."""
    from talkflow import assets

    if kind not in COMPUTED_KINDS:
        try:
            spec = feature_spec(kind)
        except ValueError:
            choice(kind, COMPUTED_KINDS, what)  # raises, listing the kinds
            raise
        raise InputError(f"talkflow does not compute {kind} features: ER-NeRF's extractor writes them "
                         f"({spec.reference_file}); give that file to `talkflow preprocess --deepspeech FILE`, or "
                         f"use {what} {', '.join(COMPUTED_KINDS)}")
    spec = feature_spec(kind)
    if spec.asset is not None:
        assets.require(spec.asset)
    return spec


def gpu_index(gpu_id: int | str | None) -> str | None:
    """A GPU index as CUDA_VISIBLE_DEVICES and Docker's device_ids write it ("0", "1", ...)."""
    if gpu_id is None:
        return None
    text = str(gpu_id).strip()
    if not text.isdigit():
        raise InputError(f"gpu_id must be a GPU index (0, 1, ...), not {gpu_id!r}")
    return str(int(text))


__all__ = ["FeatureKind", "NAME_RE", "TrainStage", "audio_or_text", "choice",
           "existing_file", "feature_kind", "gpu_index", "output_file", "portrait_image",
           "speech_audio", "talking_video", "validate_name"]
