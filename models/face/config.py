"""The face stages' configs: torch-, scipy- and dlib-free, so that a flow's parameters (and the forms
the Prefect UI draws from them) import without the models; each model module imports its config
from here (and keeps it importable under its old name)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic

from talkflow.errors import AssetMissing, InputError
from talkflow.forms import PLAIN_OPTIONALS


class BackgroundConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)

    max_frames: int = pydantic.Field(
        100, ge=1, description="Evenly spaced frames used to estimate the background plate (ER-NeRF: every 20th).")
    margin_px: int = pydantic.Field(
        5, ge=0, description="Person masks grown by this much before the plate is estimated, px.")
    rows_per_chunk: int = pydantic.Field(64, ge=1, description="Image rows processed at once (bounds memory).")


class TorsoConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)

    neck_extend_px: int = pydantic.Field(48, ge=0, description="Neck colour extended upwards under the head, px.")
    neck_push_down_px: int = pydantic.Field(
        4, ge=0, description="The neck colour is taken this far below the neck top, px.")
    neck_grow_px: int = pydantic.Field(3, ge=0, description="Neck grown vertically before its top is found, px.")
    torso_extend_px: int = pydantic.Field(
        8, ge=0, description="Torso columns touching the head are extended by this much, px.")
    darken: float = pydantic.Field(
        0.98, gt=0, le=1, description="Colour scale per extended pixel (shades the extension).")
    blur_sigma: float = pydantic.Field(
        1.0, ge=0, description="Smoothing of the extended area (removes vertical streaks), px.")


class BlinkConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)

    open_percentile: float = pydantic.Field(
        80.0, ge=50, le=100, description="Percentile of the eye aspect ratio taken as the open-eye level.")
    closed_percentile: float = pydantic.Field(
        1.0, ge=0, le=50, description="Percentile of the eye aspect ratio taken as the closed-eye level.")
    closed_ratio: float = pydantic.Field(
        0.5, gt=0, lt=1, description="The closed level is at most this x the open level.")
    min_open_ear: float = pydantic.Field(
        0.18, ge=0, description="Lowest open-eye aspect ratio accepted (typical open eyes: 0.25-0.35).")


class SmoothConfig(pydantic.BaseModel):
    """Temporal smoothing of landmark trajectories (see the module docstring)."""

    model_config = pydantic.ConfigDict(frozen=True)

    method: Literal["one_euro", "savgol"] = pydantic.Field(
        "one_euro",
        description="Temporal filter of the landmark tracks: one_euro (adaptive low-pass) or savgol (Savitzky-Golay).")
    min_cutoff_hz: float = pydantic.Field(
        1.0, gt=0, description="One-euro cutoff for a still point, Hz (lower: steadier, more lag).")
    beta: float = pydantic.Field(
        30.0, ge=0,
        description="One-euro cutoff gain, Hz per (face width / s): higher follows fast motion with less lag.")
    d_cutoff_hz: float = pydantic.Field(4.0, gt=0, description="One-euro low-pass on the speed estimate, Hz.")
    savgol_window: int = pydantic.Field(5, ge=3, description="Savitzky-Golay window, frames (odd).")
    savgol_order: int = pydantic.Field(2, ge=1, description="Savitzky-Golay polynomial order.")


class LandmarkConfig(pydantic.BaseModel):
    """How video landmarks are tracked; defaults suit an ER-NeRF clip (talkflow.contract.VIDEO_FPS, 512 px)."""

    model_config = pydantic.ConfigDict(frozen=True, **PLAIN_OPTIONALS)

    max_missing_share: float = pydantic.Field(
        0.2, ge=0, le=1,
        description="Largest share of frames without a usable face before the video is rejected (0-1).")
    min_face_px: int = pydantic.Field(64, ge=1, description="Smallest face box side accepted, frame pixels.")
    min_score: float = pydantic.Field(0.3, description="Lowest dlib HOG detection score accepted as a face.")
    detect_max_side: int = pydantic.Field(
        512, ge=64, description="Frames are downscaled to this longest side for face detection, px.")
    smooth: SmoothConfig | None = pydantic.Field(
        SmoothConfig(), description="Temporal smoothing of the landmark tracks; empty: none.")
    small_face_probes: int = pydantic.Field(
        3, ge=0, description="Faceless frames searched again at 2x to report faces that are too small.")
    mouth: Literal["dlib", "mesh"] = pydantic.Field(
        "dlib", description="Lip points 48-67 from dlib or from MediaPipe's face mesh (used when the mesh "
        "network is passed); dlib's follow the sample clip's known mouth opening more closely.")
    mesh_fallback: bool = pydantic.Field(
        True, description="On frames where dlib's HOG finds no face, take the 68 points from MediaPipe's "
        "BlazeFace + face mesh (used when both networks are passed): finds heads tilted 45 degrees or more.")


class ClassicalParsingConfig(pydantic.BaseModel):
    """Landmark + background-difference parsing (lengths relative to the face: ``face_h`` is
    brow-centre to chin, ``jaw_w`` the distance between landmarks 0 and 16)."""

    model_config = pydantic.ConfigDict(frozen=True)

    diff_threshold: float = pydantic.Field(
        30.0, gt=0, description="Foreground threshold: max channel |frame - background|, 0-255, after blurring.")
    blur_sigma: float = pydantic.Field(1.0, ge=0, description="Gaussian blur before the background difference, px.")
    open_px: int = pydantic.Field(2, ge=0, description="Morphological opening radius (removes speckle), px.")
    close_px: int = pydantic.Field(4, ge=0, description="Morphological closing radius (bridges thin gaps), px.")
    min_component_share: float = pydantic.Field(
        0.002, ge=0, description="Foreground blobs smaller than this share of the frame are dropped.")
    forehead: float = pydantic.Field(0.5, ge=0, description="Brows raised by this x face height: the face hull.")
    crown: float = pydantic.Field(0.9, ge=0, description="Brows raised by this x face height: the skull outline.")
    hair_scale: float = pydantic.Field(1.2, ge=1, description="The skull ellipse grown by this for hair and ears.")
    neck_band: float = pydantic.Field(0.9, gt=0, description="Neck band width, x jaw width.")
    shoulder_width: float = pydantic.Field(
        1.3, gt=0, description="A foreground row wider than this x jaw width is shoulders.")
    neck_min: float = pydantic.Field(0.15, ge=0, description="Shortest neck below the chin, x face height.")
    neck_max: float = pydantic.Field(0.7, ge=0, description="Longest neck below the chin, x face height.")
    neck_core: float = pydantic.Field(0.5, ge=0, description="Width under the chin always labelled neck, x jaw width.")
    head_close: float = pydantic.Field(0.08, ge=0, description="Closing radius inside the skull, x face height.")
    stray_hair_scale: float = pydantic.Field(
        1.5, ge=1, description="Foreground within this skull scale (and where hair can be) counts as head.")
    hair_low: float = pydantic.Field(
        0.35, ge=0, description="Hair and ears beside the jaw reach down to this x face height above the chin "
                                "(about the mouth); the person lower beside the neck is neck or torso.")
    body_slope: float = pydantic.Field(
        1.2, ge=0, description="Person prior: the body's half-width grows by this per px below the chin.")


class ParsingConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)

    method: Literal["auto", "bisenet", "classical"] = pydantic.Field(
        "auto",
        description="Face parsing: auto (BiSeNet when its weights are registered, else classical), "
        "bisenet or classical.")
    bisenet_size: int = pydantic.Field(512, description="BiSeNet input side, px (ER-NeRF: 512).")
    batch_size: int = pydantic.Field(8, ge=1, description="Frames per BiSeNet batch.")
    refine_background: bool = pydantic.Field(
        False,
        description="Classical, without a background plate: re-estimate the plate from a first parsing, "
        "then parse again.")
    classical: ClassicalParsingConfig = pydantic.Field(
        ClassicalParsingConfig(), description="Settings of the landmark + background-difference parser.")
    person_mask: Literal["segmentation", "difference"] = pydantic.Field(
        "segmentation", description="Classical method: the person foreground from MediaPipe's selfie "
        "segmentation (used when its network is passed; needs no static camera) or from the difference "
        "with the background plate.")


def resolve_method(method: str = "auto", weights: str | Path | None = None) -> str:
    """'bisenet' or 'classical' for ``method`` given the BiSeNet ``weights`` (None: none available)."""
    if method == "auto":
        return "bisenet" if weights is not None else "classical"
    if method not in ("bisenet", "classical"):
        raise InputError(f"unknown parsing method {method!r}; use auto, bisenet or classical")
    if method == "bisenet" and weights is None:
        raise AssetMissing("BiSeNet parsing needs its weights (face-parsing.PyTorch's 79999_iter.pth): "
                           "register them with `talkflow assets add bisenet /path/to/79999_iter.pth`, "
                           "or use method auto or classical")
    return method
