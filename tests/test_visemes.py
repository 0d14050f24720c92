"""The phonetic mouth (models/audio/alignment.py, models/audio/visemes.py): known words give the
mouth shapes a person makes (a /p/ closes, an /aa/ opens, an /uw/ rounds), neighbouring phones
blend, and loudness only scales the opening."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from models.audio.alignment import AlignmentFailed, Phone, PhoneTimeline, align_phones, speech_phones
from models.audio.visemes import VisemeConfig, bilabial_frames, viseme_tracks

FPS = 25


def timeline(*spec: tuple[str, float]) -> PhoneTimeline:
    """Phones with durations (s), back to back from 0."""
    t, out = 0.0, []
    for phone, dur in spec:
        out.append(Phone(phone, t, t + dur))
        t += dur
    return PhoneTimeline(tuple(out), t, "aligned")


def at(tracks: dict, channel: str, seconds: float) -> float:
    return float(tracks[channel][int(seconds * FPS)])


def test_bilabial_closes_between_open_vowels():
    tl = timeline(("SIL", 0.2), ("AA", 0.2), ("P", 0.08), ("AA", 0.2), ("SIL", 0.2))
    v = viseme_tracks(tl, int(tl.duration * FPS), FPS)
    p = tl.phones[2]
    assert at(v, "opening", 0.3) > 0.8  # inside the first /aa/
    assert at(v, "opening", p.middle) < 0.1 and at(v, "closure", p.middle) > 0.8
    assert bilabial_frames(tl, int(tl.duration * FPS), FPS) == [int(p.middle * FPS)]


def test_rounded_and_spread_vowels():
    tl = timeline(("SIL", 0.2), ("UW", 0.25), ("SIL", 0.2), ("IY", 0.25), ("SIL", 0.2))
    v = viseme_tracks(tl, int(tl.duration * FPS), FPS)
    uw, iy = tl.phones[1].middle, tl.phones[3].middle
    assert at(v, "width", uw) < -0.7 and at(v, "rounding", uw) > 0.7
    assert at(v, "width", iy) > 0.6 and at(v, "rounding", iy) < 0.2


def test_rounding_is_anticipated_and_h_takes_its_neighbours_shape():
    # "two": the lips round already during the /t/; an /h/ between /aa/s stays open
    tl = timeline(("SIL", 0.2), ("T", 0.08), ("UW", 0.25), ("SIL", 0.2))
    v = viseme_tracks(tl, int(tl.duration * FPS), FPS)
    assert at(v, "rounding", tl.phones[1].middle) > 0.5
    tl = timeline(("AA", 0.2), ("HH", 0.08), ("AA", 0.2))
    v = viseme_tracks(tl, int(tl.duration * FPS), FPS)
    assert at(v, "opening", tl.phones[1].middle) > 0.7


def test_loudness_scales_the_opening_but_never_opens_a_closure():
    tl = timeline(("AA", 0.2), ("M", 0.1), ("AA", 0.2))
    n = int(tl.duration * FPS)
    loud = viseme_tracks(tl, n, FPS, loudness=np.ones(n))
    quiet = viseme_tracks(tl, n, FPS, loudness=np.full(n, 0.2))
    k = int(0.1 * FPS)
    assert loud["opening"][k] > quiet["opening"][k] > 0.5 * loud["opening"][k]
    m = int(tl.phones[1].middle * FPS)
    assert loud["opening"][m] < 0.1 and quiet["opening"][m] <= loud["opening"][m]
    assert np.array_equal(viseme_tracks(tl, n, FPS, loudness=np.full(n, 0.2), config=VisemeConfig(loudness_weight=0))
                          ["opening"], viseme_tracks(tl, n, FPS)["opening"])


needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@needs_espeak
def test_forced_alignment_of_known_words():
    from models.audio.tts import synthesize

    text = "Papa will move to the moon."
    samples, rate = synthesize(text, engine="espeak")
    tl = align_phones(samples, rate, text)
    spoken = [p.phone for p in tl.spoken()]
    assert tl.source == "aligned"
    assert spoken[:4] == ["P", "AA", "P", "AH"] and "UW" in spoken and spoken.count("M") == 2
    assert all(a.end <= b.start + 1e-9 for a, b in zip(tl.phones, tl.phones[1:]))
    assert tl.phones[0].start == 0.0 and tl.phones[-1].end == pytest.approx(len(samples) / rate, abs=0.02)
    v = viseme_tracks(tl, int(np.ceil(tl.duration * FPS)), FPS)
    first_p, first_aa = tl.spoken()[0], tl.spoken()[1]
    assert at(v, "closure", first_p.middle) > 0.7 and at(v, "opening", first_aa.middle) > 0.4
    uw = max(at(v, "rounding", p.middle) for p in tl.spoken() if p.phone == "UW")
    assert uw > 0.4 and uw > 3 * at(v, "rounding", first_aa.middle)
    assert PhoneTimeline.from_json(tl.to_json()) == PhoneTimeline(
        tuple(Phone(p.phone, round(p.start, 4), round(p.end, 4)) for p in tl.phones), tl.duration, "aligned")


@needs_espeak
def test_unknown_words_fall_back_to_recognition():
    from models.audio.tts import synthesize

    samples, rate = synthesize("Please open the window.", engine="espeak")
    with pytest.raises(AlignmentFailed, match="zxqvw"):
        align_phones(samples, rate, "Please zxqvw the window.")
    tl = speech_phones(samples, rate, "Please zxqvw the window.")
    assert tl.source == "recognised" and len(tl.spoken()) >= 8


@needs_espeak
def test_visemes_kind_follows_the_recognised_phones():
    """The `visemes` audio features: the four channels of the recognised phones, windowed like
    every kind; the lips close on the /m/ of "mama" and open on its vowels."""
    from models.audio import features as af
    from models.audio.alignment import recognise_phones
    from models.audio.tts import synthesize

    samples, rate = synthesize("Mama, mama, mama.", engine="espeak")
    x = af.to_mono_16k(samples, rate)
    rows = af.viseme_rows(x, af.AudioFeatureConfig(kind="visemes"), None, "cpu")
    assert rows.shape == (1 + x.size // 320, 4) and np.isfinite(rows).all()
    tl = recognise_phones(x, 16_000)
    nasal = [p for p in tl.spoken() if p.phone in ("M", "B", "P")]
    vowel = [p for p in tl.spoken() if p.phone in ("AA", "AH", "AE")]
    assert len(nasal) >= 3 and len(vowel) >= 3, tl.spoken()
    row = lambda t: rows[int(round(t * 50))]  # noqa: E731 - row k at k/50 s
    assert np.mean([row(p.middle)[3] for p in nasal]) > 0.6  # closure
    assert np.mean([row(p.middle)[0] for p in vowel]) > 0.4  # opening
    n = int(np.ceil(x.size / 16_000 * FPS))
    feats, info = af.extract_features(samples, rate, n, kind="visemes")
    assert feats.shape == (n, 16, 4) and info.kind == "visemes" and info.dim == 4


@needs_espeak
def test_visemes_kind_aligns_to_the_words_when_given():
    """Given the words, the `visemes` features close the lips on the /p b m/ that pocketsphinx's
    recognition misses in an unfamiliar voice; kinds that do not read words never get them (their
    cache keys stay the same)."""
    from models.audio import features as af
    from models.audio.tts import synthesize
    from models.eval.lipsync import SCORING_SENTENCE
    from talkflow.contract import words_read

    samples, rate = synthesize(SCORING_SENTENCE, engine="espeak")
    x = af.to_mono_16k(samples, rate)
    cfg = af.AudioFeatureConfig(kind="visemes")
    aligned = af.viseme_rows(x, cfg, None, "cpu", text=SCORING_SENTENCE)
    recognised = af.viseme_rows(x, cfg, None, "cpu")
    bilabial = [p.middle for p in align_phones(x, 16_000, SCORING_SENTENCE).spoken() if p.phone in ("P", "B", "M")]
    closed = lambda rows: sum(rows[int(round(t * 50)), 3] > 0.5 for t in bilabial)  # noqa: E731
    assert len(bilabial) == 13 and closed(aligned) >= 12 and closed(recognised) < closed(aligned)
    n = int(np.ceil(x.size / 16_000 * FPS))
    with_words, _ = af.extract_features(samples, rate, n, kind="visemes", text=SCORING_SENTENCE)
    assert not np.allclose(with_words, af.extract_features(samples, rate, n, kind="visemes")[0])
    logmel = af.AudioFeatureConfig()
    assert np.array_equal(af.extract_features(samples, rate, n, config=logmel, text=SCORING_SENTENCE)[0],
                          af.extract_features(samples, rate, n, config=logmel)[0])
    assert words_read("visemes", f"  {SCORING_SENTENCE} ") == SCORING_SENTENCE
    assert words_read("logmel", SCORING_SENTENCE) is None and words_read("visemes", "   ") is None
