"""ER-NeRF rendering as cached stages: new audio -> 16 kHz mono wav -> (features, by
tasks.features.audio_features) -> frames of the trained avatar speaking it (then
tasks.media.mux_video makes the mp4).

The camera follows the training poses, played forwards then backwards ("loop", as the
reference's mirror index), with the eye closure of the same training frames.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from models.face.blink import read_au45
from talkflow.cache import stage
from talkflow.errors import InputError
from talkflow.gpu import gpu_slot
from talkflow.settings import get_settings
from talkflow.store import StageResult, get_store
from tasks.inputs import local_file, scratch
from tasks.outputs import ProgressArtifact, run_logger
from tasks.registry import STAGE_NAMES


class RenderConfig(BaseModel):
    """How the avatar is rendered."""

    with_torso: bool = Field(True, description="Render the torso field (needs the torso stage).")
    batch: int = Field(4, ge=1, description="Frames rendered together.")
    pose: Literal["loop", "still"] = Field(
        "loop", description="loop: the training poses forwards then backwards; still: the first pose.")
    background: Literal["auto", "plate", "frames"] = Field(
        "auto", description="plate: bc.jpg; frames: each looped training frame's torso over bc.jpg (the "
        "original body); auto: plate with the torso field, frames without it.")
    downscale: int = Field(1, ge=1, le=8, description="Render at 1/N resolution and upscale (faster previews).")
    jpeg_quality: int = Field(95, ge=1, le=95, description="JPEG quality of the rendered frames in the store (1-95).")


def check_features(avatar: StageResult, features: StageResult) -> None:
    """InputError unless the new audio's features are of the kind and dimension the avatar learnt."""
    want = avatar.meta.get("features") or {}
    got = features.meta
    if want and (got.get("kind") != want.get("kind") or got.get("dim") != want.get("dim")):
        raise InputError(
            f"the new audio's features are {got.get('kind')} with D={got.get('dim')} but the avatar "
            f"({avatar.namespace or 'unnamed'}) was trained on {want.get('kind')} features with D={want.get('dim')}; "
            f"extract them with the avatar's kind and settings ({want.get('kind')}, D={want.get('dim')})")


def loop_index(i: np.ndarray, n: int) -> np.ndarray:
    """Frame i -> training frame: 0..n-1, then n-1..0, and so on (the reference's mirror index)."""
    turn, rest = np.divmod(i, n)
    return np.where(turn % 2 == 0, rest, n - 1 - rest)


def _read_au45(path: Path) -> dict[int, float]:
    return dict(enumerate(read_au45(path).tolist()))


def _load_rgb(path: Path, size: tuple[int, int], mode: str = "RGB") -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert(mode)
        return np.asarray(img if img.size == size else img.resize(size, Image.BOX))


@stage("render_frames", "1")
def render_frames_stage(avatar: StageResult, dataset: StageResult, features: StageResult,
                        config: RenderConfig = RenderConfig(), namespace: str | None = None) -> StageResult:
    """Frames of the avatar (a lips or torso checkpoint) speaking the features' audio, one per window."""
    import torch

    from models.ernerf.audio import eye_feature
    from models.ernerf.trainer import load_model

    check_features(avatar, features)  # before anything is loaded
    if config.with_torso and avatar.stage != STAGE_NAMES["torso"]:
        raise InputError(f"with_torso needs a torso-stage checkpoint, got {avatar.stage or 'an unnamed result'}; "
                         "train the torso stage or render with with_torso=False")
    if "checkpoint" not in avatar.artifacts:
        raise InputError("the avatar result has no checkpoint; pass a train_head/lips/torso result")
    feats = torch.from_numpy(np.load(local_file(features["feats"])).astype(np.float32))  # (T, 16, D)
    n_out = int(feats.shape[0])
    background = config.background
    if background == "auto":
        background = "plate" if config.with_torso else "frames"
    log = run_logger()
    t0 = time.perf_counter()
    with scratch("render") as work:
        # only the parts rendering reads are fetched (on S3, the training images stay there)
        train = json.loads(local_file(dataset["transforms_train"]).read_text())
        ids = [int(f["img_id"]) for f in train["frames"]]
        c2w = np.array([f["transform_matrix"] for f in train["frames"]], dtype=np.float32)  # (N, 4, 4)
        au45 = _read_au45(local_file(dataset["au"]))
        eye = eye_feature(torch.tensor([au45.get(i, 0.0) for i in ids], dtype=torch.float32))[:, None]  # (N, 1)
        bc_path = local_file(dataset["bc"])
        with Image.open(bc_path) as bc:
            width, height = bc.size
        s = config.downscale
        w, h = width // s, height // s
        plate = _load_rgb(bc_path, (w, h)).astype(np.float32) / 255  # (h, w, 3)
        torso_dir = local_file(dataset["torso_imgs"]) if background == "frames" else None
        order = loop_index(np.arange(n_out), len(ids)) if config.pose == "loop" else np.zeros(n_out, int)
        device = get_settings().torch_device()
        model = load_model(local_file(avatar["checkpoint"]), device=device)
        out_dir = work / "frames"
        out_dir.mkdir()
        progress = ProgressArtifact(f"rendering {n_out} frames of {namespace or 'the avatar'}", 0.0)
        with gpu_slot():
            t_render = time.perf_counter()
            for start in range(0, n_out, config.batch):
                idx = np.arange(start, min(start + config.batch, n_out))
                src = order[idx]
                if background == "plate":
                    bg = torch.from_numpy(plate)
                else:  # the looped training frames' torso (RGBA) over the plate
                    rgba = np.stack([_load_rgb(torso_dir / f"{ids[k]}.png", (w, h), "RGBA")
                                     for k in src]).astype(np.float32) / 255
                    bg = torch.from_numpy(rgba[..., :3] * rgba[..., 3:] + plate * (1 - rgba[..., 3:]))
                frames = model.render_frames(
                    feats, torch.from_numpy(c2w[src]), focal=float(train["focal_len"]) / s,
                    cx=float(train["cx"]) / s, cy=float(train["cy"]) / s, height=h, width=w, background=bg,
                    aud_index=torch.from_numpy(idx), eye=eye[src], with_torso=config.with_torso,
                    frames_per_batch=config.batch)
                for i, frame in zip(idx, frames):
                    img = Image.fromarray(frame)
                    if s > 1:
                        img = img.resize((width, height), Image.BICUBIC)
                    img.save(out_dir / f"{i}.jpg", quality=config.jpeg_quality)
                progress.update(100.0 * (idx[-1] + 1) / n_out)
            render_s = time.perf_counter() - t_render
        art = get_store().put_dir(out_dir)
    log.info(f"rendered {n_out} frames in {render_s:.1f} s ({n_out / render_s:.2f} frames/s)")
    return StageResult(artifacts={"frames": art}, meta={
        "n_frames": n_out, "ext": "jpg", "size": [width, height], "render_size": [w, h], "pose": config.pose,
        "background": background, "with_torso": config.with_torso, "checkpoint_stage": avatar.stage,
        "render_s": round(render_s, 3), "frames_per_s": round(n_out / render_s, 3) if render_s > 0 else None,
        "seconds": round(time.perf_counter() - t0, 3), "device": device,
    })


__all__ = ["RenderConfig", "check_features", "loop_index", "render_frames_stage"]
