"""Lip-sync metrics on 68-point (iBUG) landmarks and speech: how much the mouth follows the audio.

* ``mouth_opening``: inner-lip gap over mouth width, |lm66 - lm62| / |lm54 - lm48|, per frame;
  scale-free, about 0 closed and 0.1-0.4 open.
* ``speech_rms``: RMS of the speech per video frame (the contract's ``frame_rms``).
* ``pearson``: correlation of two series; 0 when either is constant (a frozen mouth follows nothing).
* ``best_offset``: the shift (in frames) of the video against the audio that maximises the correlation;
  positive: the mouth moves ``offset`` frames AFTER the sound.
* ``lmd_at``: the mouth landmark distance (models.ernerf.losses.mouth_landmark_distance) in pixels
  of a ``reference`` px frame (512), whatever the frames' size.
* ``image_scores``: PSNR (dB) and SSIM of uint8 frames (models.ernerf.losses).
* ``face_landmarks``: dlib's 68 points of the largest face, small frames upscaled for the detector;
  ``landmarks_per_frame``: the same per frame, None where no face is found (a gap, never closed up).
* ``phonetic_sync``: the measure that loudness alone cannot pass. The rendered mouth (inner-lip
  opening and outer lip width, over the distance between the outer eye corners) against the viseme
  targets (``models.audio.visemes``, loudness ignored) of the speech's phone timeline (forced
  alignment when the text is known): correlation of opening and of width, the share of /p b m/
  phones whose middle frame shows closed lips, and the audio-video offset. A mouth that opens with
  loudness keeps the lips apart on voiced /m/ and barely changes width; a frozen mouth correlates
  with nothing.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from talkflow.contract import VIDEO_FPS, frame_rms
from talkflow.errors import FaceNotFound, InputError

REFERENCE_SIZE = 512  # LMD is reported in pixels of a frame this size
# The sentence new-voice lip sync is scored on: 13 /p b m/ between vowels, rounded and spread vowels.
SCORING_SENTENCE = ("Would you please bring me a warm cup of coffee before the bus comes? "
                    "Maybe some bread and butter too.")
_EPS = 1e-9


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """(..., 68, 2) landmarks -> (...) inner-lip opening / mouth width."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape[-2:] != (68, 2):
        raise InputError(f"expected (..., 68, 2) landmarks, got shape {lm.shape}")
    gap = np.linalg.norm(lm[..., 66, :] - lm[..., 62, :], axis=-1)
    width = np.linalg.norm(lm[..., 54, :] - lm[..., 48, :], axis=-1)
    return gap / np.maximum(width, _EPS)


def speech_rms(samples: np.ndarray, sample_rate: int, fps: float = VIDEO_FPS,
               n_frames: int | None = None) -> np.ndarray:
    """RMS per video frame (T,) float64 of mono samples (N,): `talkflow.contract.frame_rms` (frame t
    covers [t/fps, (t+1)/fps); T defaults to the contract's frame count; frames past the end get 0)."""
    if sample_rate <= 0 or fps <= 0:
        raise InputError(f"bad rates: sample_rate={sample_rate}, fps={fps}")
    try:
        return frame_rms(samples, sample_rate, fps, n_frames)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equal-length series; 0.0 (not NaN) when either is constant."""
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise InputError(f"series of different lengths: {x.size} and {y.size}")
    if x.size < 2:
        return 0.0
    x, y = x - x.mean(), y - y.mean()
    sx, sy = math.sqrt(float(x @ x)), math.sqrt(float(y @ y))
    if sx <= _EPS * max(1.0, x.size) or sy <= _EPS * max(1.0, y.size):
        return 0.0
    return float(np.clip((x @ y) / (sx * sy), -1.0, 1.0))


def shifted_pearson(video: np.ndarray, audio: np.ndarray, offset: int) -> float:
    """Correlation of video[t] with audio[t - offset] over the frames where both exist."""
    v, a = np.asarray(video, dtype=np.float64), np.asarray(audio, dtype=np.float64)
    n = min(v.size, a.size)
    v, a = v[:n], a[:n]
    if offset >= 0:
        return pearson(v[offset:], a[: n - offset])
    return pearson(v[: n + offset], a[-offset:])


def best_offset(video: np.ndarray, audio: np.ndarray, max_offset: int = 5) -> tuple[int, float]:
    """(offset, correlation) maximising ``shifted_pearson`` over -max_offset..max_offset frames;
    ties go to the smallest |offset|. Positive offset: the video lags the audio."""
    if max_offset < 0:
        raise InputError(f"max_offset must be >= 0, got {max_offset}")
    n = min(np.size(video), np.size(audio))
    best = (0, shifted_pearson(video, audio, 0))
    for d in range(1, min(max_offset, max(n - 2, 0)) + 1):
        for off in (d, -d):
            r = shifted_pearson(video, audio, off)
            if r > best[1] + 1e-12:
                best = (off, r)
    return best


def lmd_at(pred: np.ndarray, target: np.ndarray, size: int, reference: int = REFERENCE_SIZE) -> float:
    """Mouth landmark distance of (F, 68, 2) landmark sets found on ``size`` px frames, in pixels of a
    ``reference`` px frame (each mouth centred first, as the reference LMDMeter)."""
    import torch

    from models.ernerf.losses import mouth_landmark_distance

    if size <= 0:
        raise InputError(f"bad frame size {size}")
    d = mouth_landmark_distance(torch.as_tensor(np.asarray(pred, np.float64)),
                                torch.as_tensor(np.asarray(target, np.float64)))
    return float(d) * reference / size


def image_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of (F, H, W, 3) uint8 frames against their ground truth."""
    import torch

    from models.ernerf.losses import psnr, ssim

    p, t = np.asarray(pred), np.asarray(target)
    if p.shape != t.shape or p.ndim != 4 or p.shape[-1] != 3:
        raise InputError(f"expected two (F, H, W, 3) frame stacks of one shape, got {p.shape} and {t.shape}")
    pt = torch.from_numpy(p).permute(0, 3, 1, 2).float() / 255
    tt = torch.from_numpy(t).permute(0, 3, 1, 2).float() / 255
    return {"psnr": float(np.mean([float(psnr(a, b)) for a, b in zip(pt, tt)])),
            "ssim": float(ssim(pt, tt).mean())}


def face_landmarks(image: np.ndarray, detect_size: int = REFERENCE_SIZE) -> np.ndarray:
    """68 (x, y) points (68, 2) float32 of the largest face in an RGB uint8 image, in its pixels.

    dlib's HOG detector needs faces of about 80 px: an image smaller than ``detect_size`` is
    upscaled (bicubic) to it first and the points scaled back. Raises FaceNotFound."""
    from PIL import Image

    from models.face.landmarks import largest_face_landmarks

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 image, got shape {img.shape} dtype {img.dtype}")
    h, w = img.shape[:2]
    scale = max(1.0, detect_size / max(h, w))
    if scale > 1.0:
        big = Image.fromarray(img).resize((round(w * scale), round(h * scale)), Image.BICUBIC)
        return (largest_face_landmarks(np.asarray(big)) / scale).astype(np.float32)
    return largest_face_landmarks(img)


def landmarks_per_frame(frames) -> list[np.ndarray | None]:
    """dlib's 68 points (68, 2) of every frame, None where no face is found."""
    out: list[np.ndarray | None] = []
    for f in frames:
        try:
            out.append(face_landmarks(np.asarray(f)))
        except FaceNotFound:
            out.append(None)
    return out


class PhoneticSyncConfig(BaseModel):
    """How the rendered mouth is scored against the phones of the speech."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    closed_gap: float = Field(0.04, gt=0, description="Lips count as closed when the inner-lip gap "
                              "(|lm66 - lm62|) is at most this share of the outer-eye-corner distance.")
    max_offset: int = Field(3, ge=0, description="Audio-video offsets searched, frames (positive: the mouth "
                            "moves after the sound).")


def mouth_shape(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 68, 2) -> inner-lip opening (...) and outer lip width (...), each over the distance
    between the outer eye corners (36, 45): a scale that the mouth's own shape does not change."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape[-2:] != (68, 2):
        raise InputError(f"expected (..., 68, 2) landmarks, got shape {lm.shape}")
    eyes = np.maximum(np.linalg.norm(lm[..., 45, :] - lm[..., 36, :], axis=-1), _EPS)
    gap = np.linalg.norm(lm[..., 66, :] - lm[..., 62, :], axis=-1)
    width = np.linalg.norm(lm[..., 54, :] - lm[..., 48, :], axis=-1)
    return gap / eyes, width / eyes


def _gapped_pearson(video: np.ndarray, target: np.ndarray, offset: int = 0) -> float:
    """Correlation of video[t] (NaN: no face) with target[t - offset] over frames where both exist."""
    n = min(video.size, target.size)
    v, a = video[:n], target[:n]
    if offset >= 0:
        v, a = v[offset:], a[: n - offset]
    else:
        v, a = v[: n + offset], a[-offset:]
    ok = np.isfinite(v) & np.isfinite(a)
    return pearson(v[ok], a[ok])


def phonetic_sync(landmarks: list[np.ndarray | None], timeline, fps: float = VIDEO_FPS,
                  config: PhoneticSyncConfig = PhoneticSyncConfig()) -> dict:
    """Score a rendered mouth, landmarks per frame (None: no face), against the viseme targets of
    ``timeline`` (a ``models.audio.alignment.PhoneTimeline`` of the frames' speech)."""
    from models.audio.visemes import VisemeConfig, bilabial_frames, viseme_tracks

    n = len(landmarks)
    found = np.array([lm is not None for lm in landmarks], bool)
    opening = np.full(n, np.nan)
    width = np.full(n, np.nan)
    if found.any():
        o, w = mouth_shape(np.stack([lm for lm in landmarks if lm is not None]))
        opening[found], width[found] = o, w
    target = viseme_tracks(timeline, n, fps, config=VisemeConfig(loudness_weight=0.0))
    offsets = [0] + [s * d for d in range(1, config.max_offset + 1) for s in (1, -1)]
    corr = {off: _gapped_pearson(opening, target["opening"], off) for off in offsets}
    best = max(offsets, key=lambda off: (round(corr[off], 9), -abs(off)))
    bilabial = bilabial_frames(timeline, n, fps)
    closed = [bool(found[k] and opening[k] <= config.closed_gap) for k in bilabial]
    return {
        "frames": n, "frames_without_face": int((~found).sum()), "phones_source": timeline.source,
        "opening_corr": round(corr[0], 4), "width_corr": round(_gapped_pearson(width, target["width"]), 4),
        "bilabials": len(bilabial), "bilabial_closure": round(float(np.mean(closed)), 4) if closed else 0.0,
        "offset": best, "offset_corr": round(corr[best], 4),
        "opening_std": round(float(np.nanstd(opening)), 4) if found.any() else 0.0,
    }


def lip_sync_report(frames, samples: np.ndarray, sample_rate: int, text: str | None = None, fps: float = VIDEO_FPS,
                    config: PhoneticSyncConfig = PhoneticSyncConfig()) -> dict:
    """`phonetic_sync` of rendered frames (T, H, W, 3) uint8 against their speech (phones aligned to
    `text` when given, else recognised), plus the old loudness figure (``loudness_corr``: opening
    against the RMS per frame), kept as a secondary number."""
    from models.audio.alignment import speech_phones

    lms = landmarks_per_frame(frames)
    report = phonetic_sync(lms, speech_phones(samples, sample_rate, text), fps, config)
    opening = np.array([mouth_shape(lm)[0] if lm is not None else np.nan for lm in lms], np.float64)
    rms = speech_rms(samples, sample_rate, fps, n_frames=len(lms))
    return report | {"loudness_corr": round(_gapped_pearson(opening, rms), 4)}


__all__ = ["REFERENCE_SIZE", "SCORING_SENTENCE", "PhoneticSyncConfig", "best_offset", "face_landmarks",
           "image_scores", "landmarks_per_frame", "lip_sync_report", "lmd_at", "mouth_opening", "mouth_shape",
           "pearson", "phonetic_sync", "shifted_pearson", "speech_rms"]
