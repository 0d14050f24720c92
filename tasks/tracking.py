"""3DMM face tracking as a cached task: landmarks -> focal search -> batched fit -> photometric
refinement -> track_params.pt and ER-NeRF's transforms_{train,val}.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from talkflow.cache import stage
from talkflow.forms import PLAIN_OPTIONALS
from talkflow.settings import get_settings
from talkflow.store import StageResult, get_store
from tasks.inputs import frame_folder, load_landmarks, morphable_model, scratch

if TYPE_CHECKING:
    import numpy as np


class TrackingConfig(BaseModel):
    model_config = PLAIN_OPTIONALS

    focal: float | None = Field(None, gt=0, description="Focal length in px; empty: searched (ER-NeRF).")
    photometric: bool = Field(True, description="Refine on the pixels with pytorch3d after the landmark fit.")
    photometric_iters: int = Field(
        15, ge=1, description="Adam steps per chunk of frames (15 keeps a 60 s clip under 10 min on 2 CPU cores).")
    render_size: int = Field(96, ge=32, description="Rendered face window side for the refinement, px.")
    fit_iters: int = Field(30, ge=1, description="Levenberg-Marquardt steps of the landmark fit.")
    val_fraction: float = Field(1 / 11, gt=0, lt=0.5, description="Last share of frames held out (ER-NeRF: 1/11).")


def transforms_json(c2w: np.ndarray, ids: range, focal: float, size: int) -> dict:
    return {
        "focal_len": float(focal),
        "cx": size / 2,
        "cy": size / 2,
        "frames": [{"img_id": i, "aud_id": i, "transform_matrix": c2w[i].tolist()} for i in ids],
    }


@stage("tracking", "2")
def track_faces(
    frames: StageResult,
    landmarks: StageResult,
    config: TrackingConfig,
    bfm: Path | None = None,
    namespace: str | None = None,
) -> StageResult:
    """Per-frame head pose, expression, shared identity and focal for every frame."""
    import torch  # the fits' libraries load when a fit runs, not when a cached run reads its result

    from models.face3d.camera import ERNERF_UNITS_PER_MM, to_nerf_transforms
    from models.face3d.config import FitConfig, PhotoConfig
    from models.face3d.fit import fit_landmarks
    from models.face3d.photometric import refine_photometric

    # transforms_*.json are in the reference's units: its save_transforms divides the tracker's
    # translations (decimetres) by 10, so a head ~0.7 units from the camera fits the model's box
    # after its pose_scale of 4
    transforms_units_per_mm = ERNERF_UNITS_PER_MM / 10
    device = torch.device(get_settings().torch_device())  # CUDA when present: all frames batched there
    model = morphable_model(bfm).to(device=device)
    lms = torch.from_numpy(load_landmarks(landmarks)).float().to(device)  # (T,68,2)
    size = frame_folder(frames)[0].shape[0]
    track = fit_landmarks(lms, size, model, focal=config.focal,
                          config=dataclasses.replace(FitConfig(), iters=config.fit_iters))
    if config.photometric:
        photo = dataclasses.replace(PhotoConfig(), iters=config.photometric_iters, render_size=config.render_size)
        track = refine_photometric(frame_folder(frames), lms, model, track, photo)
    c2w = to_nerf_transforms(track.euler.cpu(), track.trans.cpu(), transforms_units_per_mm).numpy()  # (T,4,4)
    n = track.n_frames
    n_val = max(1, round(n * config.val_fraction))
    with scratch("tracking") as work:
        track.save(work / "track_params.pt")
        for split, ids in (("train", range(0, n - n_val)), ("val", range(n - n_val, n))):
            (work / f"transforms_{split}.json").write_text(json.dumps(transforms_json(c2w, ids, track.focal, size)))
        store = get_store()
        artifacts = {"track": store.put_file(work / "track_params.pt"),
                     "transforms_train": store.put_file(work / "transforms_train.json"),
                     "transforms_val": store.put_file(work / "transforms_val.json")}
    err = track.lmk_err.detach().cpu()
    return StageResult(artifacts=artifacts, meta={
        "model": model.name, "focal": float(track.focal), "n_frames": n, "n_val": n_val,
        "lmk_err_px_mean": round(float(err.mean()), 3), "lmk_err_px_max": round(float(err.max()), 3),
        "device": str(device),
    })
