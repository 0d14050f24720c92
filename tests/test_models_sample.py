"""Fast checks of the model-side modules on the bundled voice and the astronaut sample photo."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from models.audio.tts import available_engines, synthesize
from models.face.landmarks import detect_faces, landmarks68, largest_face_landmarks
from models.synth.talking_photo import animate_portrait, sample_portrait, speech_envelope
from talkflow.errors import FaceNotFound, SpeechError

ENV = np.array([0.0, 0.0, 1.0, 1.0, 0.5, 0.0], np.float32)  # (T,) closed, open, half, closed
CLOSED, OPEN = 1, 2


@pytest.fixture(scope="module")
def portrait() -> tuple[np.ndarray, np.ndarray]:
    img = sample_portrait()  # (512,512,3)
    return img, largest_face_landmarks(img)


@pytest.fixture(scope="module")
def clip(portrait) -> np.ndarray:
    img, lm = portrait
    return animate_portrait(img, lm, ENV, seed=0)  # (T,512,512,3)


def test_synthesize_hello_is_deterministic():
    if not available_engines():
        pytest.skip("no TTS engine installed")
    audio, sr = synthesize("Hello world.")
    assert sr == 22050
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.shape[0] / sr > 0.5
    assert np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0.1
    again, sr2 = synthesize("Hello world.")
    assert sr2 == sr and np.array_equal(audio, again)


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_text_raises(text):
    with pytest.raises(SpeechError, match="empty"):
        synthesize(text)


def test_detects_the_one_astronaut_face():
    img = data.astronaut()
    boxes = detect_faces(img)
    assert len(boxes) == 1
    b = boxes[0]
    lm = landmarks68(img, b)
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    mx, my = 0.15 * b.width, 0.15 * b.height  # the jaw line may poke slightly out of dlib's box
    assert (lm[:, 0] >= b.left - mx).all() and (lm[:, 0] <= b.right + mx).all()
    assert (lm[:, 1] >= b.top - my).all() and (lm[:, 1] <= b.bottom + my).all()
    inner = lm[17:]  # brows, eyes, nose, mouth: strictly inside
    assert (inner[:, 0] >= b.left).all() and (inner[:, 0] <= b.right).all()
    assert (inner[:, 1] >= b.top).all() and (inner[:, 1] <= b.bottom).all()


def test_grey_image_has_no_face():
    with pytest.raises(FaceNotFound, match="no face found"):
        largest_face_landmarks(np.full((240, 320, 3), 128, np.uint8))


def test_envelope_silence_then_tone():
    sr = 16000
    t = np.arange(sr) / sr
    samples = np.concatenate([np.zeros(sr), 0.5 * np.sin(2 * np.pi * 220 * t)]).astype(np.float32)
    env = speech_envelope(samples, sr, fps=25)
    assert env.shape == (50,)
    assert env.min() >= 0.0 and env.max() <= 1.0
    assert env[:20].max() < 0.1
    assert env[30:].min() > 0.9


def _mouth_box(lm: np.ndarray) -> tuple[slice, slice]:
    x0, y0 = np.floor(lm[48:68].min(axis=0)).astype(int)
    x1, y1 = np.ceil(lm[48:68].max(axis=0)).astype(int)
    return slice(y0, y1 + 1), slice(x0, x1 + 1)


def test_animate_shape_and_determinism(portrait, clip):
    img, lm = portrait
    assert clip.shape == (len(ENV), *img.shape) and clip.dtype == np.uint8
    assert np.array_equal(clip, animate_portrait(img, lm, ENV, seed=0))
    assert not np.array_equal(clip, animate_portrait(img, lm, ENV, seed=1))


def test_open_mouth_is_darker_and_wider(portrait, clip):
    _, lm = portrait
    rows, cols = _mouth_box(lm)
    darkness = 255.0 - clip[:, rows, cols].astype(np.float32).mean(axis=(1, 2, 3))  # (T,)
    assert darkness[OPEN] > darkness[CLOSED] + 15.0
    gaps = []
    for k in (CLOSED, OPEN):
        redetected = largest_face_landmarks(clip[k])
        gaps.append(float(np.hypot(*(redetected[66] - redetected[62]))))
    assert gaps[1] > gaps[0] + 8.0
