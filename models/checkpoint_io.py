"""Writing torch files so that a reader never sees half of one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def save_atomic(obj: Any, path: str | Path) -> Path:
    """torch.save `obj` to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
    return path
