"""Content hashing: files, directory trees and configs, all sha256 hex digests."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

CHUNK = 1 << 20

# (path, size, mtime_ns, inode) -> sha256: a file is re-hashed only when its stat changes.
_FILE_MEMO: dict[tuple[str, int, int, int], str] = {}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_stream(chunks: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a local file's bytes, memoised on its stat signature within the process."""
    st = os.stat(path)
    sig = (os.fspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if (digest := _FILE_MEMO.get(sig)) is not None:
        return digest
    with open(path, "rb") as f:
        digest = sha256_stream(iter(lambda: f.read(CHUNK), b""))
    _FILE_MEMO[sig] = digest
    return digest


def tree_listing(entries: Iterable[tuple[str, str, int]]) -> str:
    """Canonical text of a directory: one 'relpath<TAB>sha256<TAB>size' line per file, sorted."""
    return "".join(f"{rel}\t{sha}\t{size}\n" for rel, sha, size in sorted(entries))


def sha256_tree(path: str | os.PathLike) -> str:
    """sha256 of a local directory's content (relative names and file bytes, not mtimes)."""
    root = Path(path)
    entries = [
        (p.relative_to(root).as_posix(), sha256_file(p), p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file()
    ]
    return sha256_bytes(tree_listing(entries).encode())


def sha256_path(path: str | os.PathLike) -> str:
    return sha256_tree(path) if Path(path).is_dir() else sha256_file(path)


def canonical_json(value: Any) -> str:
    """Stable JSON: sorted keys, no whitespace; pydantic models by their JSON dump."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def config_hash(value: Any) -> str:
    return sha256_bytes(canonical_json(value).encode())


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return {"__model__": type(value).__name__, **value.model_dump(mode="json")}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 25.0 and 25 are the same config
    return value
