"""Register an existing ER-NeRF dataset folder (as the reference's data_utils/process.py writes it)
as a person's dataset, so that `train_avatar` trains on it. Cached by the folder's content."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from talkflow.cache import validate_name
from talkflow.store import StageResult
from tasks.dataset import import_dataset
from tasks.registry import register_dataset


@flow(name="import-dataset")
def import_dataset_flow(folder: Path, person: str) -> StageResult:
    """Import the ER-NeRF dataset in `folder` as `person`'s dataset.

    Args:
        folder: the dataset folder (transforms_train/val.json, ori_imgs/, parsing/, gt_imgs/,
            torso_imgs/, bc.jpg, aud.wav, aud_ds/aud_hu/aud_eo/aud.npy, au.csv, track_params.pt).
        person: the avatar's name: letters, digits, '_' or '-'; namespaces its cache entries.
    """
    ns = validate_name(person, "person")
    dataset = import_dataset(Path(folder).expanduser().resolve(), namespace=ns)
    register_dataset(ns, dataset)
    return dataset
