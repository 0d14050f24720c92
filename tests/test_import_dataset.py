"""Datasets in the reference's layout, both ways: an ER-NeRF folder (as the reference's
data_utils/process.py writes it) is imported and trained on; a materialized dataset carries
OpenFace's au.csv header and the features under the reference's file name for their kind."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch

from models.face.blink import read_au45, write_au_csv
from talkflow import media
from talkflow.errors import InputError
from tasks.dataset import check_reference_folder, materialize_dataset
from tasks.registry import registered_dataset
from tests.test_ernerf import FRAMES, make_dataset

# OpenFace 2's FeatureExtraction header starts like this (", "-separated); AU45_r comes much later
OPENFACE_LEAD = ["frame", "face_id", "timestamp", "confidence", "success", "gaze_0_x", "AU01_r", "AU45_r", "AU45_c"]


def reference_folder(root):
    """The synthetic ER-NeRF dataset of test_ernerf, written as the reference writes it."""
    make_dataset(root)
    (root / "aud_feats.npy").rename(root / "aud_ds.npy")  # DeepSpeech (T, 16, 29)
    (root / "aud_feats.json").unlink()
    au = read_au45(root / "au.csv")
    with open(root / "au.csv", "w", newline="") as f:  # OpenFace: frames from 1, names with a leading space
        f.write(", ".join(OPENFACE_LEAD) + "\n")
        for i, v in enumerate(au):
            f.write(f"{i + 1}, 0, {i * 0.04:.3f}, 0.98, 1, 0.1, 0.2, {v:.2f}, 1\n")
    torch.save({"id": torch.zeros(1, 100), "exp": torch.zeros(FRAMES, 79), "euler": torch.zeros(FRAMES, 3),
                "trans": torch.zeros(FRAMES, 3), "focal": torch.tensor([150.0])}, root / "track_params.pt")
    media.write_wav(root / "aud.wav", np.zeros(16000 * FRAMES // 25, np.float32), 16000)
    return root


def test_au_csv_has_openfaces_header_and_reads_back(tmp_path):
    au = np.array([0.0, 1.25, 4.5], np.float32)
    write_au_csv(tmp_path / "au.csv", au, fps=25)
    with open(tmp_path / "au.csv", newline="") as f:
        header = next(csv.reader(f))
    assert " AU45_r" in header and header[0] == "frame"  # the column name the reference reads
    np.testing.assert_allclose(read_au45(tmp_path / "au.csv"), au)
    (tmp_path / "bad.csv").write_text("frame, AU01_r\n1, 0.5\n")
    with pytest.raises(InputError, match="AU45_r"):
        read_au45(tmp_path / "bad.csv")


def test_missing_parts_are_named_before_any_work(tmp_path):
    root = reference_folder(tmp_path / "ref")
    assert check_reference_folder(root) == root.resolve()
    shutil.rmtree(root / "torso_imgs")
    (root / "track_params.pt").unlink()
    with pytest.raises(InputError, match="missing torso_imgs/, track_params.pt"):
        check_reference_folder(root)
    with pytest.raises(InputError, match="not a folder"):
        check_reference_folder(tmp_path / "nowhere")
    root = reference_folder(tmp_path / "ref2")
    (root / "aud_ds.npy").unlink()
    with pytest.raises(InputError, match="aud_ds.npy, aud_hu.npy, aud_eo.npy, aud.npy"):
        check_reference_folder(root)


@pytest.mark.slow
def test_import_a_reference_folder_then_train_on_it(tmp_path, journal):
    from flows.import_dataset import import_dataset_flow
    from flows.train import train_avatar
    from tasks.train_config import TrainAvatarConfig, TrainStageConfig

    root = reference_folder(tmp_path / "ref")
    dataset = import_dataset_flow(root, "imported")
    assert dataset.stage == "import_dataset" and registered_dataset("imported") == dataset
    assert dataset.meta["n_frames"] == FRAMES and dataset.meta["features"]["kind"] == "deepspeech"
    n = journal.count("import_dataset")
    assert import_dataset_flow(root, "imported") == dataset and journal.count("import_dataset") == n  # cached

    # the materialized folder is the reference's layout again
    out = materialize_dataset(dataset, tmp_path / "out", copy=True)
    np.testing.assert_array_equal(np.load(out / "aud_ds.npy"), np.load(root / "aud_ds.npy"))
    with open(out / "au.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert " AU45_r" in rows[0] and len(rows) == FRAMES + 1
    np.testing.assert_allclose(read_au45(out / "au.csv"), read_au45(root / "au.csv"))

    quick = TrainStageConfig(steps=5, rays_per_batch=256, val_frames=1, checkpoint_every=100)
    record = train_avatar("imported", TrainAvatarConfig(model="small", head=quick), stage="head")
    assert record.dataset == dataset and record.head.meta["steps"] == 5
