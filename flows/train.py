"""ER-NeRF training: a dataset -> head -> lips -> torso, each a cached, resumable stage; then the
person's avatar is registered (`avatars/<person>.json`) so that rendering needs only the name.

A stage's cache key includes the previous stage's checkpoint: a changed lips config retrains lips
and torso and keeps the head; an unchanged run is all cache hits.
"""

from __future__ import annotations

from prefect import flow

from talkflow import assets
from talkflow.checks import TrainStage, choice, validate_name
from talkflow.errors import InputError
from tasks import presets
from tasks.outputs import publish_output
from tasks.presets import TrainPreset
from tasks.registry import DATASET_STAGES, AvatarRecord, avatar_key, registered_dataset, write_avatar
from tasks.train import train_head, train_lips, train_torso
from tasks.train_config import TrainAvatarConfig, TrainStageConfig

__all__ = ["AvatarRecord", "TrainAvatarConfig", "TrainStage", "TrainStageConfig", "train_avatar"]

@flow(name="train-avatar")
def train_avatar(
    person: str,
    config: TrainAvatarConfig = TrainAvatarConfig(),
    stage: TrainStage = "auto",
    preset: TrainPreset = "reference",
) -> AvatarRecord:
    """Train a person's ER-NeRF avatar on the dataset preprocessing made for that person.

    Args:
        person: the avatar's name, as given to preprocess (letters, digits, '_' or '-'): the
            person's latest dataset is found by this name.
        config: the model size and each stage's settings (defaults: the reference schedule).
        stage: "auto" trains head, lips and torso; "head" or "lips" stop after that stage
            ("torso" is the same as "auto"). Stages already trained with the same inputs are cache hits.
        preset: reference: the config as given (its defaults are ER-NeRF's model and schedule:
            hours on a GPU); cpu-demo: the demo's small model and short schedule (minutes on a
            CPU, a toy avatar), with any config field you changed from its default applied on top.
    """
    choice(stage, TrainStage, "stage")
    choice(preset, TrainPreset, "preset")
    config = presets.on_preset(config, "train", preset)
    ns = validate_name(person, "person")
    dataset = registered_dataset(ns)
    if dataset is None:
        raise InputError(f"no dataset for {ns!r}: run preprocess for this person first")
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
    publish_output("train", avatar_key(ns), what="avatar", namespace=ns,
                   stages={"head": head, "lips": lips, "torso": torso})
    return record
