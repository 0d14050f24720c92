"""The artifact store on S3 (moto's server, real S3 protocol through s3fs)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from talkflow.errors import CorruptArtifact
from talkflow.store import ArtifactStore


def make_tree(root: Path) -> Path:
    (root / "tree" / "sub").mkdir(parents=True)
    (root / "tree" / "a.txt").write_text("alpha")
    (root / "tree" / "sub" / "b.bin").write_bytes(uuid.uuid4().bytes)
    return root / "tree"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return ArtifactStore(str(tmp_path / "store"), tmp_path / "scratch")
    bucket = request.getfixturevalue("s3_bucket")
    return ArtifactStore(f"s3://{bucket}/talkflow", tmp_path / "scratch")


def test_round_trip_file_and_tree(store, tmp_path):
    f = tmp_path / "clip.wav"
    f.write_bytes(uuid.uuid4().bytes * 100)
    art = store.put_file(f)
    assert art.key.endswith(".wav") and art.size == 1600 and store.verify(art)
    assert store.fetch(art).read_bytes() == f.read_bytes()
    assert store.put_file(f) == art  # same content, same address

    tree = store.put_dir(make_tree(tmp_path))
    assert tree.kind == "dir" and tree.files == 2 and store.verify(tree)
    local = store.fetch(tree)
    assert (local / "a.txt").read_text() == "alpha"
    assert (local / "sub" / "b.bin").read_bytes() == (tmp_path / "tree/sub/b.bin").read_bytes()


def test_missing_listing_or_object_fails_verification(store, tmp_path):
    tree = store.put_dir(make_tree(tmp_path))
    store.remove(f"{tree.key}.json")
    assert not store.verify(tree)
    f = tmp_path / "x.bin"
    f.write_bytes(b"payload")
    art = store.put_file(f)
    store.remove(art.key)
    assert not store.verify(art)
    with pytest.raises(CorruptArtifact):
        store.fetch(art)


def test_s3_altered_object_is_caught_on_fetch(s3_bucket, tmp_path):
    store = ArtifactStore(f"s3://{s3_bucket}/p", tmp_path / "scratch")
    f = tmp_path / "x.bin"
    f.write_bytes(b"0123456789")
    art = store.put_file(f)
    with store.fs.open(store.path(art.key), "wb") as out:
        out.write(b"9876543210")  # same size: only the checksum can tell
    with pytest.raises(CorruptArtifact, match="sha256"):
        store.fetch(art)


@pytest.mark.slow
def test_cross_process_hit_through_s3(s3_bucket, s3_server, tmp_path, run_python, journal):
    """Two 'machines' (separate data roots, one S3 store): the second hits the first's cache."""
    src = tmp_path / "input.bin"
    src.write_bytes(uuid.uuid4().bytes * 500)
    env = {"TALKFLOW_STORE_URL": f"s3://{s3_bucket}/talkflow", **s3_server}
    code = f"""
        from pathlib import Path
        from talkflow.runtime import ensure_result_storage
        from talkflow.store import get_store
        from tests.stages import reverse_flow
        ensure_result_storage()  # the CLI and deployments do this before any flow runs
        rev, length = reverse_flow(Path({str(src)!r}))
        assert get_store().fetch(rev["out"]).read_bytes() == Path({str(src)!r}).read_bytes()[::-1]
        print("RESULT", rev["out"].sha256, length.meta["length"])
    """
    root_a, root_b = tmp_path / "machine-a", tmp_path / "machine-b"
    out_a = run_python(code, data_root=root_a, env=env)
    out_b = run_python(code, data_root=root_b, env=env)
    assert out_a.splitlines()[-1] == out_b.splitlines()[-1]
    assert journal.count("reverse", root=root_a) == 1
    assert journal.count("reverse", root=root_b) == 0  # machine B did no work
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    assert any(".reverse.v1." in p for p in fs.find(f"{s3_bucket}/talkflow/cache"))
