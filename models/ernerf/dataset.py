"""Read an ER-NeRF dataset folder (docs/dataset.md) into tensors.

``check_dataset`` validates the cheap things first (files, JSON, audio shape and dimension) so a
bad dataset fails before any image is decoded; ``load_split`` then reads one split
(transforms_train.json or transforms_val.json) with its frames, masks and conditioning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from models.ernerf.audio import FEATURE_DIMS, eye_feature
from models.face.blink import read_au45
from talkflow.errors import InputError

SPLITS = ("train", "val")
# parsing/<i>.png colours -> labels
PARSING_COLOURS = {"background": (255, 255, 255), "head": (255, 0, 0), "neck": (0, 255, 0), "torso": (0, 0, 255)}
LABELS = {name: i for i, name in enumerate(PARSING_COLOURS)}  # background 0, head 1, neck 2, torso 3
LIPS = slice(48, 60)


@dataclass
class DatasetInfo:
    """What check_dataset learnt without decoding images."""

    root: Path
    audio_dim: int
    audio_kind: str
    num_audio_frames: int
    splits: dict[str, dict]  # split -> parsed transforms JSON


@dataclass
class ERNeRFDataset:
    """One split, every frame in memory. N frames of H x W; T audio frames of D features.

    Rectangles are (row0, row1, col0, col1), half-open, in pixels."""

    root: Path
    split: str
    height: int
    width: int
    focal: float
    cx: float
    cy: float
    img_ids: Tensor  # (N,) int64
    aud_ids: Tensor  # (N,) int64, into audio
    poses: Tensor  # (N, 4, 4) float32 camera-to-world, OpenGL axes, units of the file
    audio: Tensor  # (T, 16, D) float32, the whole clip
    audio_kind: str
    eye: Tensor  # (N, 1) float32 eye closure in [0, 1] (from AU45)
    landmarks: Tensor  # (N, 68, 2) float32, (x, y) pixels
    images: Tensor  # (N, H, W, 3) uint8, gt_imgs
    torso: Tensor  # (N, H, W, 4) uint8, torso_imgs (RGBA)
    parsing: Tensor  # (N, H, W) uint8 labels (LABELS)
    background: Tensor  # (H, W, 3) uint8, bc.jpg
    face_rects: Tensor  # (N, 4) int64: box of all 68 landmarks
    lips_rects: Tensor  # (N, 4) int64: square around the lips (48..59)

    def __len__(self) -> int:
        return int(self.img_ids.shape[0])

    @property
    def audio_dim(self) -> int:
        return int(self.audio.shape[-1])

    def torso_over_background(self, index: int) -> Tensor:
        """(H, W, 3) float in [0, 1]: the frame's torso_imgs composited over bc.jpg."""
        rgba = self.torso[index].float() / 255
        bg = self.background.float() / 255
        return rgba[..., :3] * rgba[..., 3:] + bg * (1 - rgba[..., 3:])

    def mask(self, index: int, *labels: str) -> Tensor:
        """(H, W) bool: pixels of the frame's parsing with any of ``labels``."""
        out = torch.zeros(self.height, self.width, dtype=torch.bool)
        for name in labels:
            out |= self.parsing[index] == LABELS[name]
        return out


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise InputError(f"{path} is missing; run the ER-NeRF preprocessing on the video first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e}); re-run the preprocessing") from e


def _check_transforms(path: Path, data: dict) -> None:
    for key in ("focal_len", "cx", "cy", "frames"):
        if key not in data:
            raise InputError(f"{path} lacks {key!r}; expected focal_len, cx, cy and frames")
    if not data["frames"]:
        raise InputError(f"{path} has no frames")
    for i, f in enumerate(data["frames"]):
        if not {"img_id", "aud_id", "transform_matrix"} <= set(f):
            raise InputError(f"{path} frame {i} needs img_id, aud_id and transform_matrix")
        if np.asarray(f["transform_matrix"]).shape != (4, 4):
            raise InputError(f"{path} frame {i}: transform_matrix must be 4x4")


def check_dataset(root: Path, expected_audio_dim: int | None = None) -> DatasetInfo:
    """Validate a dataset folder without decoding images; raise InputError naming what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist")
    feats_path = root / "aud_feats.npy"
    if not feats_path.exists():
        raise InputError(f"{feats_path} is missing; extract audio features first")
    feats = np.load(feats_path, mmap_mode="r")
    if feats.ndim != 3 or feats.shape[1] != 16:
        raise InputError(f"{feats_path} must have shape (T, 16, D), got {feats.shape}")
    dim = int(feats.shape[2])
    meta_path = root / "aud_feats.json"
    meta = _read_json(meta_path) if meta_path.exists() else {}
    kind = meta.get("kind", next((k for k, d in FEATURE_DIMS.items() if d == dim), "unknown"))
    if "dim" in meta and int(meta["dim"]) != dim:
        raise InputError(f"{meta_path} says dim={meta['dim']} but aud_feats.npy has D={dim}; re-extract the features")
    if expected_audio_dim is not None and dim != expected_audio_dim:
        raise InputError(
            f"aud_feats.npy has audio features of dimension D={dim} ({kind}) but the model expects "
            f"D={expected_audio_dim}; re-extract the features with the kind the model uses or build the "
            f"model with AudioConfig(in_dim={dim})"
        )
    splits = {}
    for split in SPLITS:
        path = root / f"transforms_{split}.json"
        data = _read_json(path)
        _check_transforms(path, data)
        splits[split] = data
    for name in ("bc.jpg", "au.csv"):
        if not (root / name).exists():
            raise InputError(f"{root / name} is missing; re-run the preprocessing")
    for split, data in splits.items():
        for f in data["frames"]:
            i = f["img_id"]
            for rel in (f"gt_imgs/{i}.jpg", f"torso_imgs/{i}.png", f"parsing/{i}.png", f"ori_imgs/{i}.lms"):
                if not (root / rel).exists():
                    raise InputError(f"{root / rel} is missing (frame {i} of the {split} split)")
            if not 0 <= f["aud_id"] <= feats.shape[0]:
                raise InputError(f"frame {i} has aud_id {f['aud_id']} outside the {feats.shape[0]} audio frames")
    return DatasetInfo(root, dim, kind, int(feats.shape[0]), splits)


def _read_au45(path: Path) -> dict[int, float]:
    """Row i of au.csv is video frame i (OpenFace's layout, as the reference reads it)."""
    return dict(enumerate(read_au45(path).tolist()))


def _image(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert(mode)
        if size is not None and im.size != size:
            raise InputError(f"{path} is {im.size[0]}x{im.size[1]} but the frames are {size[0]}x{size[1]}")
        return np.asarray(im)


def parsing_labels(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 parsing colours -> (H, W) uint8 labels of the nearest palette colour."""
    palette = np.array(list(PARSING_COLOURS.values()), dtype=np.int32)  # (4, 3)
    dist = ((rgb[..., None, :].astype(np.int32) - palette) ** 2).sum(-1)  # (H, W, 4)
    return dist.argmin(-1).astype(np.uint8)


def landmark_rects(lms: np.ndarray, height: int, width: int) -> tuple[list[int], list[int]]:
    """(68, 2) landmarks -> face box and the square lips box (row0, row1, col0, col1)."""
    xs, ys = lms[:, 0], lms[:, 1]
    face = [int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())]
    lx, ly = lms[LIPS, 0], lms[LIPS, 1]
    r_c, c_c = int(ly.min() + ly.max()) // 2, int(lx.min() + lx.max()) // 2
    half = max(int(ly.max() - ly.min()), int(lx.max() - lx.min())) // 2
    half = max(half, 1)
    lips = [max(0, r_c - half), min(height, r_c + half), max(0, c_c - half), min(width, c_c + half)]
    return face, lips


def load_split(root: Path, split: str = "train", expected_audio_dim: int | None = None,
               info: DatasetInfo | None = None) -> ERNeRFDataset:
    """Read one split into tensors (validating first)."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {SPLITS}")
    info = info or check_dataset(root, expected_audio_dim)
    if expected_audio_dim is not None and info.audio_dim != expected_audio_dim:
        raise InputError(f"aud_feats.npy has D={info.audio_dim} but the model expects D={expected_audio_dim}")
    root = info.root
    meta = info.splits[split]
    audio = torch.from_numpy(np.load(root / "aud_feats.npy").astype(np.float32))
    au45 = _read_au45(root / "au.csv")
    background = _image(root / "bc.jpg", "RGB", None)
    h, w = background.shape[:2]
    size = (w, h)
    img_ids, aud_ids, poses, eyes, lms, imgs, torsos, parsings, faces, lips = ([] for _ in range(10))
    for f in meta["frames"]:
        i = int(f["img_id"])
        if i not in au45:
            raise InputError(f"{root / 'au.csv'} has no AU45_r for frame {i}")
        img_ids.append(i)
        aud_ids.append(min(int(f["aud_id"]), audio.shape[0] - 1))  # the last frame may point one past
        poses.append(np.asarray(f["transform_matrix"], dtype=np.float32))
        eyes.append(au45[i])
        lm = np.loadtxt(root / "ori_imgs" / f"{i}.lms", dtype=np.float32).reshape(-1, 2)
        if lm.shape != (68, 2):
            raise InputError(f"{root / 'ori_imgs' / f'{i}.lms'} must hold 68 'x y' lines, got {lm.shape[0]}")
        lms.append(lm)
        imgs.append(_image(root / "gt_imgs" / f"{i}.jpg", "RGB", size))
        torsos.append(_image(root / "torso_imgs" / f"{i}.png", "RGBA", size))
        parsings.append(parsing_labels(_image(root / "parsing" / f"{i}.png", "RGB", size)))
        face, lip = landmark_rects(lm, h, w)
        faces.append(face)
        lips.append(lip)
    return ERNeRFDataset(
        root=root, split=split, height=h, width=w, focal=float(meta["focal_len"]), cx=float(meta["cx"]),
        cy=float(meta["cy"]), img_ids=torch.tensor(img_ids), aud_ids=torch.tensor(aud_ids),
        poses=torch.from_numpy(np.stack(poses)), audio=audio, audio_kind=info.audio_kind,
        eye=eye_feature(torch.tensor(eyes, dtype=torch.float32))[:, None], landmarks=torch.from_numpy(np.stack(lms)),
        images=torch.from_numpy(np.stack(imgs)), torso=torch.from_numpy(np.stack(torsos)),
        parsing=torch.from_numpy(np.stack(parsings)), background=torch.from_numpy(background.copy()),
        face_rects=torch.tensor(faces), lips_rects=torch.tensor(lips),
    )


def downscale_split(ds: ERNeRFDataset, factor: int) -> ERNeRFDataset:
    """The split at 1/factor of its resolution (e.g. for a quick validation on the CPU): images,
    torso and background area-averaged, parsing by nearest label, intrinsics and landmarks scaled.
    The cameras and conditioning are unchanged, so a model renders it with the same poses."""
    if factor == 1:
        return ds
    if factor < 1 or ds.height // factor < 8 or ds.width // factor < 8:
        raise InputError(f"cannot downscale {ds.width}x{ds.height} frames by {factor}; use 1 or a factor that "
                         "leaves at least 8 pixels")
    h, w = ds.height // factor, ds.width // factor

    def area(x: Tensor) -> Tensor:  # (N, H, W, C) uint8 -> (N, h, w, C) uint8
        y = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2).float(), size=(h, w), mode="area")
        return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    parsing = torch.nn.functional.interpolate(ds.parsing[:, None].float(), size=(h, w), mode="nearest")
    sx, sy = w / ds.width, h / ds.height
    lms = ds.landmarks * torch.tensor([sx, sy])
    rects = [landmark_rects(m.numpy(), h, w) for m in lms]
    return replace(
        ds, height=h, width=w, focal=ds.focal * sx, cx=ds.cx * sx, cy=ds.cy * sy, images=area(ds.images),
        torso=area(ds.torso), parsing=parsing[:, 0].to(torch.uint8), background=area(ds.background[None])[0],
        landmarks=lms, face_rects=torch.tensor([r[0] for r in rects]), lips_rects=torch.tensor([r[1] for r in rects]),
    )
