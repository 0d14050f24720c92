"""Tracking is device-generic: the CPU runs the same code CUDA runs, only the frame chunk of the
photometric refinement differs (from the free GPU memory on CUDA). Tolerances: poses within
0.5 degrees and 1 % of depth."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from models.face3d import fit as F
from models.face3d import photometric as P
from models.face3d.morphable import generic_model
from models.face3d.render import render_frames
from tests.test_face3d import synthetic_clip

SIZE, FOCAL, FRAMES = 256, 550.0, 20
QUICK = replace(P.PhotoConfig(), iters=6, tex_iters=10, render_size=64)


@pytest.fixture(scope="session")
def prefect_server():
    """Overrides conftest's session Prefect server: these are model tests."""
    return None


@pytest.fixture(scope="module")
def clip():
    model = generic_model()
    truth, lms = synthetic_clip(model, FRAMES, size=SIZE, focal=FOCAL, seed=1)
    images, _ = render_frames(model, truth["id"], truth["exp"], truth["euler"], truth["trans"], FOCAL, SIZE,
                              tex=truth["tex"], light=truth["light"], background=0.45)
    return model, lms, (images * 255).round().to(torch.uint8)


def track_on(device: str, clip, config: P.PhotoConfig = QUICK) -> F.TrackResult:
    model, lms, images = clip
    model, lms = model.to(device=device), lms.to(device)
    track = F.fit_landmarks(lms, SIZE, model, focal=FOCAL)
    return P.refine_photometric(images, lms, model, track, config)


def assert_close_poses(a: F.TrackResult, b: F.TrackResult) -> None:
    rot = F.rotation_error_deg(a.euler.cpu(), b.euler.cpu())
    depth = (a.trans.cpu() - b.trans.cpu()).norm(dim=-1) / b.trans.cpu()[:, 2]
    assert float(rot.max()) < 0.5, rot
    assert float(depth.max()) < 0.01, depth


def test_chunk_on_cpu_is_the_config_and_on_cuda_follows_free_memory(monkeypatch):
    model = generic_model()
    assert P.frames_per_chunk(QUICK, model, torch.device("cpu"), 1500) == QUICK.chunk
    per_frame = P.frame_bytes(model, QUICK.render_size)
    for free, expected in ((10 * per_frame, QUICK.chunk), (400 * per_frame, 200), (10**6 * per_frame, 1500)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, free=free: (free, 2 * free))
        assert P.frames_per_chunk(QUICK, model, torch.device("cuda"), 1500) == expected


def test_one_chunk_of_all_frames_equals_the_cpu_chunks(clip):
    """What CUDA does (every frame in one chunk) stays within the tolerances of the CPU's chunks."""
    chunked = track_on("cpu", clip)
    whole = track_on("cpu", clip, replace(QUICK, chunk=FRAMES))
    assert_close_poses(whole, chunked)
    assert whole.euler.device.type == "cpu" and whole.light.shape == (FRAMES, 9, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tracking_matches_the_cpu(clip):
    on_cpu = track_on("cpu", clip)
    on_gpu = track_on("cuda", clip)
    assert on_gpu.euler.device.type == "cuda"
    assert_close_poses(on_gpu, on_cpu)
    assert abs(float(on_gpu.lmk_err.mean()) - float(on_cpu.lmk_err.mean())) < 0.2
