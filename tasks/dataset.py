"""The ER-NeRF dataset: one manifest over the preprocessing outputs, and its folder form.

The `dataset` stage writes no new payload: it checks that the parts agree (frame counts of
images, parsing, landmarks, features, poses and blinks) and lists them. `materialize_dataset`
lays the parts out as docs/dataset.md describes, with links into the store's local copies.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from models.face.video_landmarks import write_lms
from talkflow.cache import stage
from talkflow.errors import InputError
from talkflow.hashing import sha256_file
from talkflow.store import StageResult, get_store
from tasks.inputs import local_file

# dataset name -> (stage result, artifact) the flow passes in
FOLDERS = {"ori_imgs": "frames", "parsing": "parsing", "gt_imgs": "gt_imgs", "torso_imgs": "torso_imgs"}
FILES = {
    "aud.wav": "audio",
    "aud_feats.npy": "feats",
    "aud_feats.json": "feats_info",
    "bc.jpg": "bc",
    "au.csv": "au",
    "track_params.pt": "track",
    "transforms_train.json": "transforms_train",
    "transforms_val.json": "transforms_val",
}


def _count_rows(path: Path) -> int:
    with open(path, newline="") as f:
        return sum(1 for _ in csv.reader(f)) - 1


@stage("dataset", "1")
def assemble_dataset(
    normalized: StageResult,
    frames: StageResult,
    landmarks: StageResult,
    features: StageResult,
    parsing: StageResult,
    background: StageResult,
    composite: StageResult,
    blinks: StageResult,
    tracking: StageResult,
    namespace: str | None = None,
) -> StageResult:
    """Check that every part covers the same frames, then list the parts."""
    n = frames.meta["n_frames"]
    transforms = [json.loads(local_file(tracking[k]).read_text()) for k in ("transforms_train", "transforms_val")]
    counts = {
        "frames": n,
        "landmarks": int(np.load(local_file(landmarks["lms"]), mmap_mode="r").shape[0]),
        "audio features": int(np.load(local_file(features["feats"]), mmap_mode="r").shape[0]),
        "parsing maps": parsing["parsing"].files,
        "gt images": composite["gt_imgs"].files,
        "torso images": composite["torso_imgs"].files,
        "blinks": _count_rows(local_file(blinks["au"])),
        "poses": sum(len(t["frames"]) for t in transforms),
    }
    if len(set(counts.values())) != 1:
        raise InputError(f"the preprocessing outputs disagree on the frame count: {counts}; "
                         "rerun preprocessing (a stale input?)")
    parts = {
        "audio": normalized["audio"], "frames": frames["frames"], "lms": landmarks["lms"],
        "feats": features["feats"], "feats_info": features["info"], "parsing": parsing["parsing"],
        "bc": background["bc"], "gt_imgs": composite["gt_imgs"], "torso_imgs": composite["torso_imgs"],
        "au": blinks["au"], "track": tracking["track"], "transforms_train": tracking["transforms_train"],
        "transforms_val": tracking["transforms_val"],
    }
    return StageResult(artifacts=parts, meta={
        "n_frames": n, "size": normalized.meta["size"], "fps": normalized.meta["fps"],
        "sample_rate": normalized.meta.get("sample_rate"),
        "focal": tracking.meta.get("focal"), "features": features.meta,
        "n_train": len(transforms[0]["frames"]), "n_val": len(transforms[1]["frames"]),
        "parsing": parsing.meta.get("method"), "tracking": tracking.meta.get("model"),
    })


DATASETS_DIR = "datasets"


def dataset_key(person: str) -> str:
    """Store key of the person's registered dataset manifest."""
    return f"{DATASETS_DIR}/{person}.json"


def register_dataset(person: str, dataset: StageResult) -> None:
    """`datasets/<person>.json`: the person's latest dataset manifest (train and retrain find it)."""
    get_store().write_text(dataset_key(person), dataset.model_dump_json())


def registered_dataset(person: str) -> StageResult | None:
    text = get_store().read_text(dataset_key(person))
    return StageResult.model_validate_json(text) if text is not None else None


class SourceRecord(BaseModel):
    """`sources/<person>.json`: the footage a person's latest dataset was made from."""

    video: str
    sha256: str
    config: dict  # the PreprocessConfig, as JSON


def register_source(person: str, video: Path, config: BaseModel) -> None:
    record = SourceRecord(video=str(Path(video).resolve()), sha256=sha256_file(video),
                          config=config.model_dump(mode="json"))
    get_store().write_text(f"sources/{person}.json", record.model_dump_json())


def registered_source(person: str) -> SourceRecord | None:
    text = get_store().read_text(f"sources/{person}.json")
    return SourceRecord.model_validate_json(text) if text is not None else None


def materialize_dataset(dataset: StageResult, dest: Path, *, copy: bool = False) -> Path:
    """Write the dataset folder at `dest` (symlinks into the store's local copies, or copies)."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    store = get_store()

    def place(src: Path, target: Path) -> None:
        if copy:
            shutil.copyfile(src, target)
        else:
            os.symlink(src.resolve(), target)

    for name, part in FILES.items():
        place(store.fetch(dataset[part]), dest / name)
    for name, part in FOLDERS.items():
        src = store.fetch(dataset[part])
        (dest / name).mkdir()
        for f in sorted(src.iterdir()):
            place(f, dest / name / f.name)
    lms = np.load(store.fetch(dataset["lms"]))
    for i, points in enumerate(lms):
        write_lms(dest / "ori_imgs" / f"{i}.lms", points)
    return dest
