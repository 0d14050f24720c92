"""Helpers every stage uses: local paths of inputs, and a scratch folder for outputs."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from talkflow.errors import MediaUnreadable
from talkflow.settings import get_settings
from talkflow.store import Artifact, get_store


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
