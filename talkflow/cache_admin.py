"""Seeing and managing the stage cache: list, size, verify, prune (with garbage collection).

An entry is a Prefect result record under <store>/cache/<key> whose result is a StageResult
manifest. Payloads (objects/, trees/) are shared between entries by content; pruning removes
entries, then sweeps the payloads no remaining entry references.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime

from talkflow.keys import parse_key
from talkflow.store import CACHE_DIR, ArtifactStore, StageResult, mtime_of

SWEEP_GRACE_S = 3600.0  # payloads younger than this may belong to a stage still running


@dataclass
class CacheEntry:
    key: str
    stage: str
    namespace: str
    version: str
    created: datetime | None
    size: int
    result: StageResult | None  # None: the record could not be read

    @property
    def readable(self) -> bool:
        return self.result is not None


def list_entries(store: ArtifactStore, namespace: str | None = None) -> list[CacheEntry]:
    base = store.path(CACHE_DIR)
    if not store.fs.exists(base):
        return []
    entries = []
    for path in sorted(store.fs.find(base)):
        key = path.rsplit("/", 1)[-1]
        parts = parse_key(key)
        if parts is None or (namespace and parts["namespace"] != namespace):
            continue
        result = _read_record(store, path)
        entries.append(
            CacheEntry(
                key=key,
                stage=parts["stage"],
                namespace=parts["namespace"],
                version=parts["version"],
                created=result.created if result else None,
                size=result.size if result else 0,
                result=result,
            )
        )
    return entries


def _read_record(store: ArtifactStore, path: str) -> StageResult | None:
    try:
        with store.fs.open(path, "rb") as f:
            record = json.loads(f.read())
        return StageResult.model_validate_json(record["result"])
    except Exception:  # half-written or foreign record: reported as unreadable
        return None


def verify_entries(store: ArtifactStore, entries: list[CacheEntry]) -> list[CacheEntry]:
    """The entries that are unreadable or whose artifacts fail their checksum."""
    return [
        e for e in entries
        if e.result is None or not all(store.verify(a) for a in e.result.artifacts.values())
    ]


def remove_entries(store: ArtifactStore, entries: list[CacheEntry]) -> None:
    for e in entries:
        store.remove(f"{CACHE_DIR}/{e.key}")


def free_namespace(store: ArtifactStore, namespace: str) -> tuple[int, int]:
    """Remove a namespace's entries and, at once, the payloads only they referenced.

    Returns (entries removed, bytes freed). Payloads shared with other entries stay.
    """
    entries = list_entries(store)
    drop = [e for e in entries if e.namespace == namespace]
    keep = {a.key for e in entries if e.namespace != namespace and e.result for a in e.result.artifacts.values()}
    remove_entries(store, drop)
    freed = 0
    for e in drop:
        for a in (e.result.artifacts.values() if e.result else ()):
            if a.key not in keep:
                keep.add(a.key)  # once
                freed += a.size
                if a.kind == "dir":
                    store.remove(f"{a.key}.json")  # listing first: the tree stops existing at once
                store.remove(a.key)
    return len(drop), freed


def select_for_prune(
    entries: list[CacheEntry],
    *,
    older_than_s: float | None = None,
    max_size: int | None = None,
    namespace: str | None = None,
    now: float | None = None,
) -> list[CacheEntry]:
    """Entries to drop: by namespace, by age, then the oldest until the rest fit max_size."""
    now = time.time() if now is None else now
    drop: dict[str, CacheEntry] = {}
    for e in entries:
        if namespace is not None and e.namespace == namespace:
            drop[e.key] = e
        elif older_than_s is not None and (
            e.created is None or now - e.created.timestamp() > older_than_s
        ):
            drop[e.key] = e
    if max_size is not None:
        kept = sorted(
            (e for e in entries if e.key not in drop),
            key=lambda e: e.created.timestamp() if e.created else 0.0,
        )
        total = _referenced_size(kept)
        while kept and total > max_size:
            e = kept.pop(0)
            drop[e.key] = e
            total = _referenced_size(kept)
    return list(drop.values())


def _referenced_size(entries: list[CacheEntry]) -> int:
    """Bytes of the distinct payloads the entries reference (shared payloads count once)."""
    seen: dict[str, int] = {}
    for e in entries:
        if e.result:
            for a in e.result.artifacts.values():
                seen[a.key] = a.size
    return sum(seen.values())


def sweep(store: ArtifactStore, *, grace_s: float = SWEEP_GRACE_S, dry_run: bool = False) -> int:
    """Delete payloads no cache entry references (older than grace_s). Returns bytes freed."""
    live: set[str] = set()
    for e in list_entries(store):
        if e.result:
            live.update(a.key for a in e.result.artifacts.values())
    now = time.time()
    freed = 0
    dead_trees: set[str] = set()
    for key, size, mtime in store.iter_keys():
        tree = _tree_of(key)
        owner = tree or key
        if owner in live or now - mtime < grace_s:
            continue
        freed += size
        if tree:
            dead_trees.add(tree)
        elif not dry_run:
            store.remove(key)
    if not dry_run:
        for tree in dead_trees:
            store.remove(f"{tree}.json")  # listing first: the tree stops existing at once
            store.remove(tree)
    return freed + _sweep_foreign_records(store, now - grace_s, dry_run)


def _sweep_foreign_records(store: ArtifactStore, before: float, dry_run: bool) -> int:
    """Prefect also persists failed runs' exceptions under uuid names; drop the old ones."""
    base = store.path(CACHE_DIR)
    if not store.fs.exists(base):
        return 0
    freed = 0
    for path, info in store.fs.find(base, detail=True).items():
        if parse_key(path.rsplit("/", 1)[-1]) is None and mtime_of(info) < before:
            freed += int(info.get("size") or 0)
            if not dry_run:
                store.fs.rm(path)
    return freed


def _tree_of(key: str) -> str | None:
    """'trees/<sha>' for a file of a tree or its listing, else None."""
    if not key.startswith("trees/"):
        return None
    name = key.split("/")[1]
    return f"trees/{name.removesuffix('.json')}"


def disk_usage(store: ArtifactStore) -> dict[str, int]:
    entries = list_entries(store)
    stored = sum(size for _, size, _ in store.iter_keys())
    referenced = _referenced_size(entries)
    return {
        "entries": len(entries),
        "stored_bytes": stored,
        "referenced_bytes": referenced,
        "unreferenced_bytes": max(stored - referenced, 0),
    }
