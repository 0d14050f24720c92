"""The ``phonemes`` audio feature kind (models/audio/phonemes.py): pocketsphinx's bundled en-us model
decodes plausible, deterministic phones from an espeak-ng sentence; the 50 Hz rows line up with the
speech energy (no constant lag); the windows have the shape of every other kind."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from models.audio import features as af
from models.audio.phonemes import PHONE_DIM, PHONES, SILENCE, decode_phones, phone_features

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
SENTENCE = "Please open the window and sit down for a while."


def _transcription(text: str) -> list[str]:
    """Phones of the words in pocketsphinx's bundled CMU dictionary."""
    import os
    import re

    from pocketsphinx import get_model_path

    words = re.findall(r"[a-z']+", text.lower())
    entries: dict[str, list[str]] = {}
    with open(os.path.join(get_model_path(), "en-us", "cmudict-en-us.dict")) as f:
        for line in f:
            word, *phones = line.split()
            if word in words and word not in entries:
                entries[word] = phones
    return [p for w in words for p in entries[w]]


def _edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, row[0] = row[:], i
        for j in range(1, len(b) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
    return row[-1]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    from models.audio.tts import synthesize

    samples, rate = synthesize(SENTENCE, engine="espeak")
    return af.to_mono_16k(samples, rate)


def test_an_espeak_sentence_gives_plausible_deterministic_phones(speech):
    segs = decode_phones(speech)
    phones = [s.phone for s in segs]
    assert phones[0] == phones[-1] == "SIL"  # espeak-ng leaves a little silence at both ends
    spoken = [p for p in phones if p != "SIL"]
    # 33 phones in the dictionary's transcription; the decoder finds about as many
    assert 20 <= len(spoken) <= 50, phones
    reference = _transcription(SENTENCE)
    per = _edit_distance(spoken, reference) / len(reference)
    assert per < 0.7, (per, phones)  # about 0.4 on piper speech, 0.6 on espeak-ng's formant voice
    assert per < 0.8 * _edit_distance(spoken[::-1], reference) / len(reference)  # order matters
    assert all(p in PHONES or p.startswith("+") for p in phones)
    assert all(a.end < b.start for a, b in zip(segs, segs[1:]))  # ordered, not overlapping
    assert [(s.phone, s.start, s.end) for s in decode_phones(speech)] == [(s.phone, s.start, s.end) for s in segs]


def test_rows_are_phone_shares_at_50_hz(speech):
    f = phone_features(speech)
    assert f.shape == (1 + speech.size // 320, PHONE_DIM) and f.dtype == np.float32
    np.testing.assert_allclose(f.sum(1), 1.0, atol=1e-6)
    assert set(np.unique(f)) <= {0.0, 0.5, 1.0}
    assert f[0, SILENCE] == 1.0 and f[-1, SILENCE] == 1.0


def test_phone_timing_follows_the_speech_energy(speech):
    """Speech (non-silence) rows against the frames with energy: best at lag 0 (+-1 row of 20 ms),
    and a second of leading silence moves the phones by exactly 50 rows (+-1)."""
    from models.eval.lipsync import best_offset

    f = phone_features(speech)
    voiced = 1.0 - f[:, SILENCE]
    frames = np.pad(speech, 160)[: 320 * len(f)].reshape(len(f), 320)  # row k: samples around k/50 s
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(1))
    active = (rms > 0.05 * np.percentile(rms, 95)).astype(float)
    lag, r = best_offset(voiced, active, max_offset=10)
    assert abs(lag) <= 1 and r > 0.5, (lag, r)

    delayed = phone_features(np.concatenate([np.zeros(16_000, np.float32), speech]))
    onset = int(np.argmax(voiced > 0))
    assert abs(int(np.argmax(delayed[:, SILENCE] < 1)) - (onset + 50)) <= 1


def test_phonemes_kind_windows_like_the_other_kinds(speech):
    n = int(round(speech.size / 16_000 * 25))
    feats, info = af.extract_features(speech, 16_000, n, kind="phonemes")
    assert feats.shape == (n, 16, PHONE_DIM) and info == af.FeatureInfo(kind="phonemes", dim=PHONE_DIM)
    steps = phone_features(speech)
    np.testing.assert_array_equal(feats, af.window_features(steps, n))
    assert af.AudioFeatureConfig(kind="phonemes").kind == "phonemes"

    from models.ernerf.audio import FEATURE_DIMS

    assert FEATURE_DIMS["phonemes"] == PHONE_DIM
