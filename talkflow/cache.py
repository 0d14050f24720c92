"""The stage cache: a Prefect CachePolicy keyed by content, and the `stage` task decorator.

key = <namespace>.<stage>.v<version>.<sha256 of the inputs' CONTENT and the config>, computed
by talkflow.keys (which the cache commands read without importing Prefect).

A cached result is a StageResult manifest. Reading it back verifies the artifacts it names
(`ManifestSerializer.loads`); a failed check makes Prefect treat the entry as absent, so a
corrupt or half-written entry is recomputed instead of returned. SERIALIZABLE isolation with
`SettingsLockManager` makes concurrent identical requests compute once.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from prefect import task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.serializers import Serializer

import talkflow
from talkflow.checks import NAME_RE, validate_name  # noqa: F401  (re-exported)
from talkflow.errors import CorruptArtifact, DiskFull, InputError
from talkflow.keys import NO_NAMESPACE, cache_key, fingerprint, parse_key  # noqa: F401  (re-exported)
from talkflow.locks import SettingsLockManager
from talkflow.settings import get_settings
from talkflow.store import CACHE_DIR, StageResult, disk_full, get_store

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class ContentCachePolicy(CachePolicy):
    def compute_key(self, task_ctx: TaskRunContext, inputs, flow_parameters, **kwargs) -> str:
        t = task_ctx.task
        key = cache_key(t.name, t.version or "0", inputs)
        _record_on_task_run(task_ctx, key)
        return key


def _record_on_task_run(task_ctx: TaskRunContext, key: str) -> None:
    """Put the key on the task run record, so the UI's task run page shows it.

    Prefect 3.8.8 never fills `TaskRun.cache_key` itself: its engine keeps the policy's key on
    the transaction only. The server records the task run from the state-change events, whose
    payload is the client's TaskRun object, and this context holds that very object: setting
    the field here, before the run's terminal state, makes the server store it (Completed or
    Cached). Lookups are unchanged: they go through the transaction's key in the result store.
    """
    run = getattr(task_ctx, "task_run", None)
    if run is not None and getattr(run, "cache_key", None) != key:
        try:
            run.cache_key = key
        except Exception:  # noqa: BLE001 - the record is for display; never fail a run over it
            pass


class ManifestSerializer(Serializer):
    """JSON for StageResult; loading verifies the artifacts, so a bad entry reads as a miss."""

    type: Literal["talkflow-manifest"] = "talkflow-manifest"

    def dumps(self, obj: StageResult) -> bytes:
        return obj.model_dump_json().encode()

    def loads(self, blob: bytes) -> StageResult:
        result = StageResult.model_validate_json(blob)
        store = get_store()
        for name, art in result.artifacts.items():
            if not store.verify(art):
                raise CorruptArtifact(f"cached {result.stage}: artifact {name!r} failed verification")
        return result


CONTENT_CACHE = ContentCachePolicy().configure(
    isolation_level="SERIALIZABLE", lock_manager=SettingsLockManager()
)


def _not_user_error(task, task_run, state) -> bool:
    """Retry transient failures only: bad input, and a full disk, fail the same way every time."""
    try:
        state.result()
    except (InputError, DiskFull):
        return False
    except Exception as exc:
        return disk_full(exc) is None
    return True


def _drop_half_written_record(task, task_run, state) -> None:
    """Failure hook: a result record the run began but could not finish (a disk that filled while
    Prefect wrote it) is removed, so no half-written entry stays in the cache."""
    key = getattr(task_run, "cache_key", None)
    if not key or parse_key(key) is None:
        return
    store = get_store()
    if not store.is_local:
        return  # one PUT on S3: whole or absent
    record = Path(store.path(f"{CACHE_DIR}/{key}"))
    try:
        json.loads(record.read_bytes())
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        record.unlink(missing_ok=True)


def journal_path() -> Path:
    return get_settings().root / "journal.jsonl"


def _computed(stage: str, version: str, fn: F) -> F:
    """Run the stage body, stamp its manifest, and journal the run.

    The journal gets one line per computed (not cached) stage run: the trace of real work.
    """
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:
            _keep_failure_unpersisted()
            full = disk_full(exc) if not isinstance(exc, DiskFull) else None
            if full is not None:  # ENOSPC from anywhere in the body: one line naming the disk
                raise full from None
            raise
        if not isinstance(out, StageResult):
            raise TypeError(f"stage {stage} must return a StageResult, not {type(out).__name__}")
        bound = signature.bind(*args, **kwargs).arguments
        out = out.model_copy(
            update={"stage": stage, "version": version, "namespace": bound.get("namespace"),
                    "versions": {"talkflow": talkflow.__version__, **out.versions}}
        )
        line = {"stage": stage, "seconds": round(time.perf_counter() - t0, 4), "pid": os.getpid(),
                "at": time.time(), "key": _current_key()}
        path = journal_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps(line) + "\n")
        except OSError as exc:
            full = disk_full(exc, path)
            if full is None:
                raise
            raise full from None
        return out

    return run  # type: ignore[return-value]


def _current_key() -> str | None:
    """The cache key of the stage run in progress (ContentCachePolicy put it on the task run)."""
    ctx = TaskRunContext.get()
    run = getattr(ctx, "task_run", None) if ctx is not None else None
    return getattr(run, "cache_key", None)


def _keep_failure_unpersisted() -> None:
    """A failed stage writes nothing: Prefect would persist the exception as the run's result,
    through the manifest serializer, which stores manifests only (and warns that it cannot)."""
    ctx = TaskRunContext.get()
    if ctx is not None:
        ctx.persist_result = False  # read once, when Prefect records the Failed state just after


# -- the warnings stages record (meta["warnings"]) --------------------------------------------------
_collectors: list[list[str]] = []


@contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """The warnings of every stage that completes (computed or cached) in this process meanwhile."""
    seen: list[str] = []
    _collectors.append(seen)
    try:
        yield seen
    finally:
        _collectors.remove(seen)


def _report_warnings(task, task_run, state) -> None:
    """Completion hook: a stage's recorded warnings become Prefect warnings of its run (in the UI),
    and reach whoever collects them (the CLI prints them after the run). Cache hits report too."""
    try:
        result = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable result is the cache's concern, not this hook's
        return
    warnings = result.meta.get("warnings") if isinstance(result, StageResult) else None
    if not warnings:
        return
    from prefect.logging.loggers import task_run_logger

    log = task_run_logger(task_run, task)
    for text in warnings:
        message = f"{task.name}: {text}"
        log.warning(message)
        for seen in _collectors:
            if message not in seen:
                seen.append(message)


def stage(name: str, version: str, *, timeout_s: float = 3600, retries: int = 2) -> Callable[[F], F]:
    """Make `fn` a cached Prefect task whose result (a StageResult) is cached by content."""

    def deco(fn: F) -> F:
        return task(
            name=name,
            version=version,
            cache_policy=CONTENT_CACHE,
            cache_expiration=None,
            persist_result=True,
            result_serializer=ManifestSerializer(),
            timeout_seconds=timeout_s,
            retries=retries,
            retry_delay_seconds=[2, 10, 30][:retries] or 0,
            retry_condition_fn=_not_user_error,
            on_completion=[_report_warnings],
            on_failure=[_drop_half_written_record],
        )(_computed(name, version, fn))

    return deco


def computed_stages() -> list[dict]:
    """Stages actually computed (cache misses) since the journal began, oldest first."""
    path = journal_path()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


__all__ = [
    "CONTENT_CACHE",
    "ContentCachePolicy",
    "ManifestSerializer",
    "cache_key",
    "collect_warnings",
    "computed_stages",
    "fingerprint",
    "parse_key",
    "stage",
    "validate_name",
]
