"""ER-NeRF speed at the reference configuration: head-stage training steps/s and rendered frames/s.

Builds ERNeRF(ModelConfig()) (tri-plane 3 x 12 levels, 128^3 occupancy grid, 16 samples per ray,
log-mel audio D=80) and an in-memory dataset of a shaded sphere seen from an arc at 450x450, then
times `Trainer.step()` (65536 rays per step, occupancy updates every 16 steps included) and
`render_frames` (whole frames, head + torso, in chunks) on cuda when available, else the CPU.
Then renders the frames once more and runs one more training step with a section timer
(models/ernerf/timing.py; on CUDA each section is synchronised, so this pass is slower than the
timed one) and prints where the time goes: sampling (ray/box test, occupancy lookups, sample
selection), encoding (hash grids), mlp (the fields' networks), compositing (volume rendering and
the background), backward (a training step's backward pass and optimiser update) and host
(everything else: Python, data gathering, launches).
Prints one JSON object as its last line:
  device, threads, side, rays_per_batch, train_steps, train_steps_per_s, samples_per_ray,
  render_frames, chunk_rays, render_frames_per_s, peak_memory_mb (cuda: max_memory_allocated; cpu: max RSS),
  frame_ms {section: ms per rendered frame}, train_step_ms {section: ms per training step}
Usage: python bench/ernerf.py [--steps N] [--frames N] [--rays N] [--side S] [--threads N] [--chunk N]
       [--occupancy R] [--device D] [--no-breakdown]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.ernerf.dataset import ERNeRFDataset, landmark_rects  # noqa: E402
from models.ernerf.model import ERNeRF, ModelConfig  # noqa: E402
from models.ernerf.timing import SectionTimer  # noqa: E402
from models.ernerf.trainer import HeadTrainConfig, Trainer  # noqa: E402

SECTIONS = ("sampling", "encoding", "mlp", "compositing", "backward")

CAM_DIST, RADIUS, FRAMES = 0.84, 0.12, 8  # file units (the model scales translations by 4)


def _c2w(yaw: float) -> np.ndarray:
    back = np.array([math.sin(yaw), 0.0, math.cos(yaw)])
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = [math.cos(yaw), 0, -math.sin(yaw)], [0, 1, 0], back, back * CAM_DIST
    return m


def synthetic_dataset(side: int, audio_dim: int) -> ERNeRFDataset:
    """A shaded sphere on a gradient with a torso block, FRAMES cameras on a 30-degree arc."""
    focal = side * 2.6
    rows, cols = np.meshgrid(np.arange(side) + 0.5, np.arange(side) + 0.5, indexing="ij")
    bg = np.stack([0.2 + 0.5 * rows / side, np.full_like(rows, 0.35), 0.5 + 0.3 * cols / side], -1)
    images, torsos, poses, lms = [], [], [], []
    for t in range(FRAMES):
        c2w = _c2w(math.radians(-15 + 30 * t / (FRAMES - 1)))
        d = np.stack([(cols - side / 2) / focal, -(rows - side / 2) / focal, -np.ones_like(rows)], -1)
        d = d / np.linalg.norm(d, axis=-1, keepdims=True) @ c2w[:3, :3].T
        o = c2w[:3, 3]
        b = d @ o
        disc = b**2 - (o @ o - RADIUS**2)
        hit = disc > 0
        normal = (o + (-b - np.sqrt(np.maximum(disc, 0)))[..., None] * d) / RADIUS
        rgb = (0.55 + 0.45 * np.clip(normal @ np.array([0.3, 0.5, 0.8]), 0, 1))[..., None] * [0.9, 0.5, 0.3]
        torso = (rows > 0.8 * side) & (np.abs(cols - side / 2) < 0.3 * side) & ~hit
        img = np.where(hit[..., None], rgb, np.where(torso[..., None], [0.2, 0.6, 0.3], bg))
        images.append((img * 255).astype(np.uint8))
        torsos.append(np.concatenate([np.broadcast_to([51, 153, 76], img.shape), torso[..., None] * 255], -1))
        poses.append(c2w)
        ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
        lms.append(side / 2 + 0.25 * side * np.stack([np.cos(ang), np.sin(ang)], -1))
    rects = [landmark_rects(lm, side, side) for lm in lms]
    parsing = np.zeros((FRAMES, side, side), np.uint8)
    return ERNeRFDataset(
        root=Path("."), split="train", height=side, width=side, focal=focal, cx=side / 2, cy=side / 2,
        img_ids=torch.arange(FRAMES), aud_ids=torch.arange(FRAMES),
        poses=torch.tensor(np.stack(poses), dtype=torch.float32),
        audio=torch.randn(FRAMES, 16, audio_dim), audio_kind="logmel", eye=torch.rand(FRAMES, 1),
        landmarks=torch.tensor(np.stack(lms), dtype=torch.float32), images=torch.from_numpy(np.stack(images)),
        torso=torch.from_numpy(np.stack(torsos).astype(np.uint8)), parsing=torch.from_numpy(parsing),
        background=torch.from_numpy((bg * 255).astype(np.uint8)),
        face_rects=torch.tensor([r[0] for r in rects]), lips_rects=torch.tensor([r[1] for r in rects]),
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=None, help="timed training steps (cuda 48, cpu 3)")
    ap.add_argument("--frames", type=int, default=None, help="timed rendered frames (cuda 8, cpu 1)")
    ap.add_argument("--rays", type=int, default=4096 * 16)
    ap.add_argument("--side", type=int, default=450)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--chunk", type=int, default=None, help="rays per rendering chunk (default: RenderConfig's)")
    ap.add_argument("--occupancy", type=int, default=None, help="occupancy grid side (reference: 128)")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the per-section timing pass")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or (48 if cuda else 3)
    n_frames = args.frames or (8 if cuda else 1)

    torch.manual_seed(0)
    cfg = ModelConfig()  # the reference configuration (audio D=80: our log-mel default)
    if args.chunk:
        cfg = cfg.model_copy(update={"render": cfg.render.model_copy(update={"chunk_rays": args.chunk})})
    if args.occupancy:
        cfg = cfg.model_copy(update={"occupancy": cfg.occupancy.model_copy(update={"resolution": args.occupancy})})
    data = synthetic_dataset(args.side, cfg.audio.in_dim)
    model = ERNeRF(cfg)
    trainer = Trainer(model, data, HeadTrainConfig(rays_per_batch=args.rays), device=device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(2):  # warm-up (includes the first occupancy update)
        trainer.step()
    sync(device)
    t0 = time.perf_counter()
    logs = [trainer.step() for _ in range(steps)]
    sync(device)
    train_s = time.perf_counter() - t0

    poses = data.poses[torch.arange(n_frames) % FRAMES]
    trainer.render_frames(data.audio, poses[:1])  # warm-up
    sync(device)
    t0 = time.perf_counter()
    frames = trainer.render_frames(data.audio, poses, frames_per_batch=4)
    sync(device)
    render_s = time.perf_counter() - t0
    assert frames.shape == (n_frames, args.side, args.side, 3)

    breakdown = {}
    if not args.no_breakdown:
        barrier = (lambda: torch.cuda.synchronize(device)) if cuda else None
        for name, count, work in (("frame_ms", n_frames, lambda: trainer.render_frames(data.audio, poses,
                                                                                       frames_per_batch=4)),
                                  ("train_step_ms", 1, trainer.step)):
            sync(device)
            with SectionTimer(barrier) as timer:
                t0 = time.perf_counter()
                work()
                sync(device)
                total = time.perf_counter() - t0
            ms = {k: 1000 * timer.seconds[k] / count for k in SECTIONS if k in timer.seconds}
            ms["host"] = 1000 * total / count - sum(ms.values())
            breakdown[name] = {k: round(v, 2) for k, v in ms.items()}
            print(f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in breakdown[name].items()), file=sys.stderr)

    peak_mb = (torch.cuda.max_memory_allocated(device) if cuda
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    print(json.dumps({
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "threads": torch.get_num_threads(),
        "side": args.side,
        "rays_per_batch": args.rays,
        "train_steps": steps,
        "train_steps_per_s": round(steps / train_s, 4),
        "samples_per_ray": round(float(np.mean([float(x["samples_per_ray"]) for x in logs])), 2),
        "render_frames": n_frames,
        "chunk_rays": cfg.render.chunk_for(device),
        "render_frames_per_s": round(n_frames / render_s, 4),
        "peak_memory_mb": round(peak_mb, 1),
        **breakdown,
    }))


if __name__ == "__main__":
    main()
