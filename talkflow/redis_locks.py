"""Cache locks across hosts: prefect-redis's lock manager with leases (see talkflow.locks)."""

from __future__ import annotations

import threading

from prefect_redis.locking import RedisLockManager
from redis.exceptions import LockError, RedisError
from redis.lock import Lock


class LeasedRedisLockManager(RedisLockManager):
    """prefect-redis's lock manager with leases: see the module's docstring."""

    def __init__(self, connection_url: str, lease_s: float):
        super().__init__(connection_url=connection_url)
        self.lease_s = lease_s
        self._renewers: dict[str, threading.Event] = {}

    def acquire_lock(self, key, holder, acquire_timeout=None, hold_timeout=None) -> bool:
        got = super().acquire_lock(key, holder, acquire_timeout, hold_timeout or self.lease_s)
        if got and hold_timeout is None:
            self._renew(key, holder)
        return got

    async def aacquire_lock(self, key, holder, acquire_timeout=None, hold_timeout=None) -> bool:
        got = await super().aacquire_lock(key, holder, acquire_timeout, hold_timeout or self.lease_s)
        if got and hold_timeout is None:
            self._renew(key, holder)
        return got

    def release_lock(self, key, holder) -> None:
        stop = self._renewers.pop(key, None)
        if stop is not None:
            stop.set()
        super().release_lock(key, holder)

    def _renew(self, key: str, holder: str) -> None:
        """Reset the lock's time to live to a full lease every third of a lease, until released."""
        lock = Lock(self.client, self._lock_name_for_key(key), timeout=self.lease_s, thread_local=False)
        lock.local.token = holder.encode()
        stop = threading.Event()
        self._renewers[key] = stop

        def renew() -> None:
            while not stop.wait(self.lease_s / 3):
                try:
                    lock.reacquire()
                except LockError:  # no longer ours (released meanwhile, or expired)
                    return
                except RedisError:  # Redis unreachable for a moment: try again next time
                    continue

        threading.Thread(target=renew, name=f"lock-lease-{key[:16]}", daemon=True).start()
