"""Lip-sync metrics (models/eval/lipsync.py) on constructed cases: a mouth that follows the audio
scores high, a frozen one near 0, a shifted one reports its offset; LMD and RMS on known values;
and on real frames: the sample talking photo's dlib mouth opening follows its driving envelope."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.eval import lipsync as ls
from talkflow.errors import InputError

RATE, FPS, FRAMES = 16_000, 25, 250  # 10 s


def _speech(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise amplitude-modulated by a random smooth syllable envelope: (samples, envelope per frame)."""
    rng = np.random.default_rng(seed)
    env = np.convolve(rng.uniform(0, 1, FRAMES) ** 2, np.ones(3) / 3, mode="same")  # (T,)
    gain = np.repeat(env, RATE // FPS)
    return (gain * rng.normal(0, 0.3, gain.size)).astype(np.float32), env


def _face(openings: np.ndarray) -> np.ndarray:
    """(T, 68, 2) landmarks: a fixed face whose inner lips part by opening x mouth width (60 px)."""
    rng = np.random.default_rng(1)
    base = rng.uniform(150, 350, (68, 2))
    base[48], base[54] = (220, 330), (280, 330)  # mouth corners
    base[62] = (250, 325)
    lms = np.repeat(base[None], len(openings), 0)
    lms[:, 66] = base[62] + np.stack([np.zeros_like(openings), 60 * openings], -1)
    return lms


def test_mouth_opening_is_gap_over_width():
    lms = _face(np.array([0.0, 0.1, 0.25]))
    np.testing.assert_allclose(ls.mouth_opening(lms), [0.0, 0.1, 0.25], atol=1e-12)
    with pytest.raises(InputError, match="68, 2"):
        ls.mouth_opening(np.zeros((3, 20, 2)))


def test_speech_rms_per_40ms_frame():
    t = np.arange(RATE) / RATE  # 1 s
    x = 0.5 * np.sin(2 * np.pi * 200 * t)
    x[RATE // 2:] = 0
    rms = ls.speech_rms(x, RATE, FPS)
    assert rms.shape == (25,)
    np.testing.assert_allclose(rms[:12], 0.5 / math.sqrt(2), rtol=1e-3)
    assert np.all(rms[13:] == 0)
    assert ls.speech_rms(x, RATE, FPS, n_frames=30).shape == (30,)


def test_following_mouth_scores_high_and_frozen_mouth_scores_zero():
    samples, env = _speech()
    rms = ls.speech_rms(samples, RATE, FPS)
    assert rms.shape == (FRAMES,)
    following = ls.mouth_opening(_face(0.3 * env))
    assert ls.pearson(following, rms) > 0.95
    frozen = ls.mouth_opening(_face(np.full(FRAMES, 0.1)))
    assert ls.pearson(frozen, rms) == 0.0  # constant series: 0, not NaN
    assert ls.best_offset(frozen, rms, 5) == (0, 0.0)
    jitter = ls.mouth_opening(_face(0.1 + 0.002 * np.random.default_rng(3).normal(size=FRAMES)))
    assert abs(ls.pearson(jitter, rms)) < 0.2  # a mouth that only trembles follows nothing


@pytest.mark.parametrize("lag", [3, -2, 0])
def test_shifted_mouth_reports_its_offset(lag):
    samples, env = _speech(seed=5)
    rms = ls.speech_rms(samples, RATE, FPS)
    mouth = ls.mouth_opening(_face(0.3 * np.roll(env, lag)))  # lag > 0: the mouth moves after the sound
    offset, r = ls.best_offset(mouth, rms, max_offset=5)
    assert offset == lag and r > 0.95
    if lag:
        assert ls.pearson(mouth, rms) < r - 0.3  # unshifted, the same mouth scores much lower


def test_pearson_and_offset_errors():
    with pytest.raises(InputError, match="different lengths"):
        ls.pearson(np.zeros(3), np.zeros(4))
    with pytest.raises(InputError, match="max_offset"):
        ls.best_offset(np.zeros(3), np.zeros(3), -1)
    assert ls.pearson([1.0], [2.0]) == 0.0
    assert ls.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


def test_lmd_centres_each_mouth_and_reports_pixels_at_512():
    gt = _face(np.array([0.1, 0.2]))
    assert ls.lmd_at(gt, gt, 512) == 0.0
    assert ls.lmd_at(gt + 7.0, gt, 512) == pytest.approx(0.0, abs=1e-9)  # a moved face: no mouth error
    pred = gt.copy()
    pred[:, 48:68] += np.array([[0.0, 1.0]]) * (np.arange(20) % 2 == 0)[:, None] * 2.0 - np.array([0.0, 1.0])
    # every mouth point 1 px off vertically, the mean unchanged: LMD 1 px at 512, 2 px for a 256 px frame
    assert ls.lmd_at(pred, gt, 512) == pytest.approx(1.0, abs=1e-9)
    assert ls.lmd_at(pred, gt, 256) == pytest.approx(2.0, abs=1e-9)


def test_image_scores_identity_and_noise():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    same = ls.image_scores(gt, gt)
    assert same["psnr"] > 100 and same["ssim"] == pytest.approx(1.0, abs=1e-6)
    noisy = np.clip(gt.astype(int) + rng.integers(-8, 9, gt.shape), 0, 255).astype(np.uint8)
    s = ls.image_scores(noisy, gt)
    assert 30 < s["psnr"] < 40 and s["ssim"] < 1.0
    with pytest.raises(InputError):
        ls.image_scores(gt, gt[:1])


def test_dlib_mouth_opening_follows_the_talking_photo():
    """Real frames: the sample portrait animated by an envelope at 128 px (upscaled for dlib)."""
    from models.synth.talking_photo import animate_portrait, sample_portrait

    size = 128
    env = np.clip(np.sin(np.linspace(0, 3 * np.pi, 16)), 0, 1)  # three syllables
    portrait = sample_portrait(size)
    base = ls.face_landmarks(portrait)
    assert base.shape == (68, 2) and base.max() < size
    frames = animate_portrait(portrait, base, env, head_motion_px=0.5, head_rotation_deg=0.5)
    opening = ls.mouth_opening(np.stack([ls.face_landmarks(f) for f in frames]))
    assert ls.pearson(opening, env) > 0.8
    assert ls.best_offset(opening, env, 3)[0] == 0


# ----------------------------------------------------------------- the phonetic measure
def _mouths(gap: np.ndarray, width: np.ndarray) -> list[np.ndarray]:
    """Landmarks (68, 2) per frame of a face whose eye corners are 100 px apart, whose inner lips
    part by gap x 100 px and whose mouth is (1 + 0.15 width) x 50 px wide."""
    from models.face3d.morphable import landmarks_2d

    base = landmarks_2d() * np.array([100 / 90, -100 / 90]) + 256  # eye corners 36, 45 at x -45, 45 mm
    out = []
    for g, w in zip(gap, width):
        lm = base.copy()
        centre = 0.5 * (lm[48] + lm[54])
        lm[48:68, 0] = centre[0] + (lm[48:68, 0] - centre[0]) * (50 * (1 + 0.15 * w)) / (lm[54, 0] - lm[48, 0])
        lm[[61, 62, 63], 1] = centre[1] - 50 * g
        lm[[65, 66, 67], 1] = centre[1] + 50 * g
        out.append(lm)
    return out


@pytest.fixture(scope="module")
def sentence():
    """The scoring sentence in espeak-ng's voice, its forced alignment and its loudness per frame."""
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    from models.audio.alignment import align_phones
    from models.audio.tts import synthesize
    from models.synth.talking_photo import speech_envelope

    samples, rate = synthesize(ls.SCORING_SENTENCE, engine="espeak")
    return align_phones(samples, rate, ls.SCORING_SENTENCE), speech_envelope(samples, rate, FPS)


def test_phonetic_measure_ranks_phones_over_loudness_over_a_frozen_mouth(sentence):
    from models.audio.visemes import viseme_tracks

    timeline, env = sentence
    n = len(env)
    v = viseme_tracks(timeline, n, FPS, loudness=env)  # what a phonetic driver draws (loudness as intensity)
    phonetic = ls.phonetic_sync(_mouths(0.35 * v["opening"], v["width"]), timeline, FPS)
    loudness = ls.phonetic_sync(_mouths(0.35 * env, np.zeros(n)), timeline, FPS)  # lips meet in silence
    frozen = ls.phonetic_sync(_mouths(np.full(n, 0.05), np.zeros(n)), timeline, FPS)
    assert phonetic["bilabials"] == 13 and phonetic["frames_without_face"] == 0
    assert phonetic["opening_corr"] > 0.9 and phonetic["width_corr"] > 0.9
    assert phonetic["bilabial_closure"] >= 0.9 and phonetic["offset"] == 0
    assert loudness["bilabial_closure"] <= 0.4 and loudness["width_corr"] == 0.0
    assert loudness["opening_corr"] < phonetic["opening_corr"] - 0.1
    assert frozen["opening_corr"] == 0.0 and frozen["bilabial_closure"] == 0.0


def test_phonetic_measure_counts_frames_without_a_face_and_keeps_time(sentence):
    from models.audio.visemes import bilabial_frames, viseme_tracks

    timeline, env = sentence
    n = len(env)
    v = viseme_tracks(timeline, n, FPS)
    lms = _mouths(0.35 * v["opening"], v["width"])
    late = ls.phonetic_sync([lms[0]] * 2 + lms[:-2], timeline, FPS)  # the mouth 2 frames after the sound
    assert late["offset"] == 2 and late["offset_corr"] > 0.95 > late["opening_corr"]
    gone = bilabial_frames(timeline, n, FPS)[:3]
    for k in gone:
        lms[k] = None
    gapped = ls.phonetic_sync(lms, timeline, FPS)
    assert gapped["frames_without_face"] == 3 and gapped["offset"] == 0
    assert gapped["bilabial_closure"] == pytest.approx(10 / 13, abs=1e-3)  # a missing face is not a closed mouth
    assert gapped["opening_corr"] > 0.99
