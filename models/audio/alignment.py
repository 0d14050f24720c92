"""Phone timelines of speech: which phone is spoken when, in seconds.

Two ways to get one, both with pocketsphinx's bundled en-us model (nothing is downloaded):

* ``align_phones(samples, sr, text)``: forced alignment of a KNOWN text (TTS, or a transcript the
  user gives): the dictionary's pronunciation of each word, placed in time by the acoustic model.
  Tried with the decoder's default beams first, then with wide beams (some voices need them).
* ``recognise_phones(samples, sr)``: phone recognition (``models.audio.phonemes``) when only the
  audio is known: less exact (a wrong phone now and then), but it needs nothing else.

``speech_phones`` picks: alignment when a text is given and it aligns, else recognition; the
timeline says which one it came from. Phones are CMU ARPAbet without stress marks (``PHONES``);
noise, fillers and pauses are ``SIL``. Timelines are plain data (``to_json``/``from_json``).
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.audio.phonemes import PAD_S, PHONES, decode_phones
from talkflow.contract import SAMPLE_RATE
from talkflow.errors import AssetMissing, InputError

FRAME_S = 0.01  # pocketsphinx frames are 10 ms
Source = Literal["aligned", "recognised"]
_KNOWN = frozenset(PHONES)
# Beams tried in order: the decoder's defaults, then the wider beams some voices (espeak-ng) need.
_BEAMS = ({}, {"beam": 1e-80, "wbeam": 1e-60, "pbeam": 1e-80}, {"beam": 1e-100, "wbeam": 1e-80, "pbeam": 1e-100})


@dataclass(frozen=True)
class Phone:
    """One phone: ARPAbet symbol (or SIL) from ``start`` to ``end`` seconds."""

    phone: str
    start: float
    end: float

    @property
    def middle(self) -> float:
        return 0.5 * (self.start + self.end)


@dataclass(frozen=True)
class PhoneTimeline:
    """Phones in time order over ``duration`` seconds of speech; ``source``: aligned or recognised."""

    phones: tuple[Phone, ...]
    duration: float
    source: Source

    def spoken(self) -> list[Phone]:
        """The phones that are not silence."""
        return [p for p in self.phones if p.phone != "SIL"]

    def to_json(self) -> str:
        return json.dumps({"duration": self.duration, "source": self.source,
                           "phones": [[p.phone, round(p.start, 4), round(p.end, 4)] for p in self.phones]})

    @staticmethod
    def from_json(text: str) -> PhoneTimeline:
        data = json.loads(text)
        return PhoneTimeline(tuple(Phone(str(a), float(b), float(c)) for a, b, c in data["phones"]),
                             float(data["duration"]), data["source"])


class AlignmentFailed(InputError):
    """The text could not be aligned to the audio (words not in the dictionary, or no match)."""


def _unit(symbol: str) -> str:
    """A decoder unit -> ARPAbet without stress, or SIL for silence, noise and fillers."""
    base = re.sub(r"\d", "", symbol.upper())
    return base if base in _KNOWN and base != "SIL" else "SIL"


def _pcm16(samples: np.ndarray, sr: int) -> np.ndarray:
    from models.audio.features import to_mono_16k

    x = to_mono_16k(np.asarray(samples), sr)
    if x.size == 0:
        raise InputError("the audio is empty")
    pad = int(PAD_S * SAMPLE_RATE)  # silence each side, as for recognition
    return np.pad(np.clip(x, -1.0, 1.0) * 32767.0, pad).round().astype(np.int16)


@functools.lru_cache(maxsize=1)
def _dictionary() -> frozenset[str]:
    from pocketsphinx import get_model_path

    path = os.path.join(get_model_path(), "en-us", "cmudict-en-us.dict")
    with open(path, encoding="utf-8") as f:
        return frozenset(line.split(maxsplit=1)[0] for line in f if line.strip())


def words_of(text: str) -> list[str]:
    """The words of a text as the dictionary spells them (lower case, letters and apostrophes)."""
    return re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower())


def _align_decoder(**beams: float):
    try:
        from pocketsphinx import Config, Decoder, get_model_path
    except ImportError as exc:  # pragma: no cover - installed with the project
        raise AssetMissing("phone alignment needs pocketsphinx; install it with `pip install pocketsphinx`") from exc
    root = os.path.join(get_model_path(), "en-us")
    config = Config(hmm=os.path.join(root, "en-us"), dict=os.path.join(root, "cmudict-en-us.dict"),
                    samprate=SAMPLE_RATE, bestpath=False, loglevel="FATAL", **beams)
    return Decoder(config)


def _align_once(pcm: np.ndarray, text: str, beams: dict) -> list[Phone] | None:
    decoder = _align_decoder(**beams)
    try:
        decoder.set_align_text(text)
        for _ in range(2):  # words first, then phones within them
            decoder.start_utt()
            decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
            decoder.end_utt()
            if _ == 0:
                decoder.set_alignment()
        alignment = decoder.get_alignment()
        if alignment is None:
            return None
        out = []
        for word in alignment:
            for ph in word:
                start = ph.start * FRAME_S - PAD_S
                out.append(Phone(_unit(ph.name), start, start + ph.duration * FRAME_S))
        return out
    except RuntimeError:  # "Final result does not match the grammar" and kin
        return None


def _timeline(phones: list[Phone], duration: float, source: Source) -> PhoneTimeline:
    """Clip to [0, duration], merge adjacent silences and fill the gaps with silence."""
    out: list[Phone] = []
    cursor = 0.0
    for p in sorted(phones, key=lambda p: p.start):
        start, end = max(p.start, cursor), min(p.end, duration)
        if end <= start:
            continue
        if start > cursor + 1e-6:
            out.append(Phone("SIL", cursor, start))
        out.append(Phone(p.phone, start, end))
        cursor = end
    if duration > cursor + 1e-6:
        out.append(Phone("SIL", cursor, duration))
    merged: list[Phone] = []
    for p in out:
        if merged and p.phone == "SIL" and merged[-1].phone == "SIL":
            merged[-1] = Phone("SIL", merged[-1].start, p.end)
        else:
            merged.append(p)
    return PhoneTimeline(tuple(merged), duration, source)


def align_phones(samples: np.ndarray, sr: int, text: str) -> PhoneTimeline:
    """Forced alignment of ``text`` to the speech (N,) at ``sr`` Hz. Raises AlignmentFailed when a
    word is not in the dictionary or the audio does not match the text."""
    words = words_of(text)
    if not words:
        raise AlignmentFailed(f"the text {text[:60]!r} has no words to align")
    unknown = sorted({w for w in words if w not in _dictionary()})
    if unknown:
        raise AlignmentFailed(f"not in the pronunciation dictionary: {', '.join(unknown[:8])}")
    pcm = _pcm16(samples, sr)
    duration = (pcm.size / SAMPLE_RATE) - 2 * PAD_S
    for beams in _BEAMS:
        phones = _align_once(pcm, " ".join(words), beams)
        if phones:
            return _timeline(phones, duration, "aligned")
    raise AlignmentFailed(f"the speech does not match the text {text[:60]!r}")


def recognise_phones(samples: np.ndarray, sr: int) -> PhoneTimeline:
    """Phone recognition of the speech (N,) at ``sr`` Hz (no text needed)."""
    from models.audio.features import to_mono_16k

    x = to_mono_16k(np.asarray(samples), sr)
    if x.size == 0:
        raise InputError("the audio is empty")
    phones = [Phone(_unit(s.phone), s.start * FRAME_S, (s.end + 1) * FRAME_S) for s in decode_phones(x)]
    return _timeline(phones, x.size / SAMPLE_RATE, "recognised")


def speech_phones(samples: np.ndarray, sr: int, text: str | None = None) -> PhoneTimeline:
    """Aligned phones when ``text`` is given and aligns, else recognised phones."""
    if text and text.strip():
        try:
            return align_phones(samples, sr, text)
        except AlignmentFailed:
            pass
    return recognise_phones(samples, sr)


__all__ = ["AlignmentFailed", "Phone", "PhoneTimeline", "align_phones", "recognise_phones", "speech_phones",
           "words_of"]
