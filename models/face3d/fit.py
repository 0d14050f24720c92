"""Landmark fitting of a morphable model to a whole clip at once (ER-NeRF's first tracking stage).

Device-generic: everything runs where the landmarks are (pass CUDA landmarks to fit on the GPU).

Unknowns: one identity `id (K_id)` shared by the clip, and per frame `euler (T, 3)`,
`trans (T, 3)` (mm, OpenCV camera frame) and `exp (T, K_exp)`; the focal length is searched
over a grid first (`search_focal`). Objective per sequence, in px^2 so the weights read alike:

    sum_t [ mean_l |proj(l, t) - lms(l, t)|^2 + w_exp |exp_t|^2 ] + w_id * T * |id|^2
    + sum_t sum_j w_smooth_j * (theta_j(t+1) - 2 theta_j(t) + theta_j(t-1))^2

with `theta = (euler, trans, exp)`; the temporal term penalises acceleration, so steady motion
costs nothing and jitter does.

The solver is a batched Levenberg-Marquardt (Gauss-Newton with Marquardt damping) rather than
Adam: the problem is a small nonlinear least squares per frame, and Adam needed hundreds of
steps to converge, leaving a bias that moved the focal search by several per cent. Every frame
is a tensor row: analytic Jacobians for all frames at once, a batched 16x16 solve per frame, and
the shared identity through the Schur complement of the frame blocks. The temporal term couples
neighbouring frames, so the damped Gauss-Newton system is solved by conjugate gradients,
preconditioned with that exact per-frame + identity solve.
Several focal candidates are just more sequences in the same batch. First a few steps move the
pose alone (closed-form weak-perspective start, mean face), then everything.

`fit_landmarks_per_frame` solves the same per-frame problem one frame at a time (identity fixed,
no temporal term): it exists only as the baseline the batched fit is compared against.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from models.checkpoint_io import save_atomic
from models.face3d.camera import (
    euler_to_matrix,
    euler_to_matrix_grad,
    geodesic_deg,
    matrix_to_euler,
    principal_point,
)
from models.face3d.config import FitConfig  # noqa: F401  (configs live there)
from models.face3d.morphable import MorphableModel
from talkflow.errors import InputError

_FLIP = (1.0, -1.0, -1.0)




_THREADS_LOCK = threading.Lock()
_threads_users = 0  # cpu_threads blocks open in any thread
_threads_before = 0  # torch's setting before the first of them


@contextmanager
def cpu_threads(n: int | None):
    """Temporarily run torch's CPU ops on `n` threads (process-wide; None: unchanged).

    Safe when blocks overlap in several threads (concurrent tasks): the setting seen before
    the first block is restored when the last one ends.
    """
    global _threads_users, _threads_before
    if n is None:
        yield
        return
    with _THREADS_LOCK:
        if _threads_users == 0:
            _threads_before = torch.get_num_threads()
        _threads_users += 1
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_users -= 1
            if _threads_users == 0 and torch.get_num_threads() != _threads_before:
                torch.set_num_threads(_threads_before)


@dataclass
class TrackResult:
    """A tracked clip: the `track_params.pt` content plus diagnostics."""

    id: Tensor  # (K_id,)
    exp: Tensor  # (T, K_exp)
    euler: Tensor  # (T, 3) rad, (pitch, yaw, roll)
    trans: Tensor  # (T, 3) mm, head origin in the OpenCV camera frame
    focal: float  # px
    image_size: int  # S, side of the square frames (principal point at S/2)
    lmk_err: Tensor  # (T,) mean landmark distance, px
    tex: Tensor | None = None  # (K_tex,) after photometric refinement
    light: Tensor | None = None  # (T, 9, 3) SH lighting after photometric refinement
    info: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return self.exp.shape[0]

    def track_params(self) -> dict[str, Tensor]:
        """ER-NeRF's `track_params.pt` layout (see docs/dataset.md)."""
        out = {
            "id": self.id.detach().cpu(),
            "exp": self.exp.detach().cpu(),
            "euler": self.euler.detach().cpu(),
            "trans": self.trans.detach().cpu(),
            "focal": torch.tensor([float(self.focal)]),
            "image_size": torch.tensor([int(self.image_size)]),
            "lmk_err": self.lmk_err.detach().cpu(),
        }
        if self.tex is not None:
            out["tex"] = self.tex.detach().cpu()
        if self.light is not None:
            out["light"] = self.light.detach().cpu()
        return out

    def save(self, path: str | Path) -> Path:
        return save_atomic(self.track_params(), path)


def check_landmarks(lms: Tensor, image_size: int) -> Tensor:
    """Validate (T, 68, 2) pixel landmarks before any work; returns them as float32."""
    lms = torch.as_tensor(lms)
    if lms.ndim != 3 or lms.shape[1:] != (68, 2) or lms.shape[0] == 0:
        raise InputError(f"landmarks must have shape (T, 68, 2) with T >= 1, got {tuple(lms.shape)}")
    if not torch.isfinite(lms).all():
        raise InputError("landmarks contain NaN or infinite values; re-run landmark detection on those frames")
    if image_size <= 0:
        raise InputError(f"image size must be positive, got {image_size}")
    flat = (lms.float().std(dim=1) < 1.0).any(-1).nonzero()[:, 0]  # (frames whose points coincide)
    if len(flat):
        raise InputError(f"landmarks of frame(s) {flat[:10].tolist()} do not spread over a face "
                         "(all points within 1 px); drop those frames or re-run landmark detection")
    return lms.float()


def init_pose(lms: Tensor, focal: Tensor, image_size: int, points: Tensor) -> tuple[Tensor, Tensor]:
    """Closed-form weak-perspective pose: lms (..., 68, 2), focal (...,), points (68, 3) head frame.

    Fits an affine camera to the landmarks, orthonormalises its rows into a rotation and reads
    the depth from its scale. -> euler (..., 3), trans (..., 3).
    """
    cx, cy = principal_point(image_size)
    xn = (lms - lms.new_tensor([cx, cy])) / focal[..., None, None]  # normalised image coordinates
    centre3 = points.mean(0)
    pc = points - centre3  # (68, 3)
    pinv = pc @ torch.linalg.inv(pc.T @ pc)  # (68, 3)
    centre2 = xn.mean(-2)  # (..., 2)
    a = (xn - centre2[..., None, :]).transpose(-1, -2) @ pinv  # (..., 2, 3) affine rows
    s1, s2 = a[..., 0, :].norm(dim=-1), a[..., 1, :].norm(dim=-1)
    r1 = a[..., 0, :] / s1[..., None]
    r2 = a[..., 1, :] - (a[..., 1, :] * r1).sum(-1, keepdim=True) * r1
    r2 = r2 / r2.norm(dim=-1, keepdim=True)
    m = torch.stack([r1, r2, torch.cross(r1, r2, dim=-1)], -2)  # (..., 3, 3) = FLIP @ R
    rot = m * m.new_tensor(_FLIP)[:, None]
    depth = 2.0 / (s1 + s2)  # depth of the landmarks' centroid
    trans = depth[..., None] * torch.cat([centre2, torch.ones_like(centre2[..., :1])], -1) - m @ centre3
    return matrix_to_euler(rot), trans


@dataclass
class _Problem:
    """Fixed data of one batched fit: C sequences of T frames."""

    lms: Tensor  # (C, T, 68, 2)
    focal: Tensor  # (C,)
    image_size: int
    model: MorphableModel
    cfg: FitConfig
    smooth: bool

    def __post_init__(self) -> None:
        if self.model.mean.dtype != self.lms.dtype or self.model.mean.device != self.lms.device:
            self.model = self.model.to(device=self.lms.device, dtype=self.lms.dtype)

    def smooth_weights(self, n_active: int) -> Tensor:
        """(P,) temporal weight of each frame parameter (euler, trans, exp)."""
        c = self.cfg
        w = [c.w_smooth_euler] * 3 + [c.w_smooth_trans] * 3 + [c.w_smooth_exp] * self.model.n_exp
        on = self.smooth and self.lms.shape[1] >= 3
        return self.lms.new_tensor(w[:n_active]) * float(on)


def _project_landmarks(p: _Problem, id: Tensor, theta: Tensor, jacobians: bool, n_active: int = 0):
    """Landmark residuals (C, T, 136) = (proj - lms) / sqrt(68), and optionally their Jacobians
    w.r.t. the first `n_active` frame parameters (C, T, 136, P) and the identity (C, T, 136, K)."""
    model = p.model
    c, t = theta.shape[:2]
    mean, id_b, exp_b = model.landmark_basis()  # (68, 3), (68, 3, K), (68, 3, E)
    pts = mean + torch.einsum("ldk,sk->sld", id_b, id)[:, None]  # (C, 1, 68, 3)
    pts = pts + torch.einsum("ldk,stk->stld", exp_b, theta[..., 6:])  # (C, T, 68, 3)
    rot, drot = euler_to_matrix_grad(theta[..., :3])  # (C, T, 3, 3), (C, T, 3, 3, 3)
    flip = theta.new_tensor(_FLIP)
    rf = rot * flip[:, None]  # FLIP @ R
    cam = pts @ rf.transpose(-1, -2) + theta[..., None, 3:6]  # (C, T, 68, 3)
    z = cam[..., 2:3].clamp_min(1e-3)
    f = p.focal[:, None, None, None]
    cx, cy = principal_point(p.image_size)
    px = f * cam[..., :2] / z + theta.new_tensor([cx, cy])
    scale = 68 ** -0.5
    res = ((px - p.lms) * scale).reshape(c, t, 136)
    if not jacobians:
        return res, None, None
    # d cam / d parameter, (C, T, 68, 3, n): euler, trans, exp columns.
    cols = [torch.einsum("stiab,stlb->stlai", drot * flip[:, None], pts)]
    eye = torch.eye(3, dtype=theta.dtype, device=theta.device)
    cols.append(eye.expand(c, t, 68, 3, 3))
    if n_active > 6:
        cols.append(torch.einsum("stab,lbk->stlak", rf, exp_b[..., : n_active - 6]))
    dcam = torch.cat(cols, -1)[..., :n_active]

    def through_projection(d: Tensor) -> Tensor:  # (C, T, 68, 3, n) -> (C, T, 136, n)
        duv = (f[..., None] / z[..., None]) * (d[..., :2, :] - (cam[..., :2, None] / z[..., None]) * d[..., 2:3, :])
        return (duv * scale).reshape(c, t, 136, -1)

    jt = through_projection(dcam)
    ji = through_projection(torch.einsum("stab,lbk->stlak", rf, id_b)) if n_active > 6 else None
    return res, jt, ji


def _loss(p: _Problem, id: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    """-> loss per sequence (C,), mean squared landmark distance per frame (C, T) px^2."""
    res, _, _ = _project_landmarks(p, id, theta, jacobians=False)
    sq = (res**2).sum(-1)  # (C, T)
    t = theta.shape[1]
    loss = sq.sum(1) + p.cfg.w_exp * (theta[..., 6:] ** 2).sum((1, 2)) + p.cfg.w_id * t * (id**2).sum(1)
    w = p.smooth_weights(theta.shape[-1])
    if w.any():
        acc = theta[:, 2:] - 2 * theta[:, 1:-1] + theta[:, :-2]
        loss = loss + (w * acc**2).sum((1, 2))
    return loss, sq


def _second_difference_t(x: Tensor) -> Tensor:
    """(C, T, n) -> D^T D x along time, D the second difference (T-2 rows)."""
    acc = x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2]
    out = torch.zeros_like(x)
    out[:, :-2] += acc
    out[:, 1:-1] -= 2 * acc
    out[:, 2:] += acc
    return out


@dataclass
class _System:
    """Damped Gauss-Newton system of C sequences: frame blocks A (C,T,n,n), identity block D
    (C,K,K), coupling B (C,T,n,K), temporal weights w (n,) on D^T D. Factorised once per step."""

    a: Tensor
    b: Tensor | None
    d: Tensor | None
    w: Tensor

    def __post_init__(self) -> None:
        t = self.a.shape[1]
        band = self.a.new_zeros(t)  # diagonal of D^T D: 1, 5, 6, ..., 6, 5, 1
        if t >= 3:
            band[:-2] += 1.0
            band[1:-1] += 4.0
            band[2:] += 1.0
        pre = self.a + torch.diag_embed(band[:, None] * self.w)  # (C, T, n, n)
        self.chol = torch.linalg.cholesky(pre)
        if self.b is not None:
            self.ainv_b = torch.cholesky_solve(self.b, self.chol)  # (C, T, n, K)
            schur = self.d - (self.b.transpose(-1, -2) @ self.ainv_b).sum(1)
            self.schur_chol = torch.linalg.cholesky(schur)

    def apply(self, xt: Tensor, xi: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The full operator H x (frames, identity)."""
        yt = (self.a @ xt[..., None])[..., 0] + self.w * _second_difference_t(xt)
        if self.b is None:
            return yt, None
        yt = yt + (self.b @ xi[:, None, :, None])[..., 0]
        yi = (self.b.transpose(-1, -2) @ xt[..., None])[..., 0].sum(1) + (self.d @ xi[..., None])[..., 0]
        return yt, yi

    def precondition(self, rt: Tensor, ri: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Exact inverse of H without the temporal coupling between frames (Schur on the id)."""
        u = torch.cholesky_solve(rt[..., None], self.chol)  # (C, T, n, 1)
        if self.b is None:
            return u[..., 0], None
        zi = torch.cholesky_solve((ri - (self.b.transpose(-1, -2) @ u).sum(1)[..., 0])[..., None],
                                  self.schur_chol)[..., 0]
        return (u - self.ainv_b @ zi[:, None, :, None])[..., 0], zi


def _dot(at: Tensor, ai: Tensor | None, bt: Tensor, bi: Tensor | None) -> Tensor:
    out = (at * bt).sum((1, 2))
    return out if ai is None else out + (ai * bi).sum(1)


def _pcg(system: _System, gt: Tensor, gi: Tensor | None, iters: int) -> tuple[Tensor, Tensor | None]:
    """Solve H x = g for every sequence by preconditioned conjugate gradients."""
    xt, xi = system.precondition(gt, gi)
    if not bool(system.w.any()) or gt.shape[1] < 3:
        return xt, xi  # no temporal coupling: the preconditioner is the exact inverse
    ht, hi = system.apply(xt, xi)
    rt, ri = gt - ht, (None if gi is None else gi - hi)
    zt, zi = system.precondition(rt, ri)
    pt, pi = zt, zi
    rz = _dot(rt, ri, zt, zi)
    start = rz.abs().clamp_min(1e-30)
    for _ in range(iters):
        qt, qi = system.apply(pt, pi)
        alpha = rz / _dot(pt, pi, qt, qi).clamp_min(1e-30)
        xt = xt + alpha[:, None, None] * pt
        rt = rt - alpha[:, None, None] * qt
        if xi is not None:
            xi = xi + alpha[:, None] * pi
            ri = ri - alpha[:, None] * qi
        zt, zi = system.precondition(rt, ri)
        rz_new = _dot(rt, ri, zt, zi)
        if bool((rz_new.abs() < 1e-10 * start).all()):
            break
        beta = rz_new / rz.clamp_min(1e-30)
        pt = zt + beta[:, None, None] * pt
        if pi is not None:
            pi = zi + beta[:, None] * pi
        rz = rz_new
    return xt, xi


def _lm_step(p: _Problem, id: Tensor, theta: Tensor, n_active: int, fit_id: bool, lam: Tensor) -> tuple[Tensor, Tensor]:
    """One damped Gauss-Newton step for every sequence -> candidate (id, theta)."""
    cfg = p.cfg
    t = theta.shape[1]
    res, jt, ji = _project_landmarks(p, id, theta, jacobians=True, n_active=n_active)
    th = theta[..., :n_active]
    prior = th.new_zeros(n_active)
    prior[6:] = cfg.w_exp
    a = jt.transpose(-1, -2) @ jt + torch.diag_embed(prior)  # (C, T, n, n)
    g = (jt.transpose(-1, -2) @ res[..., None])[..., 0] + prior * th  # (C, T, n), half gradient
    w = p.smooth_weights(n_active)
    g = g + w * _second_difference_t(th)
    diag = a.diagonal(dim1=-2, dim2=-1)
    a = a + torch.diag_embed(lam[:, None, None] * diag + 1e-7 * diag.mean(-1, keepdim=True) + 1e-9)
    if fit_id:
        k = id.shape[-1]
        b = jt.transpose(-1, -2) @ ji  # (C, T, n, K)
        d = (ji.transpose(-1, -2) @ ji).sum(1) + cfg.w_id * t * torch.eye(k, dtype=id.dtype, device=id.device)
        dd = d.diagonal(dim1=-2, dim2=-1)
        d = d + torch.diag_embed(lam[:, None] * dd + 1e-7 * dd.mean(-1, keepdim=True) + 1e-9)
        gi = (ji.transpose(-1, -2) @ res[..., None])[..., 0].sum(1) + cfg.w_id * t * id  # (C, K)
    else:
        b = d = gi = None
    dth, did = _pcg(_System(a, b, d, w), g, gi, cfg.cg_iters)
    new_id = id if did is None else id - did
    return new_id, torch.cat([th - dth, theta[..., n_active:]], -1)


def _lm(p: _Problem, id: Tensor, theta: Tensor, n_active: int, fit_id: bool, steps: int) -> tuple[Tensor, Tensor]:
    """Levenberg-Marquardt on every sequence at once (per-sequence damping and acceptance)."""
    loss, _ = _loss(p, id, theta)
    lam = torch.full_like(loss, p.cfg.damping)
    for _ in range(steps):
        new_id, new_theta = _lm_step(p, id, theta, n_active, fit_id, lam)
        new_loss, _ = _loss(p, new_id, new_theta)
        ok = torch.isfinite(new_loss) & (new_loss < loss)
        gain = torch.where(ok, (loss - new_loss) / loss.clamp_min(1e-12), torch.zeros_like(loss))
        id = torch.where(ok[:, None], new_id, id)
        theta = torch.where(ok[:, None, None], new_theta, theta)
        loss = torch.where(ok, new_loss, loss)
        lam = torch.where(ok, (lam * 0.3).clamp_min(1e-7), lam * 5.0)
        if bool((ok & (gain < p.cfg.tol)).all()) or bool((lam > 1e6).all()):
            break  # converged everywhere, or no sequence can make progress
    return id, theta


def _fit(p: _Problem, id_fixed: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Batched fit of C sequences -> id (C,K), exp (C,T,E), euler, trans (C,T,3), loss (C,), sq (C,T)."""
    c, t = p.lms.shape[:2]
    model, cfg = p.model, p.cfg
    dtype = p.lms.dtype
    start_id = p.lms.new_zeros(model.n_id) if id_fixed is None else id_fixed.to(p.lms.device, dtype)
    points = model.landmarks(start_id, p.lms.new_zeros(model.n_exp))[0]  # (68, 3)
    euler, trans = init_pose(p.lms, p.focal[:, None].expand(c, t), p.image_size, points)
    id = start_id[None].repeat(c, 1)
    theta = torch.cat([euler, trans, p.lms.new_zeros(c, t, model.n_exp)], -1)  # (C, T, P)
    with torch.no_grad():
        id, theta = _lm(p, id, theta, 6, False, cfg.pose_iters)
        id, theta = _lm(p, id, theta, theta.shape[-1], id_fixed is None, cfg.iters)
        loss, sq = _loss(p, id, theta)
    return id, theta[..., 6:], theta[..., :3], theta[..., 3:6], loss, sq


def _landmark_error(p: _Problem, id: Tensor, exp: Tensor, euler: Tensor, trans: Tensor) -> Tensor:
    """-> (C, T) mean Euclidean landmark distance, px."""
    res, _, _ = _project_landmarks(p, id, torch.cat([euler, trans, exp], -1), jacobians=False)
    return (res.view(*res.shape[:2], 68, 2) * 68**0.5).norm(dim=-1).mean(-1)


def search_focal(lms: Tensor, image_size: int, model: MorphableModel, candidates: tuple[float, ...] | None = None,
                 config: FitConfig = FitConfig()) -> float:
    """Best focal length (px) for (T, 68, 2) landmarks of S x S frames.

    Fits `config.focal_frames` evenly spread frames once per candidate (all candidates in one
    batch; default ER-NeRF's 600..1500 px at S = 512, scaled to S), then a finer grid of
    `focal_step` round the best, and interpolates the minimum with a parabola.
    """
    lms = check_landmarks(lms, image_size)
    with cpu_threads(config.cpu_threads):
        return _search_focal(lms, image_size, model, candidates, config)


def _search_focal(lms: Tensor, image_size: int, model: MorphableModel, candidates: tuple[float, ...] | None,
                  config: FitConfig) -> float:
    scale = image_size / 512.0
    if candidates is None:
        candidates = tuple(f * scale for f in config.focal_candidates)
    if not candidates or min(candidates) <= 0:
        raise InputError(f"focal candidates must be positive, got {candidates}")
    t = lms.shape[0]
    pick = torch.linspace(0, t - 1, min(config.focal_frames, t)).round().long().unique()
    sub = lms[pick]

    def losses(focals: list[float]) -> Tensor:
        f = torch.tensor(focals, dtype=sub.dtype, device=sub.device)
        prob = _Problem(sub[None].expand(len(focals), -1, -1, -1), f, image_size, model, config, smooth=False)
        return _fit(prob, None)[4]

    coarse = sorted(candidates)
    best = coarse[int(losses(coarse).argmin())]
    step = config.focal_step * scale
    fine = [best + k * step for k in range(-config.focal_refine, config.focal_refine + 1) if best + k * step > 0]
    loss = losses(fine)
    i = int(loss.argmin())
    if 0 < i < len(fine) - 1:  # parabola through the minimum and its neighbours
        l0, l1, l2 = (float(x) for x in loss[i - 1:i + 2])
        denom = l0 - 2 * l1 + l2
        if denom > 0:
            return fine[i] + step * 0.5 * (l0 - l2) / denom
    return fine[i]


def fit_landmarks(lms: Tensor, image_size: int, model: MorphableModel, focal: float | None = None,
                  config: FitConfig = FitConfig(), id: Tensor | None = None) -> TrackResult:
    """Fit the model to (T, 68, 2) pixel landmarks of S x S frames, all frames at once.

    `focal=None` searches it first (`search_focal`); `id` fixes the identity instead of fitting it.
    """
    lms = check_landmarks(lms, image_size)
    if focal is not None and focal <= 0:
        raise InputError(f"focal length must be positive, got {focal}")
    with cpu_threads(config.cpu_threads):
        if focal is None:
            focal = _search_focal(lms, image_size, model, None, config)
        return _fit_landmarks(lms, image_size, model, focal, config, id)


def _fit_landmarks(lms: Tensor, image_size: int, model: MorphableModel, focal: float, config: FitConfig,
                   id: Tensor | None) -> TrackResult:
    prob = _Problem(lms[None], lms.new_tensor([float(focal)]), image_size, model, config, smooth=True)
    id_fixed = None if id is None else torch.as_tensor(id, dtype=lms.dtype, device=lms.device)
    id_, exp, euler, trans, _, _ = _fit(prob, id_fixed)
    err = _landmark_error(prob, id_, exp, euler, trans)
    return TrackResult(id=id_[0], exp=exp[0], euler=euler[0], trans=trans[0], focal=float(focal),
                       image_size=image_size, lmk_err=err[0])


def fit_landmarks_per_frame(lms: Tensor, image_size: int, model: MorphableModel, focal: float,
                            config: FitConfig = FitConfig(), id: Tensor | None = None) -> TrackResult:
    """Baseline only: the same fit, one frame at a time in a Python loop.

    The identity is fixed (`id`, default the mean face) and there is no temporal term, so each
    frame is an independent problem; `fit_landmarks(..., id=id)` with the `w_smooth_*` weights
    at 0 solves the same problems in one batch.
    """
    lms = check_landmarks(lms, image_size)
    id_fixed = lms.new_zeros(model.n_id) if id is None else torch.as_tensor(id, dtype=lms.dtype)
    f = torch.tensor([float(focal)])
    outs = []
    with cpu_threads(config.cpu_threads):
        for t in range(lms.shape[0]):
            prob = _Problem(lms[t][None, None], f, image_size, model, config, smooth=False)
            id_, exp, euler, trans, _, _ = _fit(prob, id_fixed)
            err = _landmark_error(prob, id_, exp, euler, trans)[0, 0]
            outs.append((exp[0, 0], euler[0, 0], trans[0, 0], err))
    exp, euler, trans, err = (torch.stack(x) for x in zip(*outs))
    return TrackResult(id=id_fixed, exp=exp, euler=euler, trans=trans, focal=float(focal),
                       image_size=image_size, lmk_err=err)


def rotation_error_deg(euler_a: Tensor, euler_b: Tensor) -> Tensor:
    """(T, 3) x 2 -> (T,) geodesic angle between the two head rotations, degrees."""
    return geodesic_deg(euler_to_matrix(euler_a), euler_to_matrix(euler_b))
