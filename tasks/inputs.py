"""Helpers the stages share: local paths of inputs, their loaders (frames, landmarks, the 3DMM),
and a scratch folder for outputs."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from talkflow import media
from talkflow.errors import MediaUnreadable
from talkflow.hashing import sha256_file
from talkflow.settings import get_settings
from talkflow.store import Artifact, StageResult, get_store

if TYPE_CHECKING:
    from models.face3d.morphable import MorphableModel


def local_file(value: Path | Artifact) -> Path:
    """A local, verified path for a user file (Path) or a stored artifact."""
    if isinstance(value, Artifact):
        return get_store().fetch(value)
    path = Path(value)
    if not path.exists():
        raise MediaUnreadable(f"'{path}' does not exist. Check the path and try again.")
    return path


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A private working folder inside the data root, removed afterwards (success or not)."""
    base = get_settings().work_dir
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def frame_folder(frames: StageResult) -> media.FrameFolder:
    """The frames of a frames stage result, read lazily."""
    return media.FrameFolder(local_file(frames["frames"]), frames.meta.get("ext", "jpg"))


def load_landmarks(landmarks: StageResult) -> np.ndarray:
    return np.load(local_file(landmarks["lms"]))  # (T,68,2) float32


def morphable_model(bfm: Path | None) -> MorphableModel:
    """The user's BFM (converted once, cached by its sha256), else the generic model."""
    from models.face3d.morphable import convert_bfm, generic_model, load_model

    if bfm is None:
        return generic_model()
    cache = get_settings().root / "assets-cache" / f"bfm-{sha256_file(bfm)[:16]}.pt"
    if cache.is_file():
        return load_model(cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    return convert_bfm(bfm, cache)
