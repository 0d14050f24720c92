"""What concurrent preprocessing tasks share in one process: lock managers, torch's thread count."""

from __future__ import annotations

import threading
import time

import torch


def test_one_flock_manager_per_directory_under_racing_threads(tmp_path):
    """Threads asking for the manager at once get the same one, so a release finds its acquire."""
    from talkflow import locks

    barrier = threading.Barrier(8)
    got: list[object] = []

    def ask() -> None:
        barrier.wait()
        got.append(locks._flock(str(tmp_path / "locks")))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(m is got[0] for m in got)


def test_settings_lock_manager_serialises_threads(tmp_path, monkeypatch):
    """Acquire in one call, release in another, from 12 threads on 3 keys: no overlap per key,
    every release matched, nothing left locked."""
    from talkflow import locks

    monkeypatch.setattr(locks, "get_settings", lambda: type("S", (), {"redis_url": None,
                                                                       "locks_dir": tmp_path / "l"})())
    manager = locks.SettingsLockManager()
    inside = {k: 0 for k in "abc"}
    worst = {k: 0 for k in "abc"}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        key = "abc"[i % 3]
        try:
            for _ in range(3):
                assert manager.acquire_lock(key, f"h{i}", acquire_timeout=60)
                inside[key] += 1
                worst[key] = max(worst[key], inside[key])
                time.sleep(0.002)
                inside[key] -= 1
                manager.release_lock(key, f"h{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and worst == {k: 1 for k in "abc"}
    assert not any(manager.is_locked(k) for k in "abc")


def test_cpu_threads_restores_after_overlapping_blocks():
    """Blocks that overlap in time across threads leave torch's setting as it was before."""
    from models.face3d.fit import cpu_threads

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def first() -> None:
        with cpu_threads(1):
            first_in.set()
            second_in.wait(10)
            seen.append(torch.get_num_threads())
        first_out.set()

    def second() -> None:
        first_in.wait(10)
        with cpu_threads(1):
            second_in.set()
            first_out.wait(10)
            seen.append(torch.get_num_threads())  # the first block has ended: still 1 here

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = torch.get_num_threads()
    torch.set_num_threads(before)
    assert seen == [1, 1] and after == 2


HOLD_AND_WAIT = """
import sys, time
from talkflow.locks import LeasedRedisLockManager
m = LeasedRedisLockManager("redis://127.0.0.1:6379/0", lease_s=1.5)
assert m.acquire_lock(sys.argv[1], "killed-holder")
print("held", flush=True)
time.sleep(600)
"""


def test_redis_lock_is_renewed_while_held_and_expires_after_its_holder_is_killed():
    """A lock outlives many leases while its holder lives; SIGKILL the holder (a run's container
    killed mid-stage) and the next caller gets it within about one lease, not never."""
    import subprocess
    import sys
    import uuid

    from talkflow.locks import LeasedRedisLockManager

    key = f"ci-lease-{uuid.uuid4().hex}"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_WAIT, key], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        other = LeasedRedisLockManager("redis://127.0.0.1:6379/0", lease_s=1.5)
        assert not other.acquire_lock(key, "second", acquire_timeout=4.0)  # renewed past 2 leases
        holder.kill()
        holder.wait(10)
        t0 = time.monotonic()
        assert other.acquire_lock(key, "second", acquire_timeout=10.0)
        assert time.monotonic() - t0 < 1.5 + 0.5
        time.sleep(2.0)  # ours renews too: still held after more than a lease
        assert other.is_lock_holder(key, "second") and other.is_locked(key)
        other.release_lock(key, "second")
        assert not other.is_locked(key)
    finally:
        holder.kill()
        holder.wait(10)
