"""Faults: a failing S3 store (errors, dropped connections, slow answers), a disk that fills,
prune beside a writer, killed runs, a restarted server. The slow tests each inject one fault of a
kind through bench/faults.py's machinery (real server, worker, flows) and check recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from talkflow.errors import DiskFull
from talkflow.store import ArtifactStore
from tests.faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def proxy(s3_server):
    p = FaultProxy(s3_server["AWS_ENDPOINT_URL"]).start()
    yield p
    p.stop()


@pytest.fixture
def s3_store_via_proxy(proxy, s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # one per endpoint: this test's proxy, not an earlier one
    store = ArtifactStore(f"s3://{s3_bucket}/faults-{uuid.uuid4().hex[:6]}", tmp_path / "scratch")
    store.fs.invalidate_cache()
    return store


@pytest.mark.parametrize("kind,count", [("error", 4), ("drop", 3), ("slow", 3)])
def test_s3_faults_are_retried_and_nothing_is_lost(kind, count, proxy, s3_store_via_proxy, tmp_path):
    store = s3_store_via_proxy
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(50_000))
    (tmp_path / "tree").mkdir()
    for i in range(3):
        (tmp_path / "tree" / f"{i}.bin").write_bytes(os.urandom(1000 + i))
    proxy.inject(kind, count, delay_s=0.5)
    art = store.put_file(src)
    tree = store.put_dir(tmp_path / "tree")
    assert proxy.faulted[kind] == count and proxy.pending() == 0
    proxy.inject(kind, count, delay_s=0.5)
    store.fs.invalidate_cache()
    assert store.verify(art) and store.verify(tree)
    assert store.fetch(art).read_bytes() == src.read_bytes()
    assert (store.fetch(tree) / "2.bin").read_bytes() == (tmp_path / "tree" / "2.bin").read_bytes()


@pytest.mark.slow  # ~1 min of backoff
def test_a_store_that_keeps_failing_raises_after_its_retries(proxy, s3_store_via_proxy, tmp_path, monkeypatch):
    import talkflow.store as store_mod

    monkeypatch.setattr(store_mod, "TRANSIENT_BACKOFF_S", 0.01)
    monkeypatch.setattr(store_mod, "TRANSIENT_ATTEMPTS", 2)
    src = tmp_path / "x.bin"
    src.write_bytes(b"abc")
    proxy.inject("error", 1000)
    t0 = time.monotonic()
    with pytest.raises(Exception) as err:
        s3_store_via_proxy.put_file(src)
    answered = 1000 - proxy.pending()
    proxy.clear()
    assert "503" in str(err.value) or "ServiceUnavailable" in str(err.value) or "Unavailable" in str(err.value)
    # bounded by tries, not by a clock (the backoff is seconds on a quiet machine, minutes on a busy
    # one): 2 of talkflow's tries per store operation, botocore's 5 per request and s3fs's own
    # retries of some calls under them (30-42 requests answered, measured)
    assert 0 < answered <= 100, answered
    assert time.monotonic() - t0 < 600  # and it does end


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root only; skipped elsewhere)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_is_one_clear_line_and_leaves_nothing_half_written(small_disk, tmp_path):
    store = ArtifactStore(str(small_disk / "store"), small_disk / "scratch")
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(100_000))
    kept = store.put_file(small)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    with pytest.raises(DiskFull) as err:
        store.put_file(big)
    message = str(err.value)
    assert "\n" not in message and str(small_disk / "store") in message and "no space left" in message
    leftovers = [p for p in small_disk.rglob("*") if ".tmp-" in p.name or p.name.startswith("tmp-")]
    assert leftovers == []
    assert store.verify(kept)
    assert [k for k, _, _ in store.iter_keys()] == [kept.key]  # only the complete payload


def test_ffmpeg_filling_the_disk_is_disk_full_not_a_corrupt_file(small_disk, tmp_path):
    """The disk fills as ffmpeg writes the mp4's index (its trailer): ffmpeg still exits 0 and leaves
    an unreadable mp4. talkflow reads ffmpeg's words and says the disk is full."""
    from talkflow.media import mux
    from talkflow.store import disk_full

    frames = tmp_path / "frames"
    frames.mkdir()
    noise = np.random.default_rng(0)
    for i in range(2000):  # many frames: an index (moov) of ~9 KB, over two 4 KiB pages
        Image.fromarray(noise.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(frames / f"{i}.png")
    mux(frames, None, tmp_path / "ref.mp4", ext="png")
    size = (tmp_path / "ref.mp4").stat().st_size
    st = os.statvfs(small_disk)
    room = size - 4096  # the frames fit, the index does not
    ballast = -(-(st.f_bavail * st.f_frsize - room) // 4096) * 4096
    (small_disk / "ballast").write_bytes(b"\0" * ballast)
    with pytest.raises(Exception) as err:
        mux(frames, None, small_disk / "out.mp4", ext="png")
    full = disk_full(err.value)
    assert full is not None and "no space left" in str(full), repr(err.value)
    assert not (small_disk / "out.mp4").exists()
    assert [p.name for p in small_disk.iterdir()] == ["ballast"]  # no half-written mp4 left


def test_a_full_disk_without_a_file_name_names_the_data_root(tmp_path, monkeypatch):
    from talkflow.settings import get_settings
    from talkflow.store import disk_full

    monkeypatch.setenv("TALKFLOW_DATA_ROOT", str(tmp_path / "root"))
    get_settings.cache_clear()
    try:
        full = disk_full(RuntimeError("writing failed: No space left on device"))
        assert full is not None and f"the data root {tmp_path / 'root'} (" in str(full)
    finally:
        get_settings.cache_clear()


def test_prune_spares_a_payload_a_running_stage_has_just_written_again(tmp_path):
    from talkflow.cache_admin import sweep

    store = ArtifactStore(str(tmp_path / "store"), tmp_path / "scratch")
    src = tmp_path / "a.bin"
    src.write_bytes(b"payload " * 100)
    art = store.put_file(src)
    old = time.time() - 7200
    os.utime(store.path(art.key), (old, old))  # an old, unreferenced payload ...
    assert store.put_file(src) == art  # ... that a running stage writes again (a dedup hit)
    assert sweep(store, grace_s=3600) == 0 and store.verify(art)
    os.utime(store.path(art.key), (old, old))
    assert sweep(store, grace_s=3600) > 0 and not store.verify(art)  # nobody wrote it: swept


# -- one fault of each kind through the bench (a server, a worker, real flows) ----------------------
FAULT_KINDS = ["kill-flow-run", "kill-worker", "server-restart", "s3-error", "s3-drop", "s3-slow", "disk-full",
               "prune"]


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_one_fault_of_each_kind_recovered_and_verify_clean(tmp_path):
    """Each kind once, in turn, on one set of services (a server, a worker, moto, Redis)."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "faults.py"), "--quick", "--each",
                          "--kinds", ",".join(FAULT_KINDS), "--faults", str(len(FAULT_KINDS)), "--seed", "7",
                          "--time-limit-s", "1800", "--workdir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=2300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["faults_injected"] == {kind: 1 for kind in FAULT_KINDS}, report
    assert report["entries_lost_or_corrupt"] == 0 and report["verify_clean"], report
    assert report["stages_recomputed_needlessly"] == 0 and report["truncated_outputs"] == 0, report
    assert report["runs_unrecovered"] == 0 and report["unclear_errors"] == 0, report["errors"]
