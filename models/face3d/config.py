"""The 3DMM fits' configs: torch-free, so that the tracking stage's parameters import without the
fits (models.face3d.fit and models.face3d.photometric keep them importable under their old names)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FitConfig:
    """Landmark fitting (weights in px^2 per squared unit of what they weigh)."""

    pose_iters: int = 6  # LM steps on the pose alone (mean face, neutral expression)
    iters: int = 30  # LM steps on pose, expression and identity together
    damping: float = 1e-3  # initial Marquardt damping
    tol: float = 1e-9  # stop when no sequence improves by this share of its loss
    cg_iters: int = 30  # conjugate-gradient steps per LM step (only with the temporal term)
    w_id: float = 0.005  # per frame, per unit^2 of identity (ER-NeRF's weights are of this size)
    w_exp: float = 0.005
    w_smooth_euler: float = 100.0  # per rad^2 of acceleration (1 px^2 for 0.1 rad / frame^2)
    w_smooth_trans: float = 0.03  # per mm^2
    w_smooth_exp: float = 0.1
    # Focal search: candidates (px for a 512 px image, scaled to the image), then a finer grid.
    focal_candidates: tuple[float, ...] = tuple(float(f) for f in range(600, 1501, 100))
    focal_step: float = 20.0  # refinement step, px at 512
    focal_refine: int = 4  # refinement candidates on each side of the best coarse one
    focal_frames: int = 32  # frames (evenly spread) used by the search
    # The tensors are small: one CPU thread is faster than several, and far faster when the
    # cores are shared. None keeps torch's setting.
    cpu_threads: int | None = 1


@dataclass(frozen=True)
class PhotoConfig:
    render_size: int = 96  # rendered window side, px (the face fills most of it)
    margin: float = 0.04  # window margin round the projected face
    chunk: int = 16  # frames optimised together
    iters: int = 30  # Adam steps per chunk
    raster_every: int = 10  # visibility refresh period, steps
    tex_frames: int = 8  # frames that estimate the albedo and the light
    tex_iters: int = 40
    lr_euler: float = 0.002  # rad
    lr_trans: float = 0.5  # mm
    lr_exp: float = 0.02
    lr_light: float = 0.02
    lr_tex: float = 0.05
    lr_id: float = 0.0  # > 0 also refines the identity in stage 1 (on synthetic data it did not help)
    w_photo: float = 1.0  # per unit of mean absolute RGB error in [0, 1]
    w_lmk: float = 0.01  # per px^2 (ER-NeRF weighs its colour term ~100x its landmark term)
    w_exp: float = 0.005
    w_tex: float = 0.001  # per frame, per unit^2 of texture coefficient
    w_id: float = 0.00005  # per frame, per unit^2 of identity (the landmark fit's weight x w_lmk)
    w_smooth_euler: float = 1.0  # per rad^2 of acceleration (the landmark fit's weights x w_lmk)
    w_smooth_trans: float = 0.0003  # per mm^2
    w_smooth_exp: float = 0.001
    cpu_threads: int | None = 1
    gpu_memory_share: float = 0.5  # on CUDA: share of the free memory the frames of a chunk may use
