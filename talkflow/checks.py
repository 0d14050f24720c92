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

from talkflow.errors import InputError, MediaUnreadable, SpeechError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

TrainStage = Literal["auto", "head", "lips", "torso"]
FeatureKind = Literal["logmel", "phonemes", "hubert", "wav2vec2"]  # the kinds talkflow computes from audio


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
    """The one audio-or-text rule: exactly one of them; an audio path must exist, a text must say something."""
    if (audio is None) == (text is None):
        raise InputError("give exactly one of audio or text")
    if audio is not None:
        return existing_file(audio, "audio")
    if not text.strip():
        raise SpeechError("the text to speak is empty; give at least one word")
    return text


def talking_video(path: Path | str, *, need_audio: bool = True) -> Path:
    """A readable video (ffprobe) with a moving picture and, if asked, a sound track."""
    from talkflow import media

    p = existing_file(path, "video")
    media.require_video(media.probe(p), need_audio=need_audio)
    return p


def speech_audio(path: Path | str) -> Path:
    """A readable file with an audio stream (any container ffmpeg reads)."""
    from talkflow import media
    from talkflow.errors import NoAudioStream

    p = existing_file(path, "audio")
    if not media.probe(p).has_audio:
        raise NoAudioStream(f"'{p.name}' has no audio track; give a wav/mp3/m4a with speech")
    return p


def gpu_index(gpu_id: int | str | None) -> str | None:
    """A GPU index as CUDA_VISIBLE_DEVICES and Docker's device_ids write it ("0", "1", ...)."""
    if gpu_id is None:
        return None
    text = str(gpu_id).strip()
    if not text.isdigit():
        raise InputError(f"gpu_id must be a GPU index (0, 1, ...), not {gpu_id!r}")
    return str(int(text))


__all__ = ["FeatureKind", "NAME_RE", "TrainStage", "audio_or_text", "choice",
           "existing_file", "gpu_index",
           "speech_audio", "talking_video", "validate_name"]
