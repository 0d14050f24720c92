"""Managing the cache: list, du, verify, prune with garbage collection."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta

from talkflow.cache_admin import (
    disk_usage,
    list_entries,
    remove_entries,
    select_for_prune,
    sweep,
    verify_entries,
)
from talkflow.store import get_store
from tests.stages import ReverseConfig, reverse_flow


def _input(tmp_path, n=1000):
    path = tmp_path / f"{uuid.uuid4().hex}.bin"
    path.write_bytes(os.urandom(n))
    return path


def test_list_by_namespace_verify_and_prune_character(tmp_path, journal):
    store = get_store()
    rev_a, _ = reverse_flow(_input(tmp_path), namespace="alice")
    rev_b, _ = reverse_flow(_input(tmp_path), namespace="bob")
    alice = list_entries(store, "alice")
    assert [e.stage for e in alice] == ["reverse"] and alice[0].result == rev_a
    assert alice[0].size == rev_a.size > 0

    # prune one character: its entries and payloads go, the other's stay
    drop = select_for_prune(list_entries(store), namespace="alice")
    assert {e.namespace for e in drop} == {"alice"}
    remove_entries(store, drop)
    freed = sweep(store, grace_s=0)
    assert freed >= rev_a["out"].size
    assert not store.verify(rev_a["out"]) and not store.verify(rev_a["tree"])
    assert store.verify(rev_b["out"]) and store.verify(rev_b["tree"])
    assert list_entries(store, "alice") == []

    # verify finds an altered payload
    path = store.path(rev_b["out"].key)
    with open(path, "r+b") as f:
        f.write(b"\0")
    bad = verify_entries(store, list_entries(store, "bob"))
    assert [e.namespace for e in bad] == ["bob"]


def test_prune_by_size_drops_oldest_first(tmp_path):
    store = get_store()
    results = [reverse_flow(_input(tmp_path, 4000), ReverseConfig(), namespace="sized")[0]
               for _ in range(3)]
    entries = [e for e in list_entries(store, "sized") if e.stage == "reverse"]
    oldest = min(entries, key=lambda e: e.created)
    keep_two = sum(r.size for r in results[1:])
    drop = select_for_prune(entries, max_size=keep_two)
    assert [e.key for e in drop] == [oldest.key]
    assert select_for_prune(entries, max_size=10**12) == []


def test_prune_by_age_and_grace(tmp_path):
    store = get_store()
    reverse_flow(_input(tmp_path), namespace="aged")
    entries = list_entries(store, "aged")
    later = time.time() + timedelta(days=8).total_seconds()
    assert {e.key for e in select_for_prune(entries, older_than_s=7 * 86400, now=later)} == {
        e.key for e in entries
    }
    assert select_for_prune(entries, older_than_s=7 * 86400) == []
    # payloads younger than the grace period survive a sweep even when unreferenced
    orphan = store.put_bytes(os.urandom(64), suffix=".bin")
    sweep(store)
    assert store.verify(orphan)
    assert disk_usage(store)["unreferenced_bytes"] >= 64
