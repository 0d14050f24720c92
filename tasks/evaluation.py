"""Quality figures: of a rendered video, as a cached task (the phonetic lip-sync measure), and of
a training stage on its held-out frames (PSNR, SSIM, LMD, LPIPS)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from talkflow import media
from talkflow.cache import stage
from talkflow.contract import SAMPLE_RATE
from talkflow.store import Artifact, StageResult
from tasks.inputs import local_file, scratch

if TYPE_CHECKING:
    from models.ernerf.dataset import ERNeRFDataset
    from models.ernerf.trainer import Trainer


@stage("lip_sync", "1")
def score_lip_sync(video: Artifact, text: str | None = None, namespace: str | None = None) -> StageResult:
    """models.eval.lipsync.lip_sync_report of an mp4 (frames and speech) against the phones of its
    speech (aligned to `text` when given, else recognised): opening and width correlation, bilabial
    closure, offset, frames without a face, and the loudness correlation as a secondary figure."""
    import numpy as np
    from PIL import Image

    from models.eval.lipsync import lip_sync_report

    path = local_file(video)
    info = media.probe(path)
    with scratch("lipsync") as work:
        media.extract_audio(path, work / "audio.wav", sample_rate=SAMPLE_RATE)
        samples, rate = media.read_wav(work / "audio.wav")
        n = media.extract_frames(path, work / "frames", ext="png")
        frames = np.stack([np.asarray(Image.open(work / "frames" / f"{i}.png").convert("RGB")) for i in range(n)])
    report = lip_sync_report(frames, samples, rate, text, fps=info.fps)
    return StageResult(artifacts={}, meta=report)


# ------------------------------------------------------------------- training validation
def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 5)


def _lpips(trainer: Trainer, val: ERNeRFDataset, n: int, path: Path) -> float | None:
    """LPIPS (AlexNet, weights at `path`) of the rendered held-out frames."""
    import torch

    from models.ernerf.losses import make_patch_loss

    _, metric = make_patch_loss(path, trainer.device)
    torso = trainer.cfg.stage == "torso"
    bgs = val.background if torso else torch.stack([val.torso_over_background(k) for k in range(n)])
    frames = trainer.model.render_frames(
        val.audio, val.poses[:n], focal=val.focal, cx=val.cx, cy=val.cy, height=val.height, width=val.width,
        background=bgs, aud_index=val.aud_ids[:n], eye=val.eye[:n], with_torso=torso, mixed_precision=trainer.mp)
    pred = torch.from_numpy(frames).permute(0, 3, 1, 2).float().to(trainer.device) / 255
    gt = val.images[:n].permute(0, 3, 1, 2).float().to(trainer.device) / 255
    with torch.no_grad():
        return float(metric(pred, gt))


def validation_metrics(trainer: Trainer, val: ERNeRFDataset, *, frames: int | None, downscale: int,
                       lpips: Path | None) -> dict[str, float | None]:
    """PSNR, SSIM, LMD (px of a 512 px frame) and, with the AlexNet weights `lpips`, LPIPS of the
    first `frames` held-out frames (all when None) rendered at 1/`downscale` resolution."""
    from models.ernerf.dataset import downscale_split
    from models.eval.lipsync import REFERENCE_SIZE, face_landmarks

    small = downscale_split(val, downscale)
    n = len(small) if frames is None else min(frames, len(small))
    # dlib on frames upscaled to 512 px (it misses faces under ~80 px); LMD in px of a 512 px frame
    metrics = trainer.evaluate(small, max_frames=n, landmarker=face_landmarks)
    metrics["lmd"] = metrics["lmd"] * REFERENCE_SIZE / small.width
    out = {k: _finite(v) for k, v in metrics.items()}
    out["lpips"] = _finite(_lpips(trainer, small, n, lpips)) if lpips is not None else None
    return out
