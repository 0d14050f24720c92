"""ER-NeRF preprocessing: a raw talking video -> a training dataset, every step cached.

normalize -> frames -> landmarks -> {audio -> features}, {parsing -> background -> gt/torso
images}, {blinks} and {3DMM tracking -> transforms} -> dataset manifest.
The four branches after the landmarks are independent: they run concurrently on a thread pool
(Prefect futures), each still a cached task. A config change recomputes its step and what
depends on it, nothing else.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from models.audio.config import AudioFeatureConfig
from models.face.config import BackgroundConfig, BlinkConfig, LandmarkConfig, ParsingConfig, TorsoConfig, resolve_method
from talkflow import assets
from talkflow.cache import validate_name
from talkflow.contract import FEATURES, words_read
from talkflow.forms import PLAIN_OPTIONALS, Text
from talkflow.store import StageResult
from tasks.dataset import assemble_dataset
from tasks.features import audio_features
from tasks.media import FramesConfig, NormalizeConfig, extract_frames, normalize_video
from tasks.outputs import publish_output
from tasks.preprocess import (
    composite_images,
    detect_blinks,
    detect_landmarks,
    estimate_plate,
    parse_faces,
)
from tasks.registry import dataset_key, register_dataset, register_source
from tasks.tracking import TrackingConfig, track_faces


class PreprocessConfig(BaseModel):
    """Every step's settings; defaults follow ER-NeRF (talkflow.contract's frame and sample rates, 512 px)."""

    model_config = PLAIN_OPTIONALS

    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig,
                                       description="Frame rate, square crop and audio of the normalized video.")
    frames: FramesConfig = Field(default_factory=FramesConfig, description="Format of the extracted frames.")
    landmarks: LandmarkConfig = Field(default_factory=LandmarkConfig, description="68-point face landmarks.")
    audio: AudioFeatureConfig = Field(default_factory=AudioFeatureConfig, description="Audio features.")
    parsing: ParsingConfig = Field(default_factory=ParsingConfig,
                                   description="Face parsing into head, neck, torso and background.")
    background: BackgroundConfig = Field(default_factory=BackgroundConfig, description="The background plate.")
    torso: TorsoConfig = Field(default_factory=TorsoConfig, description="Torso images (neck extended under the head).")
    blinks: BlinkConfig = Field(default_factory=BlinkConfig, description="Eye blinks from the landmarks.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="3DMM face tracking.")
    deepspeech_npy: Path | None = Field(None, description="Precomputed DeepSpeech features (T,16,29).")


# one thread per task submitted after the landmarks: a task waiting on its upstream future
# holds a thread, so fewer would queue an independent branch (blinks) behind the parsing chain
BRANCH_WORKERS = 6


def _on_thread(stage_task):
    """`stage_task` for a worker thread of the flow: Prefect cannot interrupt a task there, so
    it runs without the stage timeout (Prefect would only warn about it on every run)."""
    on_thread = stage_task.with_options()  # a copy (with_options reads None as "unchanged")
    on_thread.timeout_seconds = None
    return on_thread


@flow(name="preprocess-video", task_runner=ThreadPoolTaskRunner(max_workers=BRANCH_WORKERS))
def preprocess_video(video: Path, person: str, config: PreprocessConfig = PreprocessConfig(),
                     transcript: Text = "") -> StageResult:
    """Turn a talking-head video into an ER-NeRF dataset (a manifest; see docs/dataset.md).

    Args:
        video: the source video (a path the run can read).
        person: the avatar's name: letters, digits, '_' or '-'; namespaces its cache entries.
        config: settings of every step.
        transcript: the words spoken in the video, if known (optional): features built on phones
            (visemes) align to them instead of recognising them; other kinds ignore them.
    """
    ns = validate_name(person, "person")
    asset = FEATURES[config.audio.kind].asset
    model_dir = assets.require(asset) if asset else None  # a missing model fails before any work
    normalized = normalize_video(video, config.normalize, namespace=ns)
    frames = extract_frames(normalized["video"], config.frames, namespace=ns)
    lm_cfg = config.landmarks
    use_mesh = lm_cfg.mouth == "mesh" or lm_cfg.mesh_fallback
    landmarks = detect_landmarks(frames, lm_cfg, normalized.meta["fps"],
                                 mesh=assets.shipped("face_mesh") if use_mesh else None,
                                 detector=assets.shipped("face_detection") if lm_cfg.mesh_fallback else None,
                                 namespace=ns)
    # Band statistics from the training frames only: the held-out end (tracking.val_fraction) never leaks.
    n_frames = frames.meta["n_frames"]
    n_train = n_frames - max(1, round(n_frames * config.tracking.val_fraction))
    audio_cfg = config.audio.model_copy(update={"logmel": config.audio.logmel.model_copy(
        update={"stats_fraction": max(n_train, 1) / n_frames})})
    # Independent branches, submitted together; a future passed on is awaited by its consumer.
    features = _on_thread(audio_features).submit(normalized["audio"], n_frames, audio_cfg,
                                                 model_dir=model_dir, deepspeech=config.deepspeech_npy, namespace=ns,
                                                 text=words_read(audio_cfg.kind, transcript))
    tracking = _on_thread(track_faces).submit(frames, landmarks, config.tracking, bfm=assets.locate("bfm"),
                                              namespace=ns)
    bisenet = assets.locate("bisenet") if config.parsing.method != "classical" else None
    if config.parsing.method == "bisenet" and bisenet is None:
        assets.require("bisenet")  # raises with what to register
    segmentation = (assets.shipped("selfie_segmentation") if config.parsing.person_mask == "segmentation"
                    and resolve_method(config.parsing.method, bisenet) == "classical" else None)
    parsing = _on_thread(parse_faces).submit(frames, landmarks, config.parsing, weights=bisenet,
                                             segmentation=segmentation, namespace=ns)
    background = _on_thread(estimate_plate).submit(frames, parsing, config.background, namespace=ns)
    composite = _on_thread(composite_images).submit(frames, parsing, background, config.torso, namespace=ns)
    blinks = _on_thread(detect_blinks).submit(landmarks, config.blinks, fps=normalized.meta["fps"], namespace=ns)
    features, parsing, background, composite, blinks, tracking = (
        f.result() for f in (features, parsing, background, composite, blinks, tracking))
    dataset = assemble_dataset(normalized, frames, landmarks, features, parsing, background, composite,
                               blinks, tracking, namespace=ns)
    register_dataset(ns, dataset)
    register_source(ns, video, config)
    publish_output("preprocess", dataset_key(ns), what="dataset", namespace=ns, preview=normalized["video"], stages={
        "normalize": normalized, "frames": frames, "landmarks": landmarks, "audio features": features,
        "parsing": parsing, "background": background, "torso images": composite, "blinks": blinks,
        "tracking": tracking, "dataset": dataset})
    return dataset
