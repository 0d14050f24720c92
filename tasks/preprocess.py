"""ER-NeRF preprocessing stages: landmarks, audio features, parsing, background, torso and gt
images, blinks. Each is a cached task over the frames/audio artifacts of the media stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from models.audio.features import AudioFeatureConfig, extract_features, load_deepspeech_npy, save_features
from models.face.background import BackgroundConfig, estimate_background
from models.face.blink import BlinkConfig, au45_from_landmarks, write_au_csv
from models.face.composite import TorsoConfig, gt_image, torso_rgba
from models.face.parsing import ParsingConfig, labels_to_rgb, parse_frames, resolve_method, rgb_to_labels
from models.face.video_landmarks import LandmarkConfig, track_video_landmarks
from talkflow import media
from talkflow.cache import stage
from talkflow.errors import InputError
from talkflow.settings import get_settings
from talkflow.store import Artifact, StageResult, get_store
from tasks.inputs import local_file, scratch


def frame_folder(frames: StageResult) -> media.FrameFolder:
    return media.FrameFolder(local_file(frames["frames"]), frames.meta.get("ext", "jpg"))


def load_landmarks(landmarks: StageResult) -> np.ndarray:
    return np.load(local_file(landmarks["lms"]))  # (T,68,2) float32


def load_labels(parsing: StageResult) -> list[np.ndarray]:
    folder = media.FrameFolder(local_file(parsing["parsing"]), "png")
    return [rgb_to_labels(folder[i]) for i in range(len(folder))]  # (S,S) uint8 each


def load_image(art: Artifact) -> np.ndarray:
    with Image.open(local_file(art)) as img:
        return np.asarray(img.convert("RGB"))


@stage("landmarks", "1")
def detect_landmarks(frames: StageResult, config: LandmarkConfig, namespace: str | None = None) -> StageResult:
    """68 landmarks per frame, smoothed; frames without a face are reported and interpolated."""
    found = track_video_landmarks(frame_folder(frames), config)
    with scratch("landmarks") as work:
        np.save(work / "lms.npy", found.lms.astype(np.float32))
        art = get_store().put_file(work / "lms.npy")
    missing = [int(i) for i in np.flatnonzero(~found.detected)]
    return StageResult(
        artifacts={"lms": art},
        meta={"n_frames": len(found.lms), "missing_frames": missing, "warnings": found.warnings},
    )


@stage("audio_features", "1")
def audio_features(
    audio: Artifact,
    n_frames: int,
    config: AudioFeatureConfig,
    model_dir: Path | None = None,
    deepspeech: Path | None = None,
    namespace: str | None = None,
) -> StageResult:
    """(T,16,D) features per video frame: log-mel by default, HuBERT/wav2vec2 from a local model
    folder, or a supplied DeepSpeech .npy."""
    with scratch("audio") as work:
        if deepspeech is not None:
            from models.audio.features import FeatureInfo

            feats = load_deepspeech_npy(local_file(deepspeech), n_frames)
            info = FeatureInfo(kind="deepspeech", dim=int(feats.shape[-1]))
        else:
            samples, rate = media.read_wav(local_file(audio))
            feats, info = extract_features(samples, rate, n_frames, model_dir=model_dir,
                                           device=get_settings().torch_device(), config=config)
        npy, meta = save_features(work, feats, info)
        store = get_store()
        return StageResult(artifacts={"feats": store.put_file(npy), "info": store.put_file(meta)},
                           meta=info.model_dump())


@stage("parsing", "1")
def parse_faces(
    frames: StageResult,
    landmarks: StageResult,
    config: ParsingConfig,
    weights: Path | None = None,
    namespace: str | None = None,
) -> StageResult:
    """Head / neck / torso / background label images (BiSeNet when weights are given)."""
    method = resolve_method(config.method, weights)
    labels = parse_frames(frame_folder(frames), load_landmarks(landmarks), config=config,
                          weights=weights, device=get_settings().torch_device())
    with scratch("parsing") as work:
        media.write_frames((labels_to_rgb(lab) for lab in labels), work / "parsing", ext="png")
        art = get_store().put_dir(work / "parsing")
    areas = np.bincount(labels.reshape(-1), minlength=4) / labels.size
    return StageResult(artifacts={"parsing": art},
                       meta={"method": method, "area_share": [round(float(a), 4) for a in areas]})


@stage("background", "1")
def estimate_plate(frames: StageResult, parsing: StageResult, config: BackgroundConfig,
                   namespace: str | None = None) -> StageResult:
    """The static background over the clip (bc.jpg), person pixels excluded."""
    plate = estimate_background(frame_folder(frames), load_labels(parsing), config)
    with scratch("background") as work:
        Image.fromarray(plate).save(work / "bc.jpg", quality=95)
        art = get_store().put_file(work / "bc.jpg")
    return StageResult(artifacts={"bc": art})


@stage("composite", "1")
def composite_images(
    frames: StageResult,
    parsing: StageResult,
    background: StageResult,
    config: TorsoConfig,
    namespace: str | None = None,
) -> StageResult:
    """gt_imgs (frame over the plate) and torso_imgs (RGBA torso + neck, head removed)."""
    images, labels = frame_folder(frames), load_labels(parsing)
    plate = load_image(background["bc"])
    if len(images) != len(labels):
        raise InputError(f"{len(images)} frames but {len(labels)} parsing maps; rerun the parsing")
    with scratch("composite") as work:
        media.write_frames((gt_image(images[i], labels[i], plate) for i in range(len(images))),
                           work / "gt_imgs", ext="jpg")
        (work / "torso_imgs").mkdir()
        for i in range(len(images)):
            Image.fromarray(torso_rgba(images[i], labels[i], config), "RGBA").save(
                work / "torso_imgs" / f"{i}.png")
        store = get_store()
        return StageResult(artifacts={"gt_imgs": store.put_dir(work / "gt_imgs"),
                                      "torso_imgs": store.put_dir(work / "torso_imgs")})


@stage("blinks", "2")
def detect_blinks(landmarks: StageResult, config: BlinkConfig, fps: float = 25.0,
                  namespace: str | None = None) -> StageResult:
    """Per-frame eye closure (AU45-like, 0 open .. 5 closed) from the eye landmarks, as OpenFace's au.csv."""
    au45 = au45_from_landmarks(load_landmarks(landmarks), config)
    with scratch("blinks") as work:
        write_au_csv(work / "au.csv", au45, fps)
        art = get_store().put_file(work / "au.csv")
    return StageResult(artifacts={"au": art},
                       meta={"blink_share": round(float(np.mean(au45 > 2.5)), 4)})
