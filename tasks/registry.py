"""The registry: what a name stands for in the store, so that a later run needs only the name.

- `avatars/<person>.json`: a person's trained avatar (dataset and latest stage results);
  rendering finds it by the person's name. `train_avatar` writes it last, atomically.
- `datasets/<person>.json`: the person's latest dataset manifest (train and retrain read it).
- `sources/<person>.json`: the footage that dataset was made from (retrain compares its sha256).
- characters: the one-shot portrait characters, as the namespaces of their cached 3DMM fits.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pydantic
from pydantic import BaseModel, Field

from talkflow.cache import validate_name
from talkflow.errors import InputError
from talkflow.hashing import sha256_file
from talkflow.store import StageResult, get_store

AVATARS_DIR = "avatars"
DATASETS_DIR = "datasets"
SOURCES_DIR = "sources"
TRAIN_STAGES = ("head", "lips", "torso")  # the avatar's checkpoints, in training order
STAGE_NAMES = {s: f"train_{s}" for s in TRAIN_STAGES}  # their stages' cache / journal names
DATASET_STAGES = ("dataset", "import_dataset")  # the manifests training accepts
CHARACTER_STAGE = "portrait_fit"  # the stage every one-shot character starts with


# ----------------------------------------------------------------------------------- avatars
class AvatarRecord(BaseModel):
    """`avatars/<person>.json`: what rendering needs to find a trained person by name."""

    person: str = Field(description="The person's name.")
    dataset: StageResult = Field(description="The dataset it was trained on.")
    head: StageResult = Field(description="The head stage's checkpoint.")
    lips: StageResult | None = Field(None, description="The lips stage's checkpoint, if trained.")
    torso: StageResult | None = Field(None, description="The torso stage's checkpoint, if trained.")
    updated: datetime = Field(default_factory=lambda: datetime.now(UTC), description="When it was registered.")

    def latest(self, with_torso: bool) -> StageResult:
        """The checkpoint to render: torso when asked for (and trained), else lips, else head."""
        if with_torso:
            if self.torso is None:
                raise InputError(f"the avatar {self.person!r} has no torso stage; train it (stage 'auto' or "
                                 "'torso') or render with with_torso=False")
            return self.torso
        return self.lips or self.head

    @property
    def features(self) -> dict:
        return self.dataset.meta.get("features") or {}


def avatar_key(person: str) -> str:
    return f"{AVATARS_DIR}/{validate_name(person, 'person')}.json"


def known_avatars() -> list[str]:
    return [Path(k).stem for k in get_store().list_keys(AVATARS_DIR) if k.endswith(".json")]


def write_avatar(record: AvatarRecord) -> None:
    """Written last, after every stage result it names is stored (one atomic write)."""
    get_store().write_text(avatar_key(record.person), record.model_dump_json())


def read_avatar(person: str) -> AvatarRecord:
    """The registered avatar; InputError naming the known ones when there is none."""
    store = get_store()
    text = store.read_text(avatar_key(person))
    if text is None:
        known = known_avatars()
        raise InputError(f"no avatar named {person!r}; known avatars: "
                         f"{', '.join(known) if known else 'none yet'} (train one with train_avatar)")
    try:
        record = AvatarRecord.model_validate_json(text)
    except pydantic.ValidationError as exc:
        raise InputError(f"the registry entry of {person!r} is unreadable ({exc.error_count()} errors); "
                         "train the avatar again") from exc
    for name in TRAIN_STAGES:
        result = getattr(record, name)
        if result is not None and not store.verify(result["checkpoint"]):
            raise InputError(f"the {name} checkpoint of avatar {person!r} is missing or corrupt (pruned?); "
                             "train the avatar again")
    return record


# ---------------------------------------------------------------------------------- datasets
def dataset_key(person: str) -> str:
    """Store key of the person's registered dataset manifest."""
    return f"{DATASETS_DIR}/{person}.json"


def register_dataset(person: str, dataset: StageResult) -> None:
    """`datasets/<person>.json`: the person's latest dataset manifest (train and retrain find it)."""
    get_store().write_text(dataset_key(person), dataset.model_dump_json())


def registered_dataset(person: str) -> StageResult | None:
    text = get_store().read_text(dataset_key(person))
    return StageResult.model_validate_json(text) if text is not None else None


# ----------------------------------------------------------------------------------- sources
class SourceRecord(BaseModel):
    """`sources/<person>.json`: the footage a person's latest dataset was made from."""

    video: str = Field(description="Absolute path of the footage when it was preprocessed.")
    sha256: str = Field(description="Its content hash then (a changed file means retraining).")
    config: dict = Field(description="The PreprocessConfig it was preprocessed with, as JSON.")


def register_source(person: str, video: Path, config: BaseModel) -> None:
    record = SourceRecord(video=str(Path(video).resolve()), sha256=sha256_file(video),
                          config=config.model_dump(mode="json"))
    get_store().write_text(f"{SOURCES_DIR}/{person}.json", record.model_dump_json())


def registered_source(person: str) -> SourceRecord | None:
    text = get_store().read_text(f"{SOURCES_DIR}/{person}.json")
    return SourceRecord.model_validate_json(text) if text is not None else None


# -------------------------------------------------------------------------------- characters
def known_characters() -> list[str]:
    """The one-shot characters with a cached 3DMM fit (the namespaces of their portrait_fit entries)."""
    from talkflow.cache import NO_NAMESPACE
    from talkflow.cache_admin import list_entries

    names = {e.namespace for e in list_entries(get_store()) if e.stage == CHARACTER_STAGE}
    return sorted(names - {NO_NAMESPACE})


__all__ = [
    "AvatarRecord", "DATASET_STAGES", "STAGE_NAMES", "SourceRecord", "TRAIN_STAGES", "avatar_key", "dataset_key",
    "known_avatars", "known_characters", "read_avatar", "register_dataset", "register_source",
    "registered_dataset", "registered_source", "write_avatar",
]
