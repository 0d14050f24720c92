"""Content-addressed artifact store over fsspec: a local folder or s3://bucket/prefix.

Layout under the store root:
    objects/<sha[:2]>/<sha><suffix>   a file, named by the sha256 of its bytes
    trees/<sha>/<relpath>             a directory's files ...
    trees/<sha>.json                  ... and its listing, written LAST (the tree exists only then)
    cache/<cache key>                 Prefect result records of the stages (small manifests)

Writes are atomic (temp name + rename locally; single PUTs on S3), payload before listing.
Reads verify: a missing, truncated or altered artifact raises CorruptArtifact.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, Field

from talkflow.errors import CorruptArtifact, StoreError
from talkflow.hashing import sha256_bytes, sha256_file, sha256_stream, tree_listing
from talkflow.settings import get_settings

CACHE_DIR = "cache"


class Artifact(BaseModel):
    """A file or a directory in the store, addressed by content."""

    key: str = Field(description="Store-relative path, e.g. objects/ab/ab12...mp4")
    sha256: str
    size: int = Field(description="Bytes (all files, for a directory)")
    kind: Literal["file", "dir"] = "file"
    files: int = 1


class StageResult(BaseModel):
    """What a stage task returns and Prefect caches: a small manifest, never the data."""

    # stage, version, namespace and versions are filled in by `stage`
    stage: str = Field("", description="The stage that made this result (e.g. dataset, train_head).")
    version: str = Field("", description="That stage's version.")
    namespace: str | None = Field(None, description="The person or character it belongs to.")
    artifacts: dict[str, Artifact] = Field(default_factory=dict, description="Named files in the store.")
    meta: dict[str, Any] = Field(default_factory=dict, description="Small facts about the result (counts, metrics).")
    created: datetime = Field(default_factory=lambda: datetime.now(UTC), description="When it was computed.")
    versions: dict[str, str] = Field(default_factory=dict, description="Versions of the code that computed it.")

    def __getitem__(self, name: str) -> Artifact:
        return self.artifacts[name]

    @property
    def size(self) -> int:
        return sum(a.size for a in self.artifacts.values())


class ArtifactStore:
    def __init__(self, url: str, scratch: Path):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.scratch = scratch  # local copies of remote artifacts, and temp files

    # -- paths ---------------------------------------------------------------------------
    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def local_path(self, key: str) -> Path:
        """Where a verified local copy of `key` lives (in place for a local store)."""
        if self.is_local:
            return Path(self.path(key))
        return self.scratch / "fetched" / key

    # -- write ---------------------------------------------------------------------------
    def put_file(self, src: str | os.PathLike, *, suffix: str | None = None) -> Artifact:
        src = Path(src)
        sha = sha256_file(src)
        suffix = src.suffix if suffix is None else suffix
        art = Artifact(key=f"objects/{sha[:2]}/{sha}{suffix}", sha256=sha, size=src.stat().st_size)
        if not self.verify(art):
            self._upload(src, art.key)
        return art

    def put_bytes(self, data: bytes, *, suffix: str = "") -> Artifact:
        tmp = self._tmp_file()
        tmp.write_bytes(data)
        try:
            return self.put_file(tmp, suffix=suffix)
        finally:
            tmp.unlink(missing_ok=True)

    def put_dir(self, src: str | os.PathLike) -> Artifact:
        """Upload a directory: every file first, its listing last."""
        src = Path(src)
        files = sorted(p for p in src.rglob("*") if p.is_file())
        if not files:
            raise StoreError(f"refusing to store an empty directory: {src}")
        entries = [(p.relative_to(src).as_posix(), sha256_file(p), p.stat().st_size) for p in files]
        listing = tree_listing(entries)
        sha = sha256_bytes(listing.encode())
        art = Artifact(
            key=f"trees/{sha}",
            sha256=sha,
            size=sum(e[2] for e in entries),
            kind="dir",
            files=len(entries),
        )
        if self.verify(art):
            return art
        for p, (rel, _, _) in zip(files, entries):
            self._upload(p, f"{art.key}/{rel}")
        self._write_text(f"{art.key}.json", json.dumps({"sha256": sha, "listing": listing}))
        return art

    def _upload(self, src: Path, key: str) -> None:
        dest = self.path(key)
        if self.is_local:
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{dest}.tmp-{uuid.uuid4().hex}"
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)  # atomic on one filesystem
        else:
            self.fs.put_file(str(src), dest)  # one PUT: visible whole or not at all

    def write_text(self, key: str, text: str) -> None:
        """Write a small document (a pointer, a registry entry) at a fixed key, atomically."""
        self._write_text(key, text)

    def read_text(self, key: str) -> str | None:
        """The document at `key`, or None when there is none."""
        try:
            with self.fs.open(self.path(key), "rb") as f:
                return f.read().decode()
        except FileNotFoundError:
            return None

    def list_keys(self, prefix: str) -> list[str]:
        """Store-relative keys of the files under the folder `prefix`, sorted."""
        base = self.path(prefix)
        if not self.fs.exists(base):
            return []
        return sorted(path[len(self.root):].lstrip("/") for path in self.fs.find(base))

    def _write_text(self, key: str, text: str) -> None:
        tmp = self._tmp_file()
        tmp.write_text(text)
        try:
            self._upload(tmp, key)
        finally:
            tmp.unlink(missing_ok=True)

    def _tmp_file(self) -> Path:
        self.scratch.mkdir(parents=True, exist_ok=True)
        return self.scratch / f"tmp-{uuid.uuid4().hex}"

    # -- verify and read -----------------------------------------------------------------
    def verify(self, art: Artifact) -> bool:
        """True when the artifact is complete and matches its checksum.

        Local store: sha256 of every byte (memoised on file stat). S3: the listing and every
        object's size (single-PUT objects cannot be half-written); bytes are hashed on fetch.
        """
        try:
            if art.kind == "file":
                return self._verify_file(art.key, art.sha256, art.size)
            listing = self._tree_entries(art)
            return all(
                self._verify_file(f"{art.key}/{rel}", sha, size) for rel, sha, size in listing
            )
        except (FileNotFoundError, CorruptArtifact, ValueError, KeyError):
            return False

    def _verify_file(self, key: str, sha: str, size: int) -> bool:
        if self.is_local:
            p = Path(self.path(key))
            return p.is_file() and p.stat().st_size == size and sha256_file(p) == sha
        return self.fs.exists(self.path(key)) and self.fs.size(self.path(key)) == size

    def _tree_entries(self, art: Artifact) -> list[tuple[str, str, int]]:
        with self.fs.open(self.path(f"{art.key}.json"), "rb") as f:
            doc = json.loads(f.read())
        listing: str = doc["listing"]
        if sha256_bytes(listing.encode()) != art.sha256:
            raise CorruptArtifact(f"tree listing of {art.key} does not match its checksum")
        entries = []
        for line in listing.splitlines():
            rel, sha, size = line.split("\t")
            entries.append((rel, sha, int(size)))
        return entries

    def fetch(self, art: Artifact) -> Path:
        """A local path holding the artifact's verified content; raises CorruptArtifact."""
        if self.is_local:
            if not self.verify(art):
                raise CorruptArtifact(
                    f"artifact {art.key} is missing or does not match its sha256; "
                    "rerun the flow to recompute it (`talkflow cache verify` lists such entries)"
                )
            return self.local_path(art.key)
        dest = self.local_path(art.key)
        if art.kind == "file":
            self._download(art.key, art.sha256, dest)
        else:
            for rel, sha, _ in self._tree_entries(art):
                self._download(f"{art.key}/{rel}", sha, dest / rel)
        return dest

    def _download(self, key: str, sha: str, dest: Path) -> None:
        if dest.is_file() and sha256_file(dest) == sha:
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{dest.name}.tmp-{uuid.uuid4().hex}")
        try:
            self.fs.get_file(self.path(key), str(tmp))
        except FileNotFoundError as exc:
            raise CorruptArtifact(f"artifact {key} is missing from {self.url}") from exc
        if sha256_file(tmp) != sha:
            tmp.unlink(missing_ok=True)
            raise CorruptArtifact(f"artifact {key} in {self.url} does not match its sha256")
        os.replace(tmp, dest)

    def read_bytes(self, art: Artifact) -> bytes:
        with self.fs.open(self.path(art.key), "rb") as f:
            data = f.read()
        if sha256_stream([data]) != art.sha256:
            raise CorruptArtifact(f"artifact {art.key} does not match its sha256")
        return data

    # -- housekeeping --------------------------------------------------------------------
    def iter_keys(self) -> Iterator[tuple[str, int, float]]:
        """(key, size, mtime) of every stored payload file and tree listing."""
        for top in ("objects", "trees"):
            base = self.path(top)
            if not self.fs.exists(base):
                continue
            for path, info in self.fs.find(base, detail=True).items():
                key = path[len(self.root) :].lstrip("/")
                yield key, int(info.get("size") or 0), mtime_of(info)

    def remove(self, key: str) -> None:
        try:
            self.fs.rm(self.path(key), recursive=True)
        except FileNotFoundError:
            pass


def mtime_of(info: dict) -> float:
    """Modification time (epoch seconds) from an fsspec info dict, local or S3."""
    for name in ("mtime", "LastModified", "created"):
        value = info.get(name)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


@lru_cache(maxsize=8)
def _store_for(url: str, scratch: str) -> ArtifactStore:
    return ArtifactStore(url, Path(scratch))


def get_store() -> ArtifactStore:
    """The store the current settings name."""
    s = get_settings()
    return _store_for(s.store, str(s.work_dir / "store-scratch"))
