"""ER-NeRF training: a dataset -> head -> lips -> torso, each a cached, resumable stage; then the
person's avatar is registered (`avatars/<person>.json`) so that rendering needs only the name.

A stage's cache key includes the previous stage's checkpoint: a changed lips config retrains lips
and torso and keeps the head; an unchanged run is all cache hits.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow

from talkflow import assets
from talkflow.cache import validate_name
from talkflow.errors import InputError
from talkflow.store import StageResult
from tasks.dataset import DATASET_STAGES, registered_dataset
from tasks.train import (
    AvatarRecord,
    TrainAvatarConfig,
    TrainStageConfig,
    train_head,
    train_lips,
    train_torso,
    write_avatar,
)

__all__ = ["AvatarRecord", "TrainAvatarConfig", "TrainStage", "TrainStageConfig", "train_avatar"]

TrainStage = Literal["auto", "head", "lips", "torso"]


@flow(name="train-avatar")
def train_avatar(
    dataset: StageResult | None = None,
    person: str | None = None,
    config: TrainAvatarConfig = TrainAvatarConfig(),
    stage: TrainStage = "auto",
) -> AvatarRecord:
    """Train a person's ER-NeRF avatar and register it under the person's name.

    Args:
        dataset: the manifest `preprocess_video` returned; empty: the dataset of the person's
            registered avatar (a retrain, e.g. on a schedule).
        person: the avatar's name; empty: the dataset's namespace (the name it was preprocessed under).
        config: the model size and each stage's settings (defaults: the reference schedule).
        stage: "auto" trains head, lips and torso; "head" or "lips" stop after that stage
            ("torso" is the same as "auto"). Stages already trained with the same inputs are cache hits.
    """
    if stage not in ("auto", "head", "lips", "torso"):
        raise InputError(f"stage must be auto, head, lips or torso, not {stage!r}")
    if person is None:
        if dataset is None or not dataset.namespace:
            raise InputError("give the person's name, or a dataset made by preprocess_video for a person")
        person = dataset.namespace
    ns = validate_name(person, "person")
    if dataset is None:
        dataset = registered_dataset(ns)
        if dataset is None:
            raise InputError(f"no dataset for {ns!r}: run preprocess_video for this person first")
    if dataset.stage not in DATASET_STAGES:
        raise InputError(f"train_avatar needs the dataset manifest of preprocess_video or import_dataset, got a "
                         f"{dataset.stage or 'plain'} result")
    config.validate_stages()  # a bad override fails here, before any training

    head = train_head(dataset, config.head, config.model, namespace=ns)
    lips = torso = None
    if stage != "head":
        lips = train_lips(dataset, head, config.lips, lpips=assets.locate("lpips"), namespace=ns)
    if stage in ("auto", "torso"):
        torso = train_torso(dataset, lips, config.torso, namespace=ns)
    record = AvatarRecord(person=ns, dataset=dataset, head=head, lips=lips, torso=torso)
    write_avatar(record)
    return record
