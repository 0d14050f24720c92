"""Resume slots of long stages: the latest checkpoint of an unfinished run, so that a retry, or a
rerun after the process was killed, goes on from that step.

Every `checkpoint_every` steps the trainer state (model, optimiser, step, RNG) goes to the store as
a content-addressed object, then a small pointer document is written at
`resume/<namespace>/<stage>-<digest>.json` (digest: the same inputs as the cache key). A run finds
the pointer, verifies its checkpoint and goes on from that step; a run that completes removes its
pointer. A pointer whose checkpoint is missing or corrupt is ignored (training starts over).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic

from talkflow.cache import NO_NAMESPACE, cache_key
from talkflow.store import Artifact, ArtifactStore

RESUME_DIR = "resume"


def resume_key(stage_name: str, version: str, inputs: dict[str, Any]) -> str:
    """`resume/<namespace>/<stage>-<digest>.json`: the digest of the same inputs as the cache key."""
    digest = cache_key(stage_name, version, inputs).rsplit(".", 1)[-1]
    return f"{RESUME_DIR}/{inputs.get('namespace') or NO_NAMESPACE}/{stage_name}-{digest}.json"


class ResumeSlot:
    """The latest checkpoint of an unfinished stage run: the object first, the pointer last."""

    def __init__(self, store: ArtifactStore, key: str):
        self.store, self.key = store, key
        self.current: Artifact | None = None
        self.curve: list[list[float]] = []  # [step, mean loss] of each logged window

    def load(self, log: Callable[[str], None]) -> tuple[int, Path | None]:
        """(step, local checkpoint) of a verified pointer, else (0, None)."""
        text = self.store.read_text(self.key)
        if text is None:
            return 0, None
        try:
            doc = json.loads(text)
            art = Artifact.model_validate(doc["checkpoint"])
            step = int(doc["step"])
        except (ValueError, KeyError, pydantic.ValidationError):
            log(f"ignoring an unreadable resume pointer {self.key}; training from the start")
            return 0, None
        if not self.store.verify(art):
            log(f"the checkpoint of {self.key} (step {step}) is missing or corrupt; training from the start")
            return 0, None
        self.current, self.curve = art, [list(p) for p in doc.get("curve", [])]
        return step, self.store.fetch(art)

    def save(self, step: int, path: Path) -> None:
        art = self.store.put_file(path, suffix=".pt")
        doc = {"step": step, "checkpoint": art.model_dump(), "curve": self.curve, "at": time.time()}
        self.store.write_text(self.key, json.dumps(doc))
        previous, self.current = self.current, art
        if previous is not None and previous.key != art.key:
            self.store.remove(previous.key)  # superseded; nothing else names an in-progress checkpoint

    def clear(self, keep: Artifact) -> None:
        """The stage completed: drop the pointer and the in-progress checkpoint (unless it is `keep`)."""
        self.store.remove(self.key)
        if self.current is not None and self.current.key != keep.key:
            self.store.remove(self.current.key)


__all__ = ["RESUME_DIR", "ResumeSlot", "resume_key"]
