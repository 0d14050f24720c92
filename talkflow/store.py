"""Content-addressed artifact store over fsspec: a local folder or s3://bucket/prefix.

Layout under the store root:
    objects/<sha[:2]>/<sha><suffix>   a file, named by the sha256 of its bytes
    trees/<sha>/<relpath>             a directory's files ...
    trees/<sha>.json                  ... and its listing, written LAST (the tree exists only then)
    cache/<cache key>                 Prefect result records of the stages (small manifests)

Writes are atomic (temp name + rename locally; single PUTs on S3), payload before listing.
Reads verify: a missing, truncated or altered artifact raises CorruptArtifact.

Faults: S3 calls retry transient errors (5xx, dropped connections, timeouts) with backoff, in
botocore (S3_OPTIONS) and around each store operation (`transient`); a full local disk raises
DiskFull naming the path, with the temporary file removed. A write that finds its content
already stored refreshes the payload's time, so `cache prune` (which spares young payloads)
never sweeps what a running stage has just written.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, Field

from talkflow.errors import CorruptArtifact, DiskFull, StoreError
from talkflow.hashing import sha256_bytes, sha256_file, sha256_stream, tree_listing
from talkflow.settings import get_settings

CACHE_DIR = "cache"
REFRESH_AFTER_S = 600.0  # a dedup hit on a payload older than this refreshes its time (see module doc)
# botocore's own retries (standard mode: 5xx, throttling, connection errors; exponential backoff);
# s3fs adds 5 of its own for timeouts and broken answers
S3_OPTIONS: dict[str, Any] = {
    "config_kwargs": {"retries": {"max_attempts": 5, "mode": "standard"},
                      "connect_timeout": 5, "read_timeout": 30},
}
TRANSIENT_ATTEMPTS = 3  # talkflow's tries of a whole store operation, each with botocore's 5 (~10 s)
TRANSIENT_BACKOFF_S = 1.0  # first wait between them; doubled each time

log = logging.getLogger(__name__)


def _is_transient(exc: BaseException) -> bool:
    """A store error worth retrying: a network fault or a 5xx answer, not a missing key or a full disk."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, CorruptArtifact, DiskFull)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    name = type(exc).__name__
    if name in {"EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
                "ClientPayloadError", "ServerDisconnectedError", "ClientOSError", "FSTimeoutError",
                "ResponseParserError", "IncompleteRead", "HTTPClientError"}:
        return True
    text = str(exc)
    return any(code in text for code in ("InternalError", "ServiceUnavailable", "SlowDown", "(500)", "(502)",
                                         "(503)", "(504)", "Bad Gateway", "Service Unavailable"))


def transient(what: str, fn, *args, **kwargs):
    """fn(*args, **kwargs), retried with exponential backoff while it fails transiently."""
    delay = TRANSIENT_BACKOFF_S
    for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            full = disk_full(exc)
            if full is not None:
                raise full from exc
            if attempt == TRANSIENT_ATTEMPTS or not _is_transient(exc):
                raise
            log.warning("store: %s failed (%s), retry %d in %.1f s", what, exc, attempt, delay)
            time.sleep(delay)
            delay *= 2


def disk_full(exc: BaseException, path: str | os.PathLike | None = None) -> DiskFull | None:
    """The one-line DiskFull for an exception caused by a full disk (errno ENOSPC or ffmpeg's words)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, DiskFull):
            return seen
        if (isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT)) or \
                "No space left on device" in str(seen):
            # the file that did not fit, else the data root (where the work and the local store are)
            named = path or getattr(seen, "filename", None)
            where = named or f"the data root {get_settings().root}"
            free = _free_bytes(named or get_settings().root)
            return DiskFull(f"no space left on the disk holding {where}"
                            f"{f' ({free // 1024} KiB free)' if free is not None else ''}: free space there "
                            "(e.g. `talkflow cache prune --max-size ...`) or move TALKFLOW_DATA_ROOT / "
                            "TALKFLOW_STORE_URL to a bigger disk, then rerun; nothing half-written was kept")
        seen = seen.__cause__ or seen.__context__
    return None


def _free_bytes(path: str | os.PathLike) -> int | None:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


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
        options = {}
        if self.url.startswith(("s3://", "s3a://")):
            # the endpoint among the options: fsspec reuses a filesystem made with the same options, and one
            # made for another AWS_ENDPOINT_URL (a proxy, a test's server) would answer for this store
            options = {**S3_OPTIONS, "endpoint_url": os.environ.get("AWS_ENDPOINT_URL") or None}
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **options)
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
        else:
            self._refresh(src, art.key)
        return art

    def put_bytes(self, data: bytes, *, suffix: str = "") -> Artifact:
        tmp = self._tmp_file()
        try:
            tmp.write_bytes(data)
            return self.put_file(tmp, suffix=suffix)
        except OSError as exc:
            full = disk_full(exc, tmp)
            if full is None:
                raise
            raise full from None
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
            for p, (rel, _, _) in zip(files, entries):
                self._refresh(p, f"{art.key}/{rel}")
            self._refresh(None, f"{art.key}.json")
            return art
        for p, (rel, _, _) in zip(files, entries):
            self._upload(p, f"{art.key}/{rel}")
        self._write_text(f"{art.key}.json", json.dumps({"sha256": sha, "listing": listing}))
        return art

    def _upload(self, src: Path, key: str) -> None:
        dest = self.path(key)
        if self.is_local:
            tmp = f"{dest}.tmp-{uuid.uuid4().hex}"
            try:
                Path(dest).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, tmp)
                os.replace(tmp, dest)  # atomic on one filesystem
            except OSError as exc:
                Path(tmp).unlink(missing_ok=True)  # nothing half-written stays
                full = disk_full(exc, dest)
                if full is None:
                    raise
                raise full from None
        else:
            transient(f"upload of {key}", self.fs.put_file, str(src), dest)  # one PUT: whole or not at all

    def _refresh(self, src: Path | None, key: str) -> None:
        """Make an existing payload young again (see the module doc): its mtime locally; on S3
        (no touch) a re-upload of the same bytes, only when it is older than REFRESH_AFTER_S."""
        dest = self.path(key)
        if self.is_local:
            try:
                os.utime(dest)
            except OSError:
                pass
            return
        info = transient(f"stat of {key}", self.fs.info, dest)
        if time.time() - mtime_of(info) < REFRESH_AFTER_S:
            return
        if src is None:
            with transient(f"read of {key}", self.fs.open, dest, "rb") as f:
                data = f.read()
            tmp = self._tmp_file()
            tmp.write_bytes(data)
            try:
                self._upload(tmp, key)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            self._upload(src, key)

    def write_text(self, key: str, text: str) -> None:
        """Write a small document (a pointer, a registry entry) at a fixed key, atomically."""
        self._write_text(key, text)

    def read_text(self, key: str) -> str | None:
        """The document at `key`, or None when there is none."""
        def read() -> bytes:
            with self.fs.open(self.path(key), "rb") as f:
                return f.read()

        try:
            return transient(f"read of {key}", read).decode()
        except FileNotFoundError:
            return None

    def list_keys(self, prefix: str) -> list[str]:
        """Store-relative keys of the files under the folder `prefix`, sorted."""
        base = self.path(prefix)
        if not transient(f"listing of {prefix}", self.fs.exists, base):
            return []
        found = transient(f"listing of {prefix}", self.fs.find, base)
        return sorted(path[len(self.root):].lstrip("/") for path in found)

    def _write_text(self, key: str, text: str) -> None:
        tmp = self._tmp_file()
        try:
            tmp.write_text(text)
            self._upload(tmp, key)
        except OSError as exc:
            full = disk_full(exc, tmp)
            if full is None:
                raise
            raise full from None
        finally:
            tmp.unlink(missing_ok=True)

    def _tmp_file(self) -> Path:
        try:
            self.scratch.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            full = disk_full(exc, self.scratch)
            if full is None:
                raise
            raise full from None
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
        try:
            return transient(f"stat of {key}", self.fs.size, self.path(key)) == size
        except FileNotFoundError:
            return False

    def _tree_entries(self, art: Artifact) -> list[tuple[str, str, int]]:
        def read() -> bytes:
            with self.fs.open(self.path(f"{art.key}.json"), "rb") as f:
                return f.read()

        doc = json.loads(transient(f"read of {art.key}.json", read))
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
        tmp = dest.with_name(f"{dest.name}.tmp-{uuid.uuid4().hex}")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            transient(f"download of {key}", self.fs.get_file, self.path(key), str(tmp))
        except FileNotFoundError as exc:
            tmp.unlink(missing_ok=True)
            raise CorruptArtifact(f"artifact {key} is missing from {self.url}") from exc
        except BaseException as exc:
            tmp.unlink(missing_ok=True)  # a partial download never stays
            full = disk_full(exc, dest) if isinstance(exc, Exception) else None
            if full is not None:
                raise full from exc
            raise
        if sha256_file(tmp) != sha:
            tmp.unlink(missing_ok=True)
            raise CorruptArtifact(f"artifact {key} in {self.url} does not match its sha256")
        os.replace(tmp, dest)

    def read_bytes(self, art: Artifact) -> bytes:
        def read() -> bytes:
            with self.fs.open(self.path(art.key), "rb") as f:
                return f.read()

        data = transient(f"read of {art.key}", read)
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
            transient(f"removal of {key}", self.fs.rm, self.path(key), recursive=True)
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
