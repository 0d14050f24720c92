"""ER-NeRF's fast paths, proven on the CPU against the reference maths.

- fixed-shape rendering (the CUDA path: every candidate slot evaluated, the mask multiplied in)
  equals the gathered one (the CPU path), values and gradients; a training step too;
- the compositing equals a scalar re-statement of the reference's composite_rays_train_triplane
  (unweighted ambient sums, a ray stops once its transmittance falls below T_thresh);
- the fused Triton hash-grid kernels equal the torch lookup, values and gradients, on the real head
  and torso grids (Triton's interpreter, TRITON_INTERPRET=1, in a subprocess: Triton reads it when
  imported); without a working Triton the GPU path falls back to torch with one warning;
- no host synchronisation in head, lips and torso steps and a render batch, on the meta device
  under models/ernerf/syncguard.py's no_host_sync;
- memory: chunk sizes and the training frames' placement follow what the process may use;
- the training terms: random 32x32 lips patches, the weights' EMA; resuming on another device;
- CUDA only (skipped here): the same four paths under torch.cuda.set_sync_debug_mode.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.ernerf.encodings import HashGrid2D, HashGridConfig, TriPlaneHashEncoding, level_layout, use_fused
from models.ernerf.fields import HeadFieldConfig, TorsoFieldConfig, rigid_inverse
from models.ernerf.losses import ssim
from models.ernerf.model import ERNeRF
from models.ernerf.rendering import (
    HeadConditioning,
    RenderConfig,
    composite_samples,
    rays_for_memory,
    render_head,
)
from models.ernerf.syncguard import HostSyncError, no_host_sync
from models.ernerf.trainer import (
    HeadTrainConfig,
    LipsTrainConfig,
    TorsoTrainConfig,
    Trainer,
    WeightEMA,
    frames_on_device,
    load_model,
)
from talkflow.errors import InputError
from tests.test_ernerf import make_dataset, tiny_model_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def train_split(tmp_path_factory):
    from models.ernerf.dataset import load_split

    root = make_dataset(tmp_path_factory.mktemp("ernerf_fast") / "person")
    return load_split(root, "train", 29)


def _rays(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays from a sphere of radius 3 towards points near the origin (some miss the head)."""
    g = torch.Generator().manual_seed(seed)
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3
    target = (torch.rand(n, 3, generator=g) * 2 - 1) * 0.9
    return origins, torch.nn.functional.normalize(target - origins, dim=-1)


# --------------------------------------------------------------------------- fixed shapes
def test_fixed_shape_rendering_equals_gathered_samples():
    torch.manual_seed(0)
    model = ERNeRF(tiny_model_config())
    model.grid.update(lambda x: torch.where(x.norm(dim=-1) < 0.5, 50.0, 0.0))  # a ball is occupied
    r = 300
    origins, dirs = _rays(r)
    cond = HeadConditioning(torch.randn(r, 16), torch.rand(r, 1), torch.randn(r, 4))
    jitter = torch.rand(r)
    out, grads = {}, {}
    for fixed in (False, True):
        model.zero_grad(set_to_none=True)
        res = render_head(model.head, origins, dirs, cond, model.grid.occupied, model.cfg.render, jitter,
                          with_uncertainty=True, fixed_shape=fixed)
        loss = sum((res[k] * (1 + torch.arange(r))).sum() for k in ("opacity", "ambient_aud", "ambient_eye"))
        (loss + res["rgb"].sum() + res["uncertainty"].sum() + res["depth"].sum()).backward()
        out[fixed] = res
        grads[fixed] = {k: p.grad.clone() for k, p in model.head.named_parameters() if p.grad is not None}
    assert 0 < int(out[False]["num_samples"]) < r * model.cfg.render.max_samples
    assert int(out[True]["num_samples"]) == int(out[False]["num_samples"])
    assert out[True]["samples"][0].shape[0] == r * model.cfg.render.max_samples  # every slot evaluated
    for k in ("rgb", "opacity", "depth", "ambient_aud", "ambient_eye", "uncertainty"):
        torch.testing.assert_close(out[True][k], out[False][k], rtol=1e-5, atol=1e-6, msg=k)
    assert grads[True].keys() == grads[False].keys() and len(grads[True]) > 5
    for k in grads[True]:
        torch.testing.assert_close(grads[True][k], grads[False][k], rtol=1e-4, atol=1e-6, msg=k)


def test_training_steps_equal_with_fixed_shapes(train_split):
    """Same seeds, same rays: a fixed-shape (CUDA-style) trainer follows the gathered one."""
    runs = {}
    for fixed in (False, True):
        cfg = tiny_model_config()
        cfg = cfg.model_copy(update={"render": cfg.render.model_copy(update={"fixed_shape": fixed})})
        torch.manual_seed(0)
        trainer = Trainer(ERNeRF(cfg), train_split, HeadTrainConfig(steps=3, rays_per_batch=256, lambda_smooth=0.0),
                          device="cpu")
        logs = trainer.train()
        runs[fixed] = (logs, trainer.model.state_dict())
    for a, b in zip(runs[False][0], runs[True][0]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["samples_per_ray"] == b["samples_per_ray"]
    for k, v in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][k], v, rtol=1e-4, atol=1e-6, msg=k)


def test_device_data_gathers_the_datasets_composite(train_split):
    trainer = Trainer(ERNeRF(tiny_model_config()), train_split, HeadTrainConfig(steps=1), device="cpu")
    flat = torch.randint(train_split.height * train_split.width, (500,))
    for i in (0, 3):
        old = train_split.torso_over_background(i).view(-1, 3)[flat]  # the former per-frame composite
        torch.testing.assert_close(trainer.dev.torso_over_background(i, flat), old, rtol=0, atol=0)
        torch.testing.assert_close(trainer.dev.target(i, flat), train_split.images[i].view(-1, 3)[flat].float() / 255)


# ---------------------------------------------------------------------------- compositing
def _reference_composite(sigma, rgb, amb_aud, amb_eye, unc, t, count, step, t_thresh):
    """Scalar loop of the reference's composite_rays_train_triplane (per ray, its first ``count`` samples)."""
    rows = []
    for i in range(sigma.shape[0]):
        big_t, acc = 1.0, dict(rgb=[0.0, 0.0, 0.0], opacity=0.0, depth=0.0, aud=0.0, eye=0.0, unc=0.0)
        for j in range(int(count[i])):
            alpha = 1 - math.exp(-float(sigma[i, j]) * step)
            w = alpha * big_t
            acc["rgb"] = [c + w * float(rgb[i, j, k]) for k, c in enumerate(acc["rgb"])]
            acc["opacity"] += w
            acc["depth"] += w * float(t[i, j])
            acc["aud"] += float(amb_aud[i, j])  # no weight: the reference sums the raw attention
            acc["eye"] += float(amb_eye[i, j])
            acc["unc"] += w * float(unc[i, j])
            big_t *= 1 - alpha
            if big_t < t_thresh:
                break
        rows.append(acc)
    return rows


@pytest.mark.parametrize("t_thresh", [1e-4, 0.0])
def test_compositing_matches_the_reference_loop(t_thresh):
    g = torch.Generator().manual_seed(1)
    r, m, step = 12, 10, 0.05
    sigma = torch.rand(r, m, generator=g, dtype=torch.float64) * 40
    sigma[0] = 0.0  # empty ray: opacity 0, ambient still summed
    sigma[1, 2] = 1e6  # opaque sample: the ray stops after it
    rgb = torch.rand(r, m, 3, generator=g, dtype=torch.float64)
    amb_aud, amb_eye, unc = (torch.rand(r, m, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.cumsum(torch.full((r, m), step, dtype=torch.float64), 1)
    count = torch.randint(0, m + 1, (r,), generator=g)
    count[:2] = m
    mask = torch.arange(m)[None, :] < count[:, None]  # the sampler keeps a prefix of the slots
    out = composite_samples(sigma, rgb, amb_aud, amb_eye, unc, t, mask, step, t_thresh)
    ref = _reference_composite(sigma, rgb, amb_aud, amb_eye, unc, t, count, step, t_thresh)
    for i, row in enumerate(ref):
        torch.testing.assert_close(out["rgb"][i], torch.tensor(row["rgb"], dtype=torch.float64))
        for k, key in (("opacity", "opacity"), ("depth", "depth"), ("ambient_aud", "aud"),
                       ("ambient_eye", "eye"), ("uncertainty", "unc")):
            assert float(out[k][i]) == pytest.approx(row[key], rel=1e-9, abs=1e-12), (i, k)
    assert float(out["opacity"][0]) == 0 and float(out["ambient_aud"][0]) == pytest.approx(float(amb_aud[0].sum()))
    stopped = 3 if t_thresh else m  # the opaque third sample ends the ray (with a threshold)
    assert float(out["ambient_aud"][1]) == pytest.approx(float(amb_aud[1, :stopped].sum()))


def test_an_infinite_density_composites_to_full_opacity():
    """A sample whose density overflows to inf is opaque: the ray's opacity is 1 and its colour that
    sample's (inf - inf in the transmittance test once dropped it: opacity 0.632 here)."""
    r, m, step = 2, 4, 0.5
    sigma = torch.tensor([[2.0, 0.0, math.inf, 3.0], [math.inf, 1.0, 1.0, 1.0]])
    rgb = torch.zeros(r, m, 3)
    rgb[0, 2] = torch.tensor([0.2, 0.4, 0.6])
    rgb[1, 0] = 1.0
    zeros = torch.zeros(r, m)
    t = torch.arange(m).float().expand(r, m)
    mask = torch.ones(r, m, dtype=torch.bool)
    out = composite_samples(sigma, rgb, zeros, zeros, zeros, t, mask, step, t_thresh=1e-4)
    assert torch.isfinite(out["rgb"]).all() and torch.isfinite(out["opacity"]).all()
    torch.testing.assert_close(out["opacity"], torch.ones(r))
    seen = 1 - math.exp(-2.0 * step)  # the first sample's opacity; the inf sample takes the rest
    torch.testing.assert_close(out["rgb"][0], (1 - seen) * torch.tensor([0.2, 0.4, 0.6]))
    torch.testing.assert_close(out["rgb"][1], torch.ones(3))


def test_memory_sized_chunks():
    assert rays_for_memory(0, 16) == 4096  # never below the floor
    assert rays_for_memory(10**15, 16) == 2**20  # never above the cap
    rays = rays_for_memory(8 * 2**30, 16)  # 8 GiB free
    assert rays & (rays - 1) == 0 and rays * 16 * 4096 <= 8 * 2**30 < rays * 2 * 16 * 4096
    assert RenderConfig(chunk_rays=1234).chunk_for(torch.device("cpu")) == 1234
    assert RenderConfig().chunk_for(torch.device("cpu")) == 4096


def _fake_gpu_memory(monkeypatch, free: int, reserved: int, allocated: int) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 141 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: reserved)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: allocated)


def test_chunks_count_the_allocators_cached_memory(monkeypatch):
    """1 GiB free for the driver, but 4 GiB of PyTorch's own cache unused: the process may use 5 GiB,
    and a chunk takes memory_share of that (free // 2 alone gave 8,192 rays here)."""
    gib = 2**30
    _fake_gpu_memory(monkeypatch, free=gib, reserved=6 * gib, allocated=2 * gib)
    cuda = torch.device("cuda")
    assert RenderConfig().chunk_for(cuda) == rays_for_memory(int(5 * gib * 0.5), 16) == 32768
    assert RenderConfig(memory_share=0.125).chunk_for(cuda) == rays_for_memory(int(5 * gib * 0.125), 16) == 8192


def test_training_frames_go_to_the_gpu_only_within_budget(monkeypatch):
    """8,000 frames of 512 px (images and torso: 14.7 GB) fit an H200 at the default share, not a
    24 GB card; then they stay on the host. On the CPU they are always views, unless share is 0."""
    frames = 8000 * 512 * 512 * 7
    cuda = torch.device("cuda")
    _fake_gpu_memory(monkeypatch, free=130 * 2**30, reserved=0, allocated=0)
    assert frames_on_device(frames, cuda, 0.5)
    _fake_gpu_memory(monkeypatch, free=21 * 2**30, reserved=2 * 2**30, allocated=2**30)
    assert not frames_on_device(frames, cuda, 0.5) and frames_on_device(frames // 4, cuda, 0.5)
    assert frames_on_device(frames, torch.device("cpu"), 0.5) and not frames_on_device(1, torch.device("cpu"), 0.0)


def test_frames_on_the_host_train_as_frames_on_the_device(train_split):
    """Frames kept on the host (each step uploads its own) give the same steps as resident frames."""
    runs = []
    for share in (0.5, 0.0):
        torch.manual_seed(0)
        trainer = Trainer(ERNeRF(tiny_model_config()), train_split,
                          HeadTrainConfig(steps=3, rays_per_batch=256, device_data_share=share), device="cpu")
        assert trainer.dev.resident == (share > 0)
        runs.append([log["loss"] for log in trainer.train()])
    assert runs[0] == runs[1]


# ---------------------------------------------------------------------------- Triton kernels
def _compare_backends(module: torch.nn.Module, grids, x: torch.Tensor, label: str) -> None:
    """Values and table gradients of the Triton kernels against the torch lookup; the upstream
    gradient is zero on every 5th point (the empty slots of fixed-shape sampling)."""
    outs, grads = {}, {}
    upstream = None
    for backend in ("torch", "triton"):
        for grid in grids:
            grid.backend = backend
        module.zero_grad(set_to_none=True)
        y = module(x)
        if upstream is None:
            upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(5))
            upstream[::5] = 0
        (y * upstream).sum().backward()
        outs[backend] = y.detach()
        grads[backend] = [grid.table.grad.clone() for grid in grids]
    assert outs["torch"].abs().max() > 0, label
    torch.testing.assert_close(outs["triton"], outs["torch"], rtol=1e-4, atol=1e-5, msg=label)
    for a, b in zip(grads["triton"], grads["torch"]):
        assert (b != 0).sum() > 100, label
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=label)


def kernel_points(n: int, cfg: HashGridConfig, seed: int) -> torch.Tensor:
    """(n, 2) points for the kernel tests: random in [-0.1, 1.1]^2 (some outside [0, 1]^2), then
    the corners and edges of the square and, for every level, points lying exactly on its vertices
    (x * scale + 0.5 an integer in fp32)."""
    x = torch.rand(n, 2, generator=torch.Generator().manual_seed(seed)) * 1.2 - 0.1
    special = [[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 0.3], [-1e-7, 0.5]]
    for scale in level_layout(cfg).scales:
        s = torch.tensor(scale, dtype=torch.float32)
        cand = ((torch.arange(1, 40, dtype=torch.float64) - 0.5) / scale).float()
        pos = cand * s + 0.5
        on = cand[(pos == pos.floor()) & (cand <= 1)][:3]
        special += [[float(v), float(w)] for v, w in zip(on, on.flip(0))]
    k = min(len(special), n)
    x[:k] = torch.tensor(special[:k])
    return x


HEAD_GRID = HeadFieldConfig().grid.model_copy(update={"init_range": 1.0})  # 12 levels, F=1, 2^14, hash
TORSO_GRID = TorsoFieldConfig().grid.model_copy(update={"init_range": 1.0})  # 16 levels, F=2, 2^16, tiled


def check_kernels(points: int = 3000) -> None:
    """The fused kernels against the torch lookup, values and table gradients (fp32), on ER-NeRF's
    head and torso grids, instant-ngp's default hash grid (F=2, hashed) and the head's tri-plane
    encoding; ``points`` leaves a ragged last block (BLOCK=128). Run in a process started with
    TRITON_INTERPRET=1 (Triton reads it when it is imported)."""
    from models.ernerf.hashgrid_triton import BLOCK

    assert os.environ.get("TRITON_INTERPRET") == "1"
    assert points > 2 * BLOCK and points % BLOCK
    assert HEAD_GRID.num_levels == 12 and HEAD_GRID.log2_hashmap_size == 14
    assert TORSO_GRID.num_levels == 16 and TORSO_GRID.features_per_level == 2 and TORSO_GRID.log2_hashmap_size == 16
    for label, cfg in (("head", HEAD_GRID), ("torso", TORSO_GRID),
                       ("hash F=2", HashGridConfig(init_range=1.0, log2_hashmap_size=16))):
        grid = HashGrid2D(cfg)
        assert any(grid.layout.hashed) and not all(grid.layout.hashed), label
        _compare_backends(grid, [grid], kernel_points(points, cfg, seed=3), label)
    enc = TriPlaneHashEncoding(HEAD_GRID, bound=1.0)
    xyz = torch.rand(points, 3, generator=torch.Generator().manual_seed(4)) * 2.2 - 1.1
    xyz[:, :2] = kernel_points(points, HEAD_GRID, seed=4) * 2 - 1
    _compare_backends(enc, [enc.xy, enc.yz, enc.xz], xyz, "head tri-plane")
    print("kernels equal")


def test_triton_kernels_equal_the_torch_lookup():
    """Values and gradients of the fused kernels, run by Triton's interpreter on the CPU."""
    pytest.importorskip("triton")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code = "import torch; torch.set_num_threads(1); from tests.test_ernerf_fast import check_kernels; check_kernels()"
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "kernels equal" in res.stdout, res.stderr[-4000:]


@pytest.mark.parametrize("cfg", [
    HashGridConfig(num_levels=6, features_per_level=2, base_resolution=8, desired_resolution=96, log2_hashmap_size=11),
    HashGridConfig(num_levels=4, features_per_level=2, base_resolution=8, desired_resolution=64, log2_hashmap_size=10,
                   grid_type="tiled"),
    HashGridConfig(),  # the reference: 12 dense levels, 4 hashed
], ids=["small-hash", "small-tiled", "reference"])
def test_inference_lookup_equals_the_autograd_lookup(cfg):
    """Without autograd the dense levels are read by grid_sample: the same features (points
    outside [0, 1]^2 included) as the lookup training uses, to float rounding."""
    grid = HashGrid2D(cfg)
    with torch.no_grad():
        grid.table.uniform_(-1e-2, 1e-2)
    x = torch.rand(5000, 2, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1
    ref = grid.lookup(x)  # grad enabled and the table requires grad: the autograd function
    assert ref.requires_grad
    with torch.no_grad():
        fast = grid.lookup(x)
    assert grid.num_dense > 0 and fast.shape == ref.shape
    torch.testing.assert_close(fast, ref.detach(), rtol=0, atol=2e-6)
    outside = ((x < 0) | (x > 1)).any(-1)
    assert outside.any() and torch.all(fast[outside] == 0)


def test_auto_backend_keeps_torch_on_the_cpu():
    grid = HashGrid2D(HashGridConfig(num_levels=2, base_resolution=4, desired_resolution=8, log2_hashmap_size=6))
    assert not use_fused(grid, torch.rand(3, 2))
    grid.backend = "triton"
    assert use_fused(grid, torch.rand(3, 2))


def test_the_gpu_path_falls_back_to_torch_with_one_warning(monkeypatch):
    """When Triton cannot build its kernels (no C compiler), the "auto" backend warns once and the
    torch lookup serves every later call; an explicit "triton" backend, or a failure after the
    kernels have run, still raises."""
    from models.ernerf import encodings

    def no_compiler(*args):
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")

    monkeypatch.setattr(encodings, "on_gpu", lambda x: True)  # the CPU plays the GPU
    monkeypatch.setattr(encodings, "_fused", no_compiler)
    monkeypatch.setattr(encodings, "FUSED", encodings.FusedState())
    grid = HashGrid2D(HashGridConfig(num_levels=3, base_resolution=4, desired_resolution=16, log2_hashmap_size=6))
    x = torch.rand(50, 2)
    with pytest.warns(RuntimeWarning, match="C compiler") as caught:
        outs = [grid(x) for _ in range(3)]
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    for out in outs:
        torch.testing.assert_close(out, grid.lookup(x))
    assert not use_fused(grid, x) and "C compiler" in encodings.FUSED.broken
    grid.backend = "triton"
    monkeypatch.setattr(encodings, "FUSED", encodings.FusedState())
    with pytest.raises(RuntimeError, match="C compiler"):
        grid(x)
    grid.backend = "auto"
    encodings.FUSED.ran = True  # the kernels worked before: a later failure is a real error
    with pytest.raises(RuntimeError, match="C compiler"):
        grid(x)


# ---------------------------------------------------------------------------- training terms
def test_mouth_weight_counts_the_lips_box_more(train_split):
    """mouth_weight multiplies the squared error of rays inside the lips box only."""
    losses = {}
    corner = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="xy"), -1).view(-1, 2) + 0.5
    for weight in (1.0, 5.0):
        torch.manual_seed(0)
        config = HeadTrainConfig(steps=1, uncertainty_loss=False, lambda_entropy=0.0, lambda_ambient=0.0,
                                 lambda_smooth=0.0, mouth_weight=weight)
        trainer = Trainer(ERNeRF(tiny_model_config()), train_split, config, device="cpu")
        lips = trainer._pixels(0, lips_step=True, patch_step=False)[0][:64]
        for name, px in (("lips", lips), ("corner", corner)):
            flat = px[:, 1].long() * train_split.width + px[:, 0].long()
            losses[weight, name] = float(trainer._head_loss(0, px, flat, None)[0])
    assert losses[1.0, "lips"] > 0 and losses[5.0, "lips"] == pytest.approx(5 * losses[1.0, "lips"], rel=1e-5)
    assert losses[5.0, "corner"] == pytest.approx(losses[1.0, "corner"], rel=1e-6)


def test_attention_warmup_conditions_on_each_frames_own_code_first(train_split):
    """During attention_warmup_steps a frame's audio code is its own (centre) code; afterwards the
    attention's weighted sum over the window, which differs."""
    trainer = Trainer(ERNeRF(tiny_model_config()), train_split, HeadTrainConfig(steps=4, attention_warmup_steps=2),
                      device="cpu")
    m, dev = trainer.model, trainer.dev
    i = len(train_split) // 2
    own = m.audio.encoder(dev.audio[dev.aud_ids[i:i + 1]])  # (1, C): the frame's own code
    smoothed = m.audio_codes(dev.audio, dev.aud_ids[i:i + 1])
    assert not torch.allclose(own, smoothed, atol=1e-4)
    codes = []
    for step in range(4):
        trainer.step_count = step
        codes.append(trainer._frame_conditioning(i)[0])
    assert torch.allclose(codes[0], own, atol=1e-6) and torch.allclose(codes[1], own, atol=1e-6)
    assert torch.allclose(codes[2], smoothed, atol=1e-6) and torch.allclose(codes[3], smoothed, atol=1e-6)
    trainer.step_count = 0  # rendering and validation always smooth
    assert torch.allclose(trainer._frame_conditioning(i, train=False)[0], smoothed, atol=1e-6)


def test_lips_stage_alternates_the_lips_box_and_random_patches(train_split):
    seen = []

    def patch_loss(pred, target):
        seen.append(tuple(pred.shape))
        return (pred - target).abs().mean()

    model = ERNeRF(tiny_model_config())
    trainer = Trainer(model, train_split, LipsTrainConfig(steps=4, rays_per_batch=2048), device="cpu",
                      patch_loss=patch_loss)
    weights = []
    head_loss = trainer._head_loss
    trainer._head_loss = lambda *a, **k: (weights.append(a[4]), head_loss(*a, **k))[1]
    pixels, shape = trainer._pixels(0, lips_step=False, patch_step=True)
    assert shape == (2, 32, 32) and pixels.shape == (2 * 32 * 32, 2)  # 2048 rays / 32^2 patches
    patches = pixels.view(2, 32, 32, 2)
    assert (patches[:, :, 1:, 0] - patches[:, :, :-1, 0] == 1).all()  # contiguous columns
    assert (patches[:, 1:, :, 1] - patches[:, :-1, :, 1] == 1).all()  # contiguous rows
    assert pixels.min() >= 0.5 and pixels.max() <= train_split.width - 0.5
    trainer.train()
    assert weights == [0.01, 0.1, 0.01, 0.1]  # lips box at the reference's 0.01, random patches at 0.1
    assert seen[1] == seen[3] == (2, 3, 32, 32) and seen[0][0] == 1 and min(seen[0][2:]) >= 32


def test_weight_ema_starts_at_the_first_update_then_follows_torch_emas_warm_up():
    p = torch.nn.Parameter(torch.zeros(3))
    ema = WeightEMA({"p": p}, decay=0.95)
    with torch.no_grad():
        p.fill_(1.0)
    ema.update()  # the trained weights, none of the initial ones
    torch.testing.assert_close(ema.shadow["p"], torch.full((3,), 1.0))
    with torch.no_grad():
        p.fill_(2.0)
    ema.update()  # d = 2/11
    torch.testing.assert_close(ema.shadow["p"], torch.full((3,), 1.0 + (9 / 11) * 1.0))
    for _ in range(500):
        ema.update()
    before = ema.shadow["p"].clone()
    with torch.no_grad():
        p.fill_(3.0)
    ema.update()  # warmed up: d = 0.95
    torch.testing.assert_close(ema.shadow["p"], 0.95 * before + 0.05 * 3.0)
    with ema.applied():
        torch.testing.assert_close(p.detach(), ema.shadow["p"])
    torch.testing.assert_close(p.detach(), torch.full((3,), 3.0))  # restored


def test_final_model_holds_the_ema_weights(train_split, tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(ERNeRF(tiny_model_config()), train_split,
                      HeadTrainConfig(steps=4, rays_per_batch=128, ema_every=2), device="cpu")
    trainer.train()
    assert trainer.ema.updates == 2
    path = trainer.save(tmp_path / "head.pt")
    final = load_model(path)
    live = trainer.model.head.sigma_net.layers[0].weight
    shadow = trainer.ema.shadow["head.sigma_net.layers.0.weight"]
    assert not torch.equal(live, shadow)
    torch.testing.assert_close(final.head.sigma_net.layers[0].weight, shadow, rtol=0, atol=0)
    resumed = Trainer(ERNeRF(tiny_model_config()), train_split,
                      HeadTrainConfig(steps=4, rays_per_batch=128, ema_every=2), device="cpu")
    resumed.load(path)  # a resume keeps training the live weights and restores the EMA
    torch.testing.assert_close(resumed.model.head.sigma_net.layers[0].weight, live, rtol=0, atol=0)
    assert resumed.ema.updates == 2
    torch.testing.assert_close(resumed.ema.shadow["head.sigma_net.layers.0.weight"], shadow, rtol=0, atol=0)


# ------------------------------------------------------------------ sync-freedom on the CPU
def test_the_sync_guard_refuses_every_host_wait():
    """On the meta device inside no_host_sync(), whatever would make the host wait for a GPU raises;
    host tensors and non-blocking uploads stay allowed."""
    meta = torch.device("meta")
    x = torch.rand(8, 3, device=meta)
    waits = {
        "item": lambda: x.sum().item(),
        "bool": lambda: bool(x.sum() > 0),
        "boolean mask": lambda: x[x[:, 0] > 0],
        "nonzero": lambda: torch.nonzero(x),
        "linalg.inv": lambda: torch.linalg.inv(torch.rand(2, 4, 4, device=meta)),
        "blocking upload": lambda: torch.rand(3).to(meta),
        "copy_ from the host": lambda: x.copy_(torch.rand(8, 3)),
        "tensor(data, device)": lambda: torch.tensor([1.0, 2.0], device=meta),
        "download": lambda: x.cpu(),
        "repeat_interleave": lambda: torch.arange(3, device=meta).repeat_interleave(torch.ones(3, dtype=torch.long,
                                                                                               device=meta)),
    }
    for name, wait in waits.items():
        with no_host_sync(), pytest.raises((HostSyncError, RuntimeError, NotImplementedError)):
            wait()
            pytest.fail(name)
    with no_host_sync():
        assert torch.rand(3).sum().item() >= 0  # a host tensor
        assert torch.rand(3).to(meta, non_blocking=True).device == meta
        assert torch.arange(3, device=meta).repeat_interleave(4).shape == (12,)


def _meta_trainer(split, config) -> Trainer:
    """A trainer on the meta device with the CUDA path's choices: fixed-shape sampling; a small
    occupancy grid updated every other step."""
    from models.ernerf.occupancy import OccupancyConfig

    cfg = tiny_model_config()
    cfg = cfg.model_copy(update={"render": cfg.render.model_copy(update={"fixed_shape": True}),
                                 "occupancy": OccupancyConfig(resolution=16, update_every=2)})
    return Trainer(ERNeRF(cfg), split, config, device="meta")


@pytest.mark.parametrize("config", [
    HeadTrainConfig(steps=8, rays_per_batch=256, smooth_every=2),  # occupancy updates, smoothness term
    LipsTrainConfig(steps=8, rays_per_batch=2048),  # lips box and random patches, SSIM patch loss
    TorsoTrainConfig(steps=8, rays_per_batch=256),  # pose code of the head pose
    HeadTrainConfig(steps=8, rays_per_batch=256, device_data_share=0.0),  # frames uploaded per step
], ids=["head", "lips", "torso", "head-frames-on-host"])
def test_training_steps_never_wait_for_the_device(train_split, config):
    """Head, lips and torso steps on the meta device under no_host_sync(): no read of device values,
    no blocking copy, no syncing operator (the SSIM window once came from the host every lips
    step, and torch.linalg.inv checked the torso's poses on the host)."""
    trainer = _meta_trainer(train_split, config)
    trainer.step()  # warm-up: cached device constants (the box) are made once
    with no_host_sync():
        logs = [trainer.step() for _ in range(4)]
    assert trainer.step_count == 5 and all(log["loss"].device.type == "meta" for log in logs)


def test_a_render_batch_never_waits_for_the_device():
    """Rendering a batch of frames (head, torso over a background) runs on the device alone."""
    from models.ernerf.model import FrameView

    cfg = tiny_model_config()
    cfg = cfg.model_copy(update={"render": cfg.render.model_copy(update={"fixed_shape": True, "chunk_rays": 500})})
    model = ERNeRF(cfg).to("meta").eval()
    n, side = 3, 24
    c2w = torch.eye(4).expand(n, 4, 4).clone()
    c2w[:, 2, 3] = 0.8
    inputs = model.frame_inputs(torch.randn(10, 16, 29), c2w, torch.arange(n), None, use_torso=True)
    view = FrameView(focal=30.0, cx=side / 2, cy=side / 2, height=side, width=side)
    background = torch.rand(side * side, 3, device="meta")
    with torch.no_grad():
        model.render_batch(inputs.frames(0, 1), view, background, chunk=500)  # warm-up (cached constants)
        with no_host_sync():
            rgb = model.render_batch(inputs.frames(1, 3), view, background, chunk=500)
    assert rgb.shape == (2 * side * side, 3)


def test_ssim_builds_its_window_on_the_device():
    pred = torch.rand(2, 3, 16, 16, device="meta")
    with no_host_sync():
        assert ssim(pred, pred, window=7).shape == (2,)


def test_rigid_inverse_equals_the_matrix_inverse():
    g = torch.Generator().manual_seed(0)
    rot, _ = torch.linalg.qr(torch.randn(5, 3, 3, generator=g))
    c2w = torch.eye(4).repeat(5, 1, 1)
    c2w[:, :3, :3], c2w[:, :3, 3] = rot, torch.randn(5, 3, generator=g) * 4
    torch.testing.assert_close(rigid_inverse(c2w), torch.linalg.inv(c2w), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- CUDA only
def _cuda_trainer(split, stage: str) -> Trainer:
    from models.ernerf.occupancy import OccupancyConfig

    cfg = tiny_model_config().model_copy(update={"occupancy": OccupancyConfig(resolution=32, update_every=2)})
    config = {"head": HeadTrainConfig(steps=8, rays_per_batch=1024, smooth_every=2),
              "lips": LipsTrainConfig(steps=8, rays_per_batch=2048),
              "torso": TorsoTrainConfig(steps=8, rays_per_batch=1024),
              "render": HeadTrainConfig(steps=8)}[stage]
    return Trainer(ERNeRF(cfg), split, config, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("stage", ["head", "lips", "torso", "render"])
def test_cuda_hot_path_never_synchronises(train_split, stage):
    """Head steps (occupancy update, smoothness term), lips steps (lips box and random patches),
    torso steps and a render batch (head and torso) issue no host synchronisation on CUDA: the fused
    kernels, AMP and the fused AdamW included (what the meta-device check cannot run)."""
    from models.ernerf.model import FrameView
    from models.ernerf.syncguard import cuda_sync_log

    torch.manual_seed(0)
    trainer = _cuda_trainer(train_split, stage)
    model, d = trainer.model, train_split
    if stage == "render":
        inputs = model.frame_inputs(d.audio, d.poses[:3], d.aud_ids[:3], None, use_torso=True)
        view = FrameView(d.focal, d.cx, d.cy, d.height, d.width)
        bg = (d.background.reshape(-1, 3).float() / 255).cuda()

        def work():
            with torch.no_grad():
                return model.render_batch(inputs, view, bg, chunk=4096)
    else:
        work = trainer.step
    for _ in range(2):  # warm-up: kernel compilation, lazy CUDA state, both kinds of lips step
        work()
    with cuda_sync_log() as syncs:
        outs = [work() for _ in range(4)]
    assert not syncs, f"{len(syncs)} synchronisations:\n" + "\n".join(syncs[:3])
    values = [o if isinstance(o, torch.Tensor) else o["loss"] for o in outs]
    assert all(torch.isfinite(v).all() for v in values)


def test_checkpoints_from_before_the_ema_still_resume(train_split, tmp_path):
    trainer = Trainer(ERNeRF(tiny_model_config()), train_split, HeadTrainConfig(steps=2, rays_per_batch=64),
                      device="cpu")
    trainer.train(1)
    state = trainer.state_dict()
    del state["ema"], state["device_rng"]
    state["version"] = 1
    torch.save(state, tmp_path / "v1.pt")
    resumed = Trainer(ERNeRF(tiny_model_config()), train_split, HeadTrainConfig(steps=2, rays_per_batch=64),
                      device="cpu")
    resumed.load(tmp_path / "v1.pt")
    assert resumed.step_count == 1 and resumed.ema.updates == 0
    state["version"] = 0
    torch.save(state, tmp_path / "v0.pt")
    with pytest.raises(InputError, match="checkpoint version 0"):
        resumed.load(tmp_path / "v0.pt")


def test_progress_is_read_back_in_blocks_and_before_checkpoints(train_split, tmp_path):
    reported, at_checkpoint = [], []

    def on_checkpoint(step, path):
        at_checkpoint.append((step, len(reported)))

    trainer = Trainer(ERNeRF(tiny_model_config()), train_split,
                      HeadTrainConfig(steps=7, rays_per_batch=64, checkpoint_every=3, sync_every=16), device="cpu",
                      checkpoint_dir=tmp_path, on_checkpoint=on_checkpoint)
    logs = trainer.train(progress=lambda step, log: reported.append((step, log["loss"])))
    assert [s for s, _ in reported] == list(range(1, 8)) and all(isinstance(x["loss"], float) for x in logs)
    assert at_checkpoint == [(3, 2), (6, 5)]  # every step before the checkpointing one was reported
