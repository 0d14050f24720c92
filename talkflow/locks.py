"""Lock managers for Prefect's SERIALIZABLE cache isolation.

Prefect's FileSystemLockManager creates a lock file empty and then writes it, so a thread that
reads it in between fails (`EOF while parsing a value`), and a killed holder leaves its file
behind forever. `FlockLockManager` uses the kernel's advisory locks instead: every acquisition
opens its own file description, so threads of one process exclude each other just like
processes do, and a lock dies with its holder.

Across hosts, Redis (prefect-redis). Prefect takes its locks with no hold timeout, so a Redis
lock whose holder is killed (a run's container killed mid-stage) would stay forever and every
later run of that stage would wait on it. `LeasedRedisLockManager` takes each lock for a short
lease and renews it from a thread while the holder lives: a killed holder's lock expires after
at most one lease. It lives in talkflow.redis_locks, imported only when Redis is configured
(prefect-redis and redis take a fair part of a second to import).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from prefect.locking.protocol import LockManager

from talkflow.settings import get_settings

POLL_S = 0.05


class FlockLockManager(LockManager):
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._held: dict[str, tuple[str, int]] = {}  # key -> (holder, fd)
        self._mutex = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.lock"

    def _try_lock(self, key: str) -> int | None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path(key), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            os.close(fd)
            return None

    def acquire_lock(self, key, holder, acquire_timeout=None, hold_timeout=None) -> bool:
        # hold_timeout is not needed: the kernel releases the lock when its holder dies.
        if self.is_lock_holder(key, holder):
            return True
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while (fd := self._try_lock(key)) is None:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        with self._mutex:
            self._held[key] = (holder, fd)
        return True

    async def aacquire_lock(self, key, holder, acquire_timeout=None, hold_timeout=None) -> bool:
        import anyio

        return await anyio.to_thread.run_sync(
            self.acquire_lock, key, holder, acquire_timeout, hold_timeout
        )

    def release_lock(self, key, holder) -> None:
        with self._mutex:
            held = self._held.get(key)
            if held is None or held[0] != holder:
                raise ValueError(f"No lock held by {holder} for transaction with key {key}")
            del self._held[key]
        fcntl.flock(held[1], fcntl.LOCK_UN)
        os.close(held[1])

    def is_locked(self, key) -> bool:
        with self._mutex:
            if key in self._held:
                return True
        fd = self._try_lock(key)
        if fd is None:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        return False

    def is_lock_holder(self, key, holder) -> bool:
        with self._mutex:
            held = self._held.get(key)
        return held is not None and held[0] == holder

    def wait_for_lock(self, key, timeout=None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True

    async def await_for_lock(self, key, timeout=None) -> bool:
        import anyio

        return await anyio.to_thread.run_sync(self.wait_for_lock, key, timeout)


class SettingsLockManager(LockManager):
    """Delegates to Redis when TALKFLOW_REDIS_URL is set, else to file locks in the data root.

    Resolved on every call, so one cache policy object follows the current settings.
    """

    def _backend(self) -> LockManager:
        s = get_settings()
        return _redis(s.redis_url, s.lock_lease_s) if s.redis_url else _flock(str(s.locks_dir))

    def acquire_lock(self, key, holder, acquire_timeout=None, hold_timeout=None) -> bool:
        return self._backend().acquire_lock(key, holder, acquire_timeout, hold_timeout)

    async def aacquire_lock(self, key, holder, acquire_timeout=None, hold_timeout=None) -> bool:
        return await self._backend().aacquire_lock(key, holder, acquire_timeout, hold_timeout)

    def release_lock(self, key, holder) -> None:
        self._backend().release_lock(key, holder)

    def is_locked(self, key) -> bool:
        return self._backend().is_locked(key)

    def is_lock_holder(self, key, holder) -> bool:
        return self._backend().is_lock_holder(key, holder)

    def wait_for_lock(self, key, timeout=None) -> bool:
        return self._backend().wait_for_lock(key, timeout)

    async def await_for_lock(self, key, timeout=None) -> bool:
        return await self._backend().await_for_lock(key, timeout)


_MANAGERS: dict[tuple[str, str], LockManager] = {}
_MANAGERS_MUTEX = threading.Lock()


def _shared(kind: str, where: str, make) -> LockManager:
    # One manager per (kind, place) for the whole process: the holder table lives in it, so the
    # thread that releases a lock must find the very manager that acquired it (lru_cache may
    # build two when two threads ask at once).
    with _MANAGERS_MUTEX:
        if (kind, where) not in _MANAGERS:
            _MANAGERS[(kind, where)] = make()
        return _MANAGERS[(kind, where)]


def _flock(directory: str) -> FlockLockManager:
    return _shared("flock", directory, lambda: FlockLockManager(Path(directory)))


def _redis(url: str, lease_s: float) -> LockManager:
    from talkflow.redis_locks import LeasedRedisLockManager

    return _shared("redis", f"{url}#{lease_s}", lambda: LeasedRedisLockManager(url, lease_s))


def __getattr__(name: str):
    if name == "LeasedRedisLockManager":  # kept importable from here
        from talkflow.redis_locks import LeasedRedisLockManager

        return LeasedRedisLockManager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
