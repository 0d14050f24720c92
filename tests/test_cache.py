"""The stage cache: content keys, hits in new processes, corruption, concurrency, S3."""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from talkflow.cache import cache_key, validate_name
from talkflow.cache_admin import list_entries
from talkflow.errors import InputError
from talkflow.store import CACHE_DIR, get_store
from tests.stages import ReverseConfig, reverse_flow, reverse_twice_concurrently

FLOW_SNIPPET = """
    from pathlib import Path
    from tests.stages import ReverseConfig, reverse_flow
    rev, length = reverse_flow(Path({src!r}), ReverseConfig(delay_s={delay}))
    print("RESULT", rev.artifacts["out"].sha256, length.meta["length"])
"""


def unique_input(tmp_path: Path, name: str = "input.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(uuid.uuid4().bytes * 1000)  # content no other test shares
    return path


def test_key_follows_content_not_path(tmp_path):
    a = unique_input(tmp_path, "a.bin")
    b = tmp_path / "sub" / "renamed.mp4"
    b.parent.mkdir()
    shutil.copy(a, b)
    cfg = ReverseConfig()
    assert cache_key("reverse", "1", {"src": a, "config": cfg}) == cache_key(
        "reverse", "1", {"src": b, "config": cfg}
    )
    data = bytearray(b.read_bytes())
    data[len(data) // 2] ^= 1  # one byte
    b.write_bytes(bytes(data))
    assert cache_key("reverse", "1", {"src": a, "config": cfg}) != cache_key(
        "reverse", "1", {"src": b, "config": cfg}
    )
    # config fields, stage versions and namespaces all separate keys
    keys = {
        cache_key("reverse", "1", {"src": a, "config": ReverseConfig(repeat=2)}),
        cache_key("reverse", "2", {"src": a, "config": cfg}),
        cache_key("reverse", "1", {"src": a, "config": cfg, "namespace": "alice"}),
        cache_key("reverse", "1", {"src": a, "config": cfg}),
    }
    assert len(keys) == 4


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "..", " x", "x" * 65])
def test_namespace_cannot_escape(bad):
    with pytest.raises(InputError):
        validate_name(bad)


def test_hit_skips_work_and_upstream_change_flows_down(tmp_path, journal):
    src = unique_input(tmp_path)
    before = journal.count("reverse"), journal.count("length")
    rev1, len1 = reverse_flow(src)
    rev2, len2 = reverse_flow(src)
    assert rev1.artifacts == rev2.artifacts and len1.meta == len2.meta
    assert (journal.count("reverse"), journal.count("length")) == (before[0] + 1, before[1] + 1)
    assert get_store().fetch(rev1["out"]).read_bytes() == src.read_bytes()[::-1]
    # a config change recomputes the stage and, through its new output, the one after it
    reverse_flow(src, ReverseConfig(repeat=2))
    assert (journal.count("reverse"), journal.count("length")) == (before[0] + 2, before[1] + 2)


@pytest.mark.slow
def test_hit_in_new_process_renamed_file_and_moved_data_root(tmp_path, journal, run_python):
    src = unique_input(tmp_path)
    out1 = run_python(FLOW_SNIPPET.format(src=str(src), delay=0))
    computed = journal.count("reverse")
    moved = tmp_path / "elsewhere" / "renamed.dat"
    moved.parent.mkdir()
    src.rename(moved)
    out2 = run_python(FLOW_SNIPPET.format(src=str(moved), delay=0))
    assert out1.splitlines()[-1] == out2.splitlines()[-1]
    assert journal.count("reverse") == computed  # the work did not run again

    # the whole data root (store included) copied elsewhere still hits
    new_root = tmp_path / "moved-root"
    shutil.copytree(get_store().root, new_root / "store")
    out3 = run_python(FLOW_SNIPPET.format(src=str(moved), delay=0), data_root=new_root)
    assert out3.splitlines()[-1] == out1.splitlines()[-1]
    assert journal.count("reverse", root=new_root) == 0


def test_corrupt_payload_is_recomputed(tmp_path, journal):
    src = unique_input(tmp_path)
    rev, _ = reverse_flow(src)
    n = journal.count("reverse")
    obj = Path(get_store().path(rev["out"].key))
    data = bytearray(obj.read_bytes())
    data[0] ^= 0xFF  # same size, one byte altered
    obj.write_bytes(bytes(data))
    rev2, _ = reverse_flow(src)
    assert journal.count("reverse") == n + 1
    assert get_store().verify(rev2["out"])
    assert get_store().fetch(rev2["out"]).read_bytes() == src.read_bytes()[::-1]


def test_half_written_tree_and_record_are_misses(tmp_path, journal):
    src = unique_input(tmp_path)
    rev, _ = reverse_flow(src)
    store = get_store()
    # a tree whose listing never got written (a crash mid-upload) does not exist
    os.remove(store.path(f"{rev['tree'].key}.json"))
    assert not store.verify(rev["tree"])
    n = journal.count("reverse")
    reverse_flow(src)
    assert journal.count("reverse") == n + 1
    # a truncated cache record is a miss too
    records = sorted(Path(store.path(CACHE_DIR)).glob("_.reverse.*"), key=os.path.getmtime)
    records[-1].write_bytes(records[-1].read_bytes()[:20])
    reverse_flow(src)
    assert journal.count("reverse") == n + 2


def test_failed_stage_caches_nothing(tmp_path, journal):
    missing = tmp_path / "nope.bin"
    before = {e.key for e in list_entries(get_store())}
    with pytest.raises(InputError, match="does not exist"):
        reverse_flow(missing)
    assert {e.key for e in list_entries(get_store())} == before


def test_concurrent_threads_compute_once(tmp_path, journal):
    src = unique_input(tmp_path)
    n = journal.count("reverse")
    a, b = reverse_twice_concurrently(src, ReverseConfig(delay_s=1.0))
    assert a.artifacts == b.artifacts
    assert journal.count("reverse") == n + 1


@pytest.mark.slow
@pytest.mark.parametrize("locks", ["file", "redis"])
def test_concurrent_processes_compute_once(tmp_path, journal, run_python, locks):
    src = unique_input(tmp_path)
    env = {"TALKFLOW_REDIS_URL": "redis://127.0.0.1:6379/0"} if locks == "redis" else {}
    n = journal.count("reverse")
    procs = [run_python(FLOW_SNIPPET.format(src=str(src), delay=3.0), env=env, background=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0].splitlines()[-1] == outs[1].splitlines()[-1]
    assert journal.count("reverse") == n + 1


def test_flock_manager_excludes_threads(tmp_path):
    from talkflow.locks import FlockLockManager

    manager = FlockLockManager(tmp_path / "locks")
    inside, overlaps, done = [0], [0], []

    def worker(i: int) -> None:
        holder = f"h{i}"
        assert manager.acquire_lock("k", holder, acquire_timeout=30)
        inside[0] += 1
        overlaps[0] = max(overlaps[0], inside[0])
        time.sleep(0.01)
        inside[0] -= 1
        manager.release_lock("k", holder)
        done.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == 16 and overlaps[0] == 1
    assert not manager.is_locked("k")
    assert manager.acquire_lock("k", "a")
    assert not manager.acquire_lock("k", "b", acquire_timeout=0.2)
    with pytest.raises(ValueError):
        manager.release_lock("k", "b")
