"""Phones -> mouth shapes per video frame: the viseme model every mouth in the project follows.

Each phone has a target mouth (``VISEMES``) in four channels:

* ``opening``: jaw and lip opening, 0 closed .. 1 wide open (/aa/);
* ``width``: lip width, -1 fully rounded (/uw/, /w/) .. +1 fully spread (/iy/);
* ``rounding``: lip protrusion, 0 .. 1 (/uw/, /ow/, /w/, /sh/);
* ``closure``: the lips pressed together, 1 on /p b m/, else 0.

Coarticulation by dominance functions (after Cohen and Massaro's model): phone i pulls channel c
towards its target with a weight ``alpha[i, c] * exp(-(d / tau_c)^2)``, d the time outside the
phone (``max(|t - centre_i| - duration_i / 2, 0)``): full inside the phone, falling off outside
it; the value at time t is the weighted mean of all targets. Lips that must close (/p b m/) or
touch the teeth (/f v/) dominate strongly, so they close between loud vowels; /h/ barely dominates
and takes its neighbours' shape; rounding reaches further (``tau_rounding_s``), as lips round
before the /uw/ of "to". A long silence closes the mouth.

Loudness is only an intensity: ``opening *= 1 - loudness_weight * (1 - loudness)`` with the
speech envelope (0..1), so a shout opens wider than a whisper of the same words; it never opens a
closed phone. The lip-sync measure computes its targets with ``loudness_weight = 0``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.audio.alignment import PhoneTimeline
from talkflow.errors import InputError

CHANNELS = ("opening", "width", "rounding", "closure")


class Viseme(NamedTuple):
    """A phone's target mouth and how strongly it holds each channel against its neighbours."""

    opening: float
    width: float
    rounding: float
    closure: float
    strength: float  # dominance of opening, width and closure
    round_strength: float  # dominance of rounding


def _v(opening: float, width: float, rounding: float = 0.0, closure: float = 0.0, strength: float = 1.0,
       round_strength: float | None = None) -> Viseme:
    return Viseme(opening, width, rounding, closure, strength, strength if round_strength is None else round_strength)


# Targets by articulation: open vowels drop the jaw, front vowels spread, back rounded vowels round;
# bilabials close with the highest dominance; labiodentals nearly close (the lower lip on the teeth);
# alveolars and velars leave the lips to the vowels (low dominance).
VISEMES: dict[str, Viseme] = {
    "AA": _v(1.00, 0.10), "AE": _v(0.85, 0.45), "AH": _v(0.70, 0.10), "AO": _v(0.80, -0.40, 0.45),
    "AW": _v(0.85, -0.20, 0.35), "AY": _v(0.85, 0.25), "EH": _v(0.60, 0.40), "ER": _v(0.35, -0.30, 0.40),
    "EY": _v(0.50, 0.50), "IH": _v(0.40, 0.50), "IY": _v(0.25, 0.80), "OW": _v(0.55, -0.70, 0.75),
    "OY": _v(0.60, -0.50, 0.60), "UH": _v(0.40, -0.50, 0.55), "UW": _v(0.25, -0.90, 0.95),
    "B": _v(0.0, 0.0, 0.0, 1.0, 6.0, 0.3), "M": _v(0.0, 0.0, 0.0, 1.0, 6.0, 0.3),
    "P": _v(0.0, 0.0, 0.0, 1.0, 6.0, 0.3), "F": _v(0.10, 0.10, 0.0, 0.0, 4.0, 0.3),
    "V": _v(0.10, 0.10, 0.0, 0.0, 4.0, 0.3), "W": _v(0.20, -0.90, 0.90, 0.0, 2.5),
    "CH": _v(0.20, -0.40, 0.60, 0.0, 1.5), "JH": _v(0.20, -0.40, 0.60, 0.0, 1.5),
    "SH": _v(0.20, -0.40, 0.60, 0.0, 1.5), "ZH": _v(0.20, -0.40, 0.60, 0.0, 1.5),
    "S": _v(0.15, 0.40, 0.0, 0.0, 1.2, 0.3), "Z": _v(0.15, 0.40, 0.0, 0.0, 1.2, 0.3),
    "TH": _v(0.20, 0.20, 0.0, 0.0, 1.0, 0.3), "DH": _v(0.20, 0.20, 0.0, 0.0, 1.0, 0.3),
    "T": _v(0.25, 0.20, 0.0, 0.0, 0.7, 0.2), "D": _v(0.25, 0.20, 0.0, 0.0, 0.7, 0.2),
    "N": _v(0.25, 0.20, 0.0, 0.0, 0.7, 0.2), "L": _v(0.30, 0.10, 0.0, 0.0, 0.6, 0.2),
    "R": _v(0.30, -0.40, 0.45, 0.0, 0.8), "Y": _v(0.25, 0.50, 0.0, 0.0, 0.8, 0.3),
    "K": _v(0.35, 0.10, 0.0, 0.0, 0.4, 0.2), "G": _v(0.35, 0.10, 0.0, 0.0, 0.4, 0.2),
    "NG": _v(0.30, 0.10, 0.0, 0.0, 0.4, 0.2), "HH": _v(0.40, 0.10, 0.0, 0.0, 0.15, 0.1),
    "SIL": _v(0.0, 0.0, 0.0, 0.0, 1.0, 0.5),
}
BILABIALS = frozenset({"P", "B", "M"})


class VisemeConfig(BaseModel):
    """How phones become mouth shapes (see the module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tau_s: float = Field(0.03, gt=0, description="Decay of a phone's dominance outside its own time, seconds "
                         "(opening, width, closure): how far a phone reaches into its neighbours.")
    tau_rounding_s: float = Field(0.08, gt=0, description="Decay of the rounding dominance, seconds: lips "
                                  "round ahead of a rounded vowel and stay rounded after it.")
    loudness_weight: float = Field(0.3, ge=0, le=1, description="How much quiet speech narrows the opening: "
                                   "opening x (1 - w (1 - loudness)); 0 ignores loudness.")
    silence_hold_s: float = Field(0.12, ge=0, description="A silence longer than this closes the mouth fully; "
                                  "a shorter pause (between words) only weakly pulls it shut.")


def _dominance(t: np.ndarray, start: np.ndarray, end: np.ndarray, tau: float) -> np.ndarray:
    """(T,) times, (P,) phone bounds -> (T, P) exp(-(time outside the phone / tau)^2)."""
    outside = np.maximum(np.maximum(start[None] - t[:, None], t[:, None] - end[None]), 0.0)
    return np.exp(-np.square(outside / tau))


def viseme_tracks(timeline: PhoneTimeline, n_frames: int, fps: float, loudness: np.ndarray | None = None,
                  config: VisemeConfig = VisemeConfig()) -> dict[str, np.ndarray]:
    """Mouth targets per video frame: {channel: (T,) float32}, frame k sampled at its centre
    (k + 0.5) / fps. ``loudness`` (T,) in [0, 1] scales the opening (``loudness_weight``)."""
    if n_frames < 0 or fps <= 0:
        raise InputError(f"bad frame count or rate: {n_frames}, {fps}")
    out = {c: np.zeros(n_frames, np.float32) for c in CHANNELS}
    phones = timeline.phones
    if n_frames == 0 or not phones:
        return out
    t = (np.arange(n_frames) + 0.5) / fps  # (T,)
    start = np.array([p.start for p in phones])
    end = np.array([p.end for p in phones])
    vis = [VISEMES.get(p.phone, VISEMES["SIL"]) for p in phones]
    strength = np.array([v.strength for v in vis])  # (P,)
    # A short pause between words barely holds the mouth shut; a long one closes it.
    short_sil = np.array([p.phone == "SIL" and p.end - p.start < config.silence_hold_s for p in phones])
    strength = np.where(short_sil, 0.2, strength)
    targets = np.array([[v.opening, v.width, v.rounding, v.closure] for v in vis])  # (P, 4)
    d = _dominance(t, start, end, config.tau_s) * strength[None]  # (T, P)
    mixed = d @ targets / np.maximum(d.sum(1, keepdims=True), 1e-12)  # (T, 4)
    round_w = _dominance(t, start, end, config.tau_rounding_s) * np.array([v.round_strength for v in vis])[None]
    rounding = round_w @ targets[:, 2] / np.maximum(round_w.sum(1), 1e-12)
    opening = mixed[:, 0]
    if loudness is not None and config.loudness_weight > 0:
        env = np.clip(np.asarray(loudness, np.float64).reshape(-1), 0.0, 1.0)
        if env.shape[0] != n_frames:
            raise InputError(f"loudness has {env.shape[0]} frames, expected {n_frames}")
        opening = opening * (1.0 - config.loudness_weight * (1.0 - env))
    out.update(opening=opening, width=mixed[:, 1], rounding=rounding, closure=mixed[:, 3])
    return {c: np.clip(v, -1.0, 1.0).astype(np.float32) for c, v in out.items()}


def bilabial_frames(timeline: PhoneTimeline, n_frames: int, fps: float) -> list[int]:
    """The video frame holding the middle of each /p b m/ phone (frames past the end dropped)."""
    frames = [int(p.middle * fps) for p in timeline.phones if p.phone in BILABIALS]
    return [k for k in frames if 0 <= k < n_frames]


__all__ = ["BILABIALS", "CHANNELS", "VISEMES", "Viseme", "VisemeConfig", "bilabial_frames", "viseme_tracks"]
