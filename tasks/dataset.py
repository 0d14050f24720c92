"""The ER-NeRF dataset: one manifest over the preprocessing outputs, and its folder form
(tasks.registry keeps the person -> dataset records).

The `dataset` stage writes no new payload: it checks that the parts agree (frame counts of
images, parsing, landmarks, features, poses and blinks) and lists them. `materialize_dataset`
lays the parts out as docs/dataset.md describes, with links into the store's local copies; the
features are also under the reference's name for their kind (aud_ds.npy, ...), so ER-NeRF's own
loader reads the folder. `import_dataset` does the reverse: a folder that the reference's
data_utils/process.py wrote becomes a dataset manifest that training accepts.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from models.audio.config import FeatureInfo
from models.face.blink import read_au45, write_au_csv
from talkflow.cache import stage
from talkflow.contract import FEATURE_DIMS, FEATURES, VIDEO_FPS
from talkflow.errors import InputError
from talkflow.store import StageResult, get_store
from tasks.inputs import local_file, scratch

# dataset name -> (stage result, artifact) the flow passes in
FOLDERS = {"ori_imgs": "frames", "parsing": "parsing", "gt_imgs": "gt_imgs", "torso_imgs": "torso_imgs"}
FILES = {
    "aud.wav": "audio",
    "aud_feats.npy": "feats",
    "aud_feats.json": "feats_info",
    "bc.jpg": "bc",
    "au.csv": "au",
    "track_params.pt": "track",
    "transforms_train.json": "transforms_train",
    "transforms_val.json": "transforms_val",
}


# the file name ER-NeRF's loader reads for each feature kind (nerf_triplane/provider.py); aud.npy holds
# any kind the reference has no name for (told apart by D)
REFERENCE_FEATURES = {k: s.reference_file for k, s in FEATURES.items()}


def _count_rows(path: Path) -> int:
    return int(read_au45(path).shape[0])


@stage("dataset", "1")
def assemble_dataset(
    normalized: StageResult,
    frames: StageResult,
    landmarks: StageResult,
    features: StageResult,
    parsing: StageResult,
    background: StageResult,
    composite: StageResult,
    blinks: StageResult,
    tracking: StageResult,
    namespace: str | None = None,
) -> StageResult:
    """Check that every part covers the same frames, then list the parts."""
    n = frames.meta["n_frames"]
    transforms = [json.loads(local_file(tracking[k]).read_text()) for k in ("transforms_train", "transforms_val")]
    counts = {
        "frames": n,
        "landmarks": int(np.load(local_file(landmarks["lms"]), mmap_mode="r").shape[0]),
        "audio features": int(np.load(local_file(features["feats"]), mmap_mode="r").shape[0]),
        "parsing maps": parsing["parsing"].files,
        "gt images": composite["gt_imgs"].files,
        "torso images": composite["torso_imgs"].files,
        "blinks": _count_rows(local_file(blinks["au"])),
        "poses": sum(len(t["frames"]) for t in transforms),
    }
    if len(set(counts.values())) != 1:
        raise InputError(f"the preprocessing outputs disagree on the frame count: {counts}; "
                         "rerun preprocessing (a stale input?)")
    parts = {
        "audio": normalized["audio"], "frames": frames["frames"], "lms": landmarks["lms"],
        "feats": features["feats"], "feats_info": features["info"], "parsing": parsing["parsing"],
        "bc": background["bc"], "gt_imgs": composite["gt_imgs"], "torso_imgs": composite["torso_imgs"],
        "au": blinks["au"], "track": tracking["track"], "transforms_train": tracking["transforms_train"],
        "transforms_val": tracking["transforms_val"],
    }
    return StageResult(artifacts=parts, meta={
        "n_frames": n, "size": normalized.meta["size"], "fps": normalized.meta["fps"],
        "sample_rate": normalized.meta.get("sample_rate"),
        "focal": tracking.meta.get("focal"), "features": features.meta,
        "n_train": len(transforms[0]["frames"]), "n_val": len(transforms[1]["frames"]),
        "parsing": parsing.meta.get("method"), "tracking": tracking.meta.get("model"),
    })


def materialize_dataset(dataset: StageResult, dest: Path, *, copy: bool = False) -> Path:
    """Write the dataset folder at `dest` (symlinks into the store's local copies, or copies)."""
    from models.face.video_landmarks import write_lms

    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    store = get_store()

    def place(src: Path, target: Path) -> None:
        if copy:
            shutil.copyfile(src, target)
        else:
            os.symlink(src.resolve(), target)

    for name, part in FILES.items():
        place(store.fetch(dataset[part]), dest / name)
    kind = (dataset.meta.get("features") or {}).get("kind")
    if kind in REFERENCE_FEATURES:
        place(store.fetch(dataset["feats"]), dest / REFERENCE_FEATURES[kind])
    for name, part in FOLDERS.items():
        src = store.fetch(dataset[part])
        (dest / name).mkdir()
        for f in sorted(src.iterdir()):
            place(f, dest / name / f.name)
    lms = np.load(store.fetch(dataset["lms"]))
    for i, points in enumerate(lms):
        write_lms(dest / "ori_imgs" / f"{i}.lms", points)
    return dest


# ------------------------------------------------------------------ importing a reference folder
REFERENCE_PARTS = ("transforms_train.json", "transforms_val.json", "ori_imgs/", "parsing/", "gt_imgs/",
                   "torso_imgs/", "bc.jpg", "au.csv", "track_params.pt", "aud.wav")


def _reference_features(folder: Path) -> tuple[Path, str | None]:
    files = list(REFERENCE_FEATURES.values())
    names = sorted(dict.fromkeys(files), key=lambda n: files.count(n) > 1)  # one kind's names first, aud.npy last
    found = [folder / n for n in names if (folder / n).is_file()]
    if not found:
        raise InputError(f"{folder} has no audio features: ER-NeRF's process.py writes one of "
                         f"{', '.join(names)} (from aud.wav); extract them and import again")
    path = found[0]
    kind = {v: k for k, v in REFERENCE_FEATURES.items()}[path.name]
    return path, (None if path.name == "aud.npy" else kind)


def _features_per_frame(path: Path, kind: str | None, n_frames: int) -> tuple[np.ndarray, str]:
    """(T, 16, D) features and their kind from a reference file: already windowed (T, 16, D), or
    HuBERT's (T, 2, 1024) (two 50 Hz steps per video frame, as the reference's hubert.py saves)."""
    from models.audio.features import window_features

    arr = np.load(path, allow_pickle=False).astype(np.float32)
    by_dim = {d: k for k, d in FEATURE_DIMS.items()}
    if kind is None:  # aud.npy: its kind from its dimension
        kind = by_dim.get(int(arr.shape[-1])) if arr.ndim == 3 else None
        if kind is None:
            raise InputError(f"{path} has shape {arr.shape}; expected (T, 16, D) with D one of "
                             f"{sorted(by_dim)} ({', '.join(f'{d}: {k}' for d, k in sorted(by_dim.items()))})")
    if arr.ndim == 3 and arr.shape[1] == 2 and kind == "hubert":
        arr = window_features(arr.reshape(-1, arr.shape[-1]), n_frames, max_gap_s=1.0)
    if arr.ndim != 3 or arr.shape[1] != 16 or arr.shape[2] != FEATURE_DIMS[kind]:
        raise InputError(f"{path} has shape {arr.shape}; {kind} features are (T, 16, {FEATURE_DIMS[kind]})")
    if abs(arr.shape[0] - n_frames) > 2:
        raise InputError(f"{path} has {arr.shape[0]} frames of features but ori_imgs has {n_frames} images; "
                         "extract the features from this clip's aud.wav")
    if arr.shape[0] < n_frames:  # the reference clamps the last frames' aud_id the same way
        arr = np.concatenate([arr, np.repeat(arr[-1:], n_frames - arr.shape[0], axis=0)])
    return arr[:n_frames], kind


def _numbered(folder: Path, ext: str) -> list[Path]:
    files = sorted(folder.glob(f"*.{ext}"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
    if [p.stem for p in files] != [str(i) for i in range(len(files))]:
        raise InputError(f"{folder} must hold 0.{ext} .. N-1.{ext} (ER-NeRF's numbering)")
    return files


def check_reference_folder(folder: Path) -> Path:
    """The folder, resolved, when it has every part of ER-NeRF's layout; else InputError naming the missing ones."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give the ER-NeRF dataset folder (with transforms_train.json)")
    missing = [p for p in REFERENCE_PARTS if not (folder / p.rstrip("/")).exists()]
    if missing:
        raise InputError(f"{folder} is not a complete ER-NeRF dataset: missing {', '.join(missing)} "
                         "(run the reference's data_utils/process.py to the end)")
    _reference_features(folder)
    return folder


@stage("import_dataset", "1")
def import_dataset(folder: Path, namespace: str | None = None) -> StageResult:
    """An ER-NeRF dataset folder (as the reference's data_utils/process.py writes it) as a dataset manifest."""
    from models.audio.features import save_features
    from models.face.video_landmarks import read_lms

    folder = check_reference_folder(folder)
    feats_path, kind = _reference_features(folder)
    images = _numbered(folder / "ori_imgs", "jpg")
    n = len(images)
    if n == 0:
        raise InputError(f"{folder / 'ori_imgs'} has no frames (0.jpg, 1.jpg, ...)")
    counts = {"ori_imgs/*.jpg": n, "ori_imgs/*.lms": len(list((folder / "ori_imgs").glob("*.lms"))),
              "parsing/*.png": len(_numbered(folder / "parsing", "png")),
              "gt_imgs/*.jpg": len(_numbered(folder / "gt_imgs", "jpg")),
              "torso_imgs/*.png": len(_numbered(folder / "torso_imgs", "png")),
              "au.csv rows": _count_rows(folder / "au.csv")}
    if len(set(counts.values())) != 1:
        raise InputError(f"the parts of {folder} disagree on the frame count: {counts}")
    transforms = {}
    for split in ("train", "val"):
        try:
            t = json.loads((folder / f"transforms_{split}.json").read_text())
            ids = [int(f["img_id"]) for f in t["frames"]]
            [(f["aud_id"], f["transform_matrix"]) for f in t["frames"]]
            float(t["focal_len"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"transforms_{split}.json is not ER-NeRF's (focal_len, cx, cy, frames with img_id, "
                             f"aud_id, transform_matrix): {type(exc).__name__} {exc}") from exc
        if ids and not 0 <= min(ids) <= max(ids) < n:
            raise InputError(f"transforms_{split}.json names frames outside 0..{n - 1}")
        transforms[split] = t
    feats, kind = _features_per_frame(feats_path, kind, n)
    store = get_store()
    with scratch("import") as work:
        lms = np.stack([read_lms(folder / "ori_imgs" / f"{i}.lms") for i in range(n)])
        np.save(work / "lms.npy", lms)
        (work / "ori_imgs").mkdir()
        for p in images:
            shutil.copyfile(p, work / "ori_imgs" / p.name)
        npy, info_json = save_features(work / "feats", feats, FeatureInfo(kind=kind, dim=int(feats.shape[-1])))
        write_au_csv(work / "au.csv", read_au45(folder / "au.csv"), fps=VIDEO_FPS)
        parts = {
            "audio": store.put_file(folder / "aud.wav"), "frames": store.put_dir(work / "ori_imgs"),
            "lms": store.put_file(work / "lms.npy"), "feats": store.put_file(npy),
            "feats_info": store.put_file(info_json), "parsing": store.put_dir(folder / "parsing"),
            "bc": store.put_file(folder / "bc.jpg"), "gt_imgs": store.put_dir(folder / "gt_imgs"),
            "torso_imgs": store.put_dir(folder / "torso_imgs"), "au": store.put_file(work / "au.csv"),
            "track": store.put_file(folder / "track_params.pt", suffix=".pt"),
            "transforms_train": store.put_file(folder / "transforms_train.json"),
            "transforms_val": store.put_file(folder / "transforms_val.json"),
        }
    from PIL import Image

    with Image.open(folder / "bc.jpg") as bc:
        size = int(bc.size[0])
    return StageResult(artifacts=parts, meta={
        "n_frames": n, "size": size, "fps": VIDEO_FPS, "focal": float(transforms["train"]["focal_len"]),
        "features": FeatureInfo(kind=kind, dim=int(feats.shape[-1])).model_dump(),
        "n_train": len(transforms["train"]["frames"]), "n_val": len(transforms["val"]["frames"]),
        "parsing": "imported", "tracking": "imported", "source": "ER-NeRF folder"})
