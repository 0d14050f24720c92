"""Speaker-independent phone features from pocketsphinx's bundled en-us acoustic model.

pocketsphinx (BSD) ships a continuous en-us HMM acoustic model and a phone language model inside
its wheel: nothing is downloaded. Phone decoding ("allphone" search) gives the best phone
sequence with 10 ms frame timing. What a voice sounds like (pitch, timbre, loudness) is gone from
the result: only WHICH phone is spoken WHEN remains, so an avatar trained on one voice gets the
same kind of input from another voice or from TTS.

``phone_frames`` -> (L100, 40) one-hot rows at 100 Hz: 39 CMU phones then silence (noise and
filler units count as silence). ``phone_features`` -> (L, 40) at 50 Hz, frame k centred at k/50 s
like the log-mel frames (each row the share of each phone in the 20 ms around k/50 s).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from talkflow.contract import SAMPLE_RATE
from talkflow.errors import AssetMissing, InputError

PHONES = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH",
          "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V",
          "W", "Y", "Z", "ZH", "SIL")
PHONE_DIM = len(PHONES)  # 40
SILENCE = PHONES.index("SIL")
_INDEX = {p: i for i, p in enumerate(PHONES)}
FRAME_RATE = 100  # pocketsphinx frames per second
PAD_S = 0.3  # silence added each side: the first phone is otherwise lost to the feature normalisation


@dataclass(frozen=True)
class PhoneSegment:
    """A decoded phone: ``start``/``end`` are 100 Hz frame indices, inclusive."""

    phone: str
    start: int
    end: int


@functools.lru_cache(maxsize=1)
def _decoder():
    try:
        from pocketsphinx import Config, Decoder, get_model_path
    except ImportError as exc:  # pragma: no cover - installed with the project
        raise AssetMissing("phoneme features need pocketsphinx; install it with `pip install pocketsphinx`") from exc
    root = os.path.join(get_model_path(), "en-us")
    hmm, phone_lm = os.path.join(root, "en-us"), os.path.join(root, "en-us-phone.lm.bin")
    if not (os.path.isdir(hmm) and os.path.isfile(phone_lm)):
        raise AssetMissing(f"pocketsphinx's en-us model is missing under {root}; reinstall pocketsphinx")
    # batch mean normalisation (the whole utterance), a light phone-LM weight and wide beams:
    # deterministic, and on espeak-ng / piper speech the phones start within a frame of the energy
    config = Config(hmm=hmm, allphone=phone_lm, lm=None, dict=None, samprate=SAMPLE_RATE, cmn="batch",
                    lw=1.0, beam=1e-40, pbeam=1e-40, pip=0.5, loglevel="FATAL")
    return Decoder(config)


def decode_phones(samples: np.ndarray) -> list[PhoneSegment]:
    """Timed phones of 16 kHz mono float samples (N,) in [-1, 1], frames relative to sample 0."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise InputError(f"expected mono samples (N,) with N > 0, got shape {x.shape}")
    pad = int(PAD_S * FRAME_RATE)  # frames of padding
    pcm = np.pad(np.clip(x, -1.0, 1.0) * 32767.0, pad * SAMPLE_RATE // FRAME_RATE).round().astype(np.int16)
    decoder = _decoder()
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
    decoder.end_utt()
    return [PhoneSegment(s.word, s.start_frame - pad, s.end_frame - pad) for s in decoder.seg()]


def phone_frames(samples: np.ndarray) -> np.ndarray:
    """One-hot phones (L100, 40) float32 at 100 Hz, L100 = ceil(N / 160); unknown units are silence."""
    x = np.asarray(samples, dtype=np.float32)
    n = -(-x.size // (SAMPLE_RATE // FRAME_RATE))
    ids = np.full(n, SILENCE, np.int64)
    for seg in decode_phones(x):
        a, b = max(seg.start, 0), min(seg.end + 1, n)
        if a < b:
            ids[a:b] = _INDEX.get(seg.phone, SILENCE)
    return np.eye(PHONE_DIM, dtype=np.float32)[ids]


def phone_features(samples: np.ndarray) -> np.ndarray:
    """Phone shares (L, 40) float32 at 50 Hz, L = 1 + N // 320, row k centred at k/50 s.

    A 100 Hz frame i is centred at i/100 s + 12.8 ms; row k averages the frames whose centres
    fall in [k/50 - 10 ms, k/50 + 10 ms), i.e. frames 2k-2 and 2k-1 (clipped at the ends)."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise InputError(f"expected mono samples (N,) with N > 0, got shape {x.shape}")
    hot = phone_frames(x)  # (L100, 40)
    length = 1 + x.size // 320
    k = np.arange(length)
    first = np.clip(2 * k - 2, 0, hot.shape[0] - 1)
    second = np.clip(2 * k - 1, 0, hot.shape[0] - 1)
    return ((hot[first] + hot[second]) * 0.5).astype(np.float32)


__all__ = ["PHONES", "PHONE_DIM", "PhoneSegment", "decode_phones", "phone_features", "phone_frames"]
