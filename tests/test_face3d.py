"""3DMM tracking (models.face3d): cameras, the generic and BFM models, rendering, landmark and
photometric fits, on synthetic ground truth rendered from the generic model."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import scipy.io
import torch

from models.face3d import camera as C
from models.face3d import fit as F
from models.face3d.morphable import convert_bfm, generic_model, load_model
from models.face3d.photometric import PhotoConfig, refine_photometric
from models.face3d.raster import rasterize
from models.face3d.render import default_light, render_frames
from talkflow.errors import AssetMissing, InputError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return generic_model()


def synthetic_clip(model, frames: int, size: int = 512, focal: float = 1100.0, noise: float = 0.5, seed: int = 0):
    """Known smooth head motion, translations, expressions, texture and light; noisy landmarks."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0.0, 1.0, frames)[:, None]
    phase = torch.rand(1, 3, generator=g) * 2 * math.pi
    amp = torch.deg2rad(torch.tensor([15.0, 20.0, 10.0]))  # pitch, yaw, roll
    euler = amp * torch.sin(2 * math.pi * t * torch.tensor([0.8, 0.6, 0.9]) + phase)
    s = t[:, 0]
    trans = torch.stack([10 * torch.sin(3 * s), -5 + 8 * torch.cos(2 * s), 650 + 30 * torch.sin(2 * s)], -1)
    ph = torch.rand(1, model.n_exp, generator=g) * 2 * math.pi
    exp = 0.4 * torch.sin(2 * math.pi * t * torch.linspace(0.3, 1.2, model.n_exp) + ph)
    exp[:, 0] = exp[:, 0].abs() * 1.5  # the jaw only opens
    light = default_light(frames)
    light[:, 0], light[:, 1], light[:, 2], light[:, 3] = 0.8, -0.1, -0.15, -0.3
    truth = dict(id=torch.randn(model.n_id, generator=g) * 0.8, exp=exp, euler=euler, trans=trans, focal=focal,
                 tex=torch.randn(model.n_tex, generator=g) * 0.5, light=light)
    pts = model.landmarks(truth["id"], exp)
    lms = C.project(C.head_to_camera(pts, euler, trans), focal, size / 2, size / 2)
    return truth, lms + noise * torch.randn(lms.shape, generator=g)


def pose_errors(track, truth) -> tuple[torch.Tensor, torch.Tensor]:
    """-> geodesic rotation error (T,) degrees, translation error as a share of depth (T,)."""
    rot = F.rotation_error_deg(track.euler, truth["euler"])
    return rot, (track.trans - truth["trans"]).norm(dim=-1) / truth["trans"][:, 2]


# ---------------------------------------------------------------------------------------------
# Camera conventions
# ---------------------------------------------------------------------------------------------


def test_euler_round_trip_and_orthonormal():
    g = torch.Generator().manual_seed(1)
    euler = (torch.rand(200, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([3.0, 3.0, 6.0],
                                                                                          dtype=torch.float64)
    rot = C.euler_to_matrix(euler)
    eye = torch.eye(3, dtype=torch.float64).expand(200, 3, 3)
    assert torch.allclose(rot @ rot.transpose(-1, -2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(200, dtype=torch.float64))
    assert torch.allclose(C.matrix_to_euler(rot), euler, atol=1e-9)
    assert torch.allclose(C.euler_to_matrix(C.matrix_to_euler(rot)), rot, atol=1e-12)
    assert float(C.geodesic_deg(rot, rot).max()) < 1e-4
    # Analytic derivatives match autograd.
    _, grad = C.euler_to_matrix_grad(euler[:5])
    for i in range(5):
        jac = torch.autograd.functional.jacobian(C.euler_to_matrix, euler[i])  # (3, 3, 3)
        assert torch.allclose(jac.permute(2, 0, 1), grad[i], atol=1e-12)


def test_projection_axes():
    """Head frame x left-of-subject / y up / z out; euler 0 looks into the camera."""
    pts = torch.tensor([[[0.0, 0.0, 0.0], [50.0, 0.0, 0.0], [0.0, 50.0, 0.0], [0.0, 0.0, 100.0]]])
    cam = C.head_to_camera(pts, torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 600.0]]))
    uv = C.project(cam, 1100.0, 256.0, 256.0)[0]
    assert torch.allclose(uv[0], torch.tensor([256.0, 256.0]))
    assert uv[1, 0] > 256 and uv[2, 1] < 256  # subject's left -> image right; up -> image top
    assert cam[0, 3, 2] < cam[0, 0, 2]  # the nose side is nearer the camera
    # Positive yaw turns the face towards the image right.
    turned = C.head_to_camera(pts, torch.tensor([[0.0, 0.3, 0.0]]), torch.tensor([[0.0, 0.0, 600.0]]))
    assert C.project(turned, 1100.0, 256.0, 256.0)[0, 3, 0] > 256


def test_nerf_transforms_place_the_camera():
    g = torch.Generator().manual_seed(2)
    euler = (torch.rand(16, 3, generator=g) - 0.5) * 0.8
    trans = torch.tensor([20.0, -10.0, 650.0]) + torch.randn(16, 3, generator=g) * 10
    c2w = C.to_nerf_transforms(euler, trans, scale=1.0)
    rot = c2w[:, :3, :3]
    assert torch.allclose(rot @ rot.transpose(-1, -2), torch.eye(3).expand(16, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(16), atol=1e-5)
    assert torch.allclose(c2w[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(16, 4))
    assert torch.allclose(c2w[:, :3, 3].norm(dim=-1), trans.norm(dim=-1), rtol=1e-5)
    # The head origin lies in front of the OpenGL camera (negative z), |t| away.
    w2c = torch.linalg.inv(c2w)
    origin = w2c[:, :3, 3]
    assert (origin[:, 2] < 0).all()
    assert torch.allclose(origin.norm(dim=-1), trans.norm(dim=-1), rtol=1e-5)
    # Looking straight at the head when it is centred.
    ahead = C.to_nerf_transforms(euler, torch.tensor([0.0, 0.0, 650.0]).expand(16, 3), scale=1.0)
    view = -ahead[:, :3, 2]  # the camera looks along its -z
    to_origin = -ahead[:, :3, 3] / ahead[:, :3, 3].norm(dim=-1, keepdim=True)
    assert torch.allclose(view, to_origin, atol=1e-5)
    # Projecting through c2w (OpenGL) gives the tracker's pixels.
    pts = torch.randn(16, 30, 3, generator=g) * 60
    q = (pts - c2w[:, None, :3, 3]) @ rot  # world -> camera, OpenGL axes
    u = 256 + 1100 * q[..., 0] / -q[..., 2]
    v = 256 - 1100 * q[..., 1] / -q[..., 2]
    ref = C.project(C.head_to_camera(pts, euler, trans), 1100.0, 256.0, 256.0)
    assert torch.allclose(torch.stack([u, v], -1), ref, atol=1e-2)
    # Default scale: mm -> ER-NeRF's units.
    assert torch.allclose(C.to_nerf_transforms(euler, trans)[:, :3, 3], c2w[:, :3, 3] * C.ERNERF_UNITS_PER_MM)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def test_generic_model(model):
    n = model.n_vertices
    assert 500 <= n <= 2500 and model.faces.shape[1] == 3 and model.lmk_idx.shape == (68,)
    assert model.id_basis.shape == (n, 3, 8) and model.exp_basis.shape == (n, 3, 10)
    assert len(model.id_names) == 8 and "jaw_open" in model.exp_names
    lmk = model.mean[model.lmk_idx]
    assert lmk[30, 2] == model.mean[:, 2].max()  # the nose tip is frontmost
    assert lmk[0, 0] < 0 < lmk[16, 0] and lmk[8, 1] < lmk[57, 1] < lmk[33, 1] < lmk[27, 1] < lmk[19, 1]
    # Outward normals (towards +z on the face), and a smooth albedo with features.
    v = model.mean[model.faces]
    normal = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    assert (normal[:, 2] > 0).float().mean() > 0.98
    col = model.tex_mean
    assert col.min() >= 0 and col.max() <= 1
    skin = col[model.mean[:, 1] > 60].mean(0)
    assert col[model.lmk_idx[48:60]].mean(0)[1] < skin[1] - 0.1  # lips redder / darker
    assert col[model.lmk_idx[36:48]].mean() < skin.mean() - 0.1  # eyes darker
    # Expressions do what their names say.
    jaw = model.exp_basis[model.lmk_idx, :, model.exp_names.index("jaw_open")]
    assert jaw[8, 1] < -10 and jaw[66, 1] < -10 and abs(float(jaw[62, 1])) < 2
    lid = model.exp_basis[model.lmk_idx, :, model.exp_names.index("eye_close_right")]
    assert lid[37, 1] < -4 and abs(float(lid[40, 1])) < 0.5 and abs(float(lid[43, 1])) < 0.5
    # No identity mode is a rigid translation (which the pose would absorb).
    basis = model.id_basis
    rigid_free = (basis - basis.mean(0)).norm(dim=(0, 1)) / basis.norm(dim=(0, 1))  # (K_id,)
    assert (rigid_free > 0.5).all(), rigid_free
    verts = model.vertices(torch.randn(2, 8), torch.randn(2, 10))
    assert verts.shape == (2, n, 3)
    assert torch.allclose(model.landmarks(torch.zeros(8), torch.zeros(1, 10))[0], lmk)


def tiny_bfm(path, model, rotation_deg: float = 3.0, offset=(2.0, -30.0, 15.0), **overrides):
    """A BFM-2009-shaped .mat built from the generic mesh, moved by a known rigid transform."""
    g = model.to(dtype=torch.float64)
    n = g.n_vertices
    rng = np.random.default_rng(0)
    a = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    mean = g.mean.numpy() @ rot.T + np.array(offset)
    shape_pc, _ = np.linalg.qr(rng.normal(size=(3 * n, 5)))
    tex_pc, _ = np.linalg.qr(rng.normal(size=(3 * n, 4)))
    fields = dict(
        shapeMU=(mean * 1000.0).reshape(-1, 1), shapePC=shape_pc, shapeEV=np.array([[5e5], [3e5], [2e5], [1e5], [5e4]]),
        texMU=(g.tex_mean.numpy() * 255.0).reshape(-1, 1), texPC=tex_pc, texEV=np.array([[40.0], [30], [20], [10]]),
        tl=(g.faces.numpy() + 1).astype(np.float64),
    )
    fields.update(overrides)
    fields = {k: v for k, v in fields.items() if v is not None}
    scipy.io.savemat(str(path), fields)
    return rot, shape_pc


def test_convert_bfm_on_a_tiny_mat(tmp_path, model):
    mat = tmp_path / "01_MorphableModel.mat"
    rot, shape_pc = tiny_bfm(mat, model)
    out = tmp_path / "bfm.pt"
    bfm = convert_bfm(mat, out, n_id=4)
    assert out.is_file()
    loaded = load_model(out)
    n = model.n_vertices
    assert loaded.n_vertices == n and loaded.n_id == 4 and loaded.n_exp == model.n_exp and loaded.n_tex == 4
    assert torch.equal(loaded.faces, model.faces) and torch.equal(loaded.lmk_idx, model.lmk_idx)
    # Back in the head frame (the rigid move undone), in mm.
    assert float((loaded.mean - model.mean).abs().max()) < 1e-2
    # Components scaled by their standard deviations (um -> mm), rotated into the head frame.
    expect = np.einsum("ab,nbk->nak", rot.T, shape_pc[:, :4].reshape(n, 3, 4) * np.array([5e5, 3e5, 2e5, 1e5]) / 1e3)
    assert np.allclose(loaded.id_basis.numpy(), expect, atol=1e-3)
    assert torch.allclose(loaded.tex_mean, model.tex_mean, atol=1e-5)
    # Expression modes transferred from the generic model: identical on its own mesh.
    assert float((loaded.exp_basis - model.exp_basis).abs().max()) < 1e-3
    assert loaded.exp_names == model.exp_names
    # A given landmark table is used as is.
    table = model.lmk_idx.numpy()[::-1].copy()
    assert torch.equal(convert_bfm(mat, None, lmk_idx=table).lmk_idx, torch.as_tensor(table))
    assert bfm.name == "bfm2009"


def test_bfm_errors_name_the_file_and_the_command(tmp_path, model):
    missing = tmp_path / "nowhere" / "01_MorphableModel.mat"
    with pytest.raises(AssetMissing, match=r"talkflow assets add bfm") as err:
        convert_bfm(missing)
    assert str(missing) in str(err.value)
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(InputError, match=r"junk\.mat.*talkflow assets add bfm"):
        convert_bfm(junk)
    no_tex = tmp_path / "no_tex.mat"
    tiny_bfm(no_tex, model, texPC=None, texEV=None)
    with pytest.raises(InputError, match=r"lacks texPC, texEV"):
        convert_bfm(no_tex)
    bad_tl = tmp_path / "bad_tl.mat"
    tiny_bfm(bad_tl, model, tl=np.array([[0.0, 1.0, 2.0]]))
    with pytest.raises(InputError, match=r"tl indexes vertices"):
        convert_bfm(bad_tl)
    with pytest.raises(AssetMissing, match=r"talkflow assets add bfm"):
        load_model(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match=r"garbage\.pt is not a talkflow face model"):
        load_model(garbage)
    torch.save({"format": "talkflow.face3d", "mean": torch.zeros(3, 3)}, tmp_path / "partial.pt")
    with pytest.raises(InputError, match=r"lacks id_basis"):
        load_model(tmp_path / "partial.pt")


def test_models_do_not_import_prefect():
    code = "import sys, models.face3d; sys.exit('prefect' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cull", [True, False])
def test_rasterization_matches_pytorch3d(model, cull):
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    truth, _ = synthetic_clip(model, 4, size=256, focal=550.0)
    cam = C.head_to_camera(model.vertices(truth["id"], truth["exp"]), truth["euler"], truth["trans"])
    px = C.project(cam, 550.0, 128.0, 128.0)
    size = 72
    lo = px.amin(1) - 5
    uvz = torch.cat([(px - lo[:, None]) * (size / 150.0), cam[..., 2:]], -1)  # faces partly off the window
    face, bary = rasterize(uvz, model.faces, size, size, cull_backfaces=cull)
    ndc = torch.stack([1 - 2 * uvz[..., 0] / size, 1 - 2 * uvz[..., 1] / size, uvz[..., 2]], -1)
    ref, _, ref_bary, _ = rasterize_meshes(Meshes(verts=ndc, faces=model.faces[None].expand(4, -1, -1)),
                                           image_size=size, blur_radius=0.0, faces_per_pixel=1, bin_size=0,
                                           perspective_correct=False, cull_backfaces=cull)
    ref = ref[..., 0]
    ref = torch.where(ref >= 0, ref - (torch.arange(4) * model.faces.shape[0])[:, None, None], ref)
    assert (face >= 0).any() and (face < 0).any()
    assert torch.equal(face, ref)
    hit = face >= 0
    assert torch.allclose(bary[hit], ref_bary[..., 0, :][hit], atol=1e-4)
    assert torch.all(bary[~hit] == 0)


def test_rasterization_z_buffer_and_batches(model):
    """The nearer of two overlapping triangles wins whatever their order; a batch split into
    groups (few candidates allowed at once) gives the same result."""
    import models.face3d.raster as R

    square = torch.tensor([[2.0, 2.0], [30.0, 2.0], [2.0, 30.0]])
    for near_first in (True, False):
        z = torch.tensor([[1.0], [2.0]]) if near_first else torch.tensor([[2.0], [1.0]])
        verts = torch.cat([torch.cat([square, z[0].expand(3, 1)], -1), torch.cat([square, z[1].expand(3, 1)], -1)])
        face, _ = rasterize(verts, torch.tensor([[0, 1, 2], [3, 4, 5]]), 32, 32)
        assert set(face[face >= 0].tolist()) == {0 if near_first else 1}
    truth, _ = synthetic_clip(model, 3, size=256, focal=550.0)
    cam = C.head_to_camera(model.vertices(truth["id"], truth["exp"]), truth["euler"], truth["trans"])
    uvz = torch.cat([C.project(cam, 550.0, 128.0, 128.0) * 0.25, cam[..., 2:]], -1)
    whole = rasterize(uvz, model.faces, 64, 64)
    old = R._MAX_PAIRS
    R._MAX_PAIRS = 1000
    try:
        split = rasterize(uvz, model.faces, 64, 64)
    finally:
        R._MAX_PAIRS = old
    assert torch.equal(whole[0], split[0]) and torch.equal(whole[1], split[1])


def test_rendering_chosen_pixels_equals_the_full_window(model):
    """Shading only some pixels (what the photometric term counts) gives those pixels of the
    full window, and the same gradients for a loss on them."""
    from models.face3d.render import face_window, project_vertices, render_window

    truth, _ = synthetic_clip(model, 3, size=256, focal=550.0)
    _, _, px = project_vertices(model, truth["id"], truth["exp"], truth["euler"], truth["trans"], 550.0, 256)
    win = face_window(px, 48)
    grads = []
    for chosen in (False, True):
        euler = truth["euler"].clone().requires_grad_()
        full = render_window(model, truth["id"], truth["exp"], euler, truth["trans"], 550.0, 256, win)
        sel = full.mask.reshape(-1).nonzero()[:, 0][::3]
        if chosen:
            out = render_window(model, truth["id"], truth["exp"], euler, truth["trans"], 550.0, 256, win,
                                pix_to_face=full.pix_to_face, pixels=sel).image
            torch.testing.assert_close(out, full.image.reshape(-1, 3)[sel].detach())
        else:
            out = full.image.reshape(-1, 3)[sel]
        (out * torch.linspace(0.5, 1.5, 3)).sum().backward()
        grads.append(euler.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])


# ---------------------------------------------------------------------------------------------
# Landmark fitting
# ---------------------------------------------------------------------------------------------


def test_landmark_input_errors(model):
    with pytest.raises(InputError, match=r"\(T, 68, 2\)"):
        F.fit_landmarks(torch.zeros(5, 67, 2), 512, model)
    bad = torch.full((3, 68, 2), 256.0)
    bad[1, 4, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        F.fit_landmarks(bad, 512, model, focal=1100.0)
    with pytest.raises(InputError, match=r"frame\(s\) \[1\]"):
        F.fit_landmarks(torch.stack([torch.rand(68, 2) * 100, torch.full((68, 2), 256.0)]), 512, model)
    _, lms = synthetic_clip(model, 3)
    with pytest.raises(InputError, match="focal"):
        F.fit_landmarks(lms, 512, model, focal=-1.0)


def test_landmark_fit_known_focal(model):
    truth, lms = synthetic_clip(model, 16, seed=3)
    track = F.fit_landmarks(lms, 512, model, focal=1100.0)
    rot, tr = pose_errors(track, truth)
    assert float(rot.max()) < 2.0 and float(tr.max()) < 0.02
    assert float(track.lmk_err.mean()) < 1.0
    assert track.exp.shape == (16, model.n_exp) and track.id.shape == (model.n_id,)


def test_batched_fit_equals_per_frame_loop(model):
    truth, lms = synthetic_clip(model, 6, seed=4)
    cfg = replace(F.FitConfig(), w_smooth_euler=0.0, w_smooth_trans=0.0, w_smooth_exp=0.0)
    start = time.perf_counter()
    batched = F.fit_landmarks(lms, 512, model, focal=1100.0, id=truth["id"], config=cfg)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    loop = F.fit_landmarks_per_frame(lms, 512, model, focal=1100.0, id=truth["id"], config=cfg)
    t_loop = time.perf_counter() - start
    print(f"\nlandmark fit of {len(lms)} frames: batched {t_batched:.3f} s, per-frame loop {t_loop:.3f} s, "
          f"loop / batched = {t_loop / t_batched:.1f}x")
    assert float(F.rotation_error_deg(batched.euler, loop.euler).max()) < 0.01
    assert float((batched.trans - loop.trans).abs().max()) < 0.05  # mm
    assert float((batched.exp - loop.exp).abs().max()) < 1e-3
    assert torch.allclose(batched.lmk_err, loop.lmk_err, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# End to end: focal search + landmark fit + photometric refinement on rendered frames
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tracking_recovers_synthetic_ground_truth(model, tmp_path):
    size, focal, frames = 512, 1100.0, 24
    truth, lms = synthetic_clip(model, frames, size=size, focal=focal, seed=0)
    images, masks = render_frames(model, truth["id"], truth["exp"], truth["euler"], truth["trans"], focal, size,
                                  tex=truth["tex"], light=truth["light"], background=0.45)
    assert images.shape == (frames, size, size, 3) and 0.1 < float(masks.float().mean()) < 0.5

    track = F.fit_landmarks(lms, size, model)  # focal searched
    assert abs(track.focal - focal) / focal < 0.05, track.focal  # stated share: 5 %
    rot, tr = pose_errors(track, truth)
    assert float(rot.max()) < 2.0, rot
    assert float(tr.max()) < 0.02, tr
    assert float(track.lmk_err.mean()) < 1.0  # px, for 0.5 px landmark noise per axis

    refined = refine_photometric(images, lms, model, track, PhotoConfig())
    rot2, tr2 = pose_errors(refined, truth)
    print(f"\nrotation error (deg) mean/max: landmarks {rot.mean():.3f}/{rot.max():.3f}, "
          f"photometric {rot2.mean():.3f}/{rot2.max():.3f}; depth share {tr.max():.4f} -> {tr2.max():.4f}")
    assert float(rot2.max()) < 2.0 and float(tr2.max()) < 0.02
    assert float(rot2.mean()) <= float(rot.mean()) + 0.05  # not worse
    assert float(tr2.mean()) <= float(tr.mean()) + 0.002
    assert refined.light.shape == (frames, 9, 3) and refined.tex.shape == (model.n_tex,)
    assert float(refined.info["photo_l1"].mean()) < 0.02

    saved = torch.load(refined.save(tmp_path / "track_params.pt"), weights_only=True)
    assert saved["exp"].shape == (frames, model.n_exp) and float(saved["focal"]) == pytest.approx(track.focal)
    c2w = C.to_nerf_transforms(saved["euler"], saved["trans"])
    assert c2w.shape == (frames, 4, 4)
