"""NeRFFaceSpeech one-shot method (models.nerffacespeech): generator, cameras, PTI, the 3DMM fit
of the portrait, audio -> expressions, the expression ray deformation, rendering, checkpoints."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from models.face3d.morphable import generic_model
from models.nerffacespeech import camera as C
from models.nerffacespeech import stylegan as S
from models.nerffacespeech.audio2exp import (
    MelToExpression,
    PhoneticAudioToExpression,
    load_audio2exp,
    save_audio2exp,
)
from models.nerffacespeech.convert_eg3d import PREFIXES, convert_state_dict
from models.nerffacespeech.convert_eg3d import main as convert_main
from models.nerffacespeech.deform import DeformConfig, ExpressionWarp, FaceRig
from models.nerffacespeech.face_fit import FaceFitConfig, fit_portrait, load_portrait, portrait_camera
from models.nerffacespeech.generator import (
    GeneratorConfig,
    TriplaneGenerator,
    default_generator,
    load_generator,
    save_generator,
    small_generator,
)
from models.nerffacespeech.pti import PTIConfig, load_pti, locality_codes, run_pti
from models.nerffacespeech.render import RenderConfig, render_frames
from models.nerffacespeech.volume import composite
from models.synth.talking_photo import sample_portrait
from talkflow.errors import AssetMissing, FaceNotFound, InputError

# A generator small enough for optimisation tests: 32 px images from a 16 px rendering.
TINY = dict(triplane_resolution=16, neural_rendering_resolution=16, sr_input_resolution=16, img_resolution=32,
            depth_resolution=12, depth_resolution_importance=6)


@pytest.fixture(scope="module")
def tiny_generator():
    return small_generator(0, GeneratorConfig.small(**TINY), w_avg_samples=512)


@pytest.fixture(scope="module")
def generic():
    return generic_model()


def _frontal_coeffs(model, size: int = 256) -> dict[str, torch.Tensor]:
    """A neutral, frontal, centred head 1.5 m from a camera with the generator's focal."""
    return {"id": torch.zeros(model.n_id), "exp": torch.zeros(model.n_exp), "euler": torch.zeros(3),
            "trans": torch.tensor([0.0, 0.0, 1500.0]), "focal": torch.tensor(C.EG3D_FOCAL * size),
            "image_size": torch.tensor(size)}


# ------------------------------------------------------------------------------------ generator
def test_generator_shapes_and_determinism_per_seed():
    g0, g0b, g1 = small_generator(0), small_generator(0), small_generator(1)
    cfg = g0.cfg
    n_params = sum(p.numel() for p in g0.parameters())
    assert 1e5 < n_params < 1e6  # "a few hundred thousand"
    assert all(torch.equal(a, b) for a, b in zip(g0.state_dict().values(), g0b.state_dict().values()))
    assert not torch.equal(g0.synthesis.b4.const, g1.synthesis.b4.const)
    z = torch.randn(2, cfg.z_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ws = g0.mapping_forward(z)
        planes = g0.planes(ws)
        out, out_b = g0.synthesize(ws), g0b.synthesize(ws)
    assert ws.shape == (2, g0.num_ws, cfg.w_dim) and g0.num_ws == cfg.num_ws == 8
    assert planes.shape == (2, 3, cfg.triplane_channels, cfg.triplane_resolution, cfg.triplane_resolution)
    assert out.image.shape == (2, 3, cfg.img_resolution, cfg.img_resolution)
    r = cfg.neural_rendering_resolution
    assert out.image_raw.shape == (2, 3, r, r) and out.features.shape == (2, cfg.decoder_features, r, r)
    assert torch.equal(out.image, out_b.image)  # same seed, same images
    assert not torch.allclose(out.image[0], out.image[1])  # different z, different images


def test_eg3d_config_matches_the_ffhq512_checkpoint_shape():
    cfg = GeneratorConfig.eg3d_ffhq512()
    assert (cfg.z_dim, cfg.w_dim, cfg.c_dim, cfg.num_ws) == (512, 512, 25, 14)
    assert (cfg.triplane_resolution, cfg.triplane_channels, cfg.neural_rendering_resolution) == (256, 32, 128)
    assert cfg.img_resolution == 512 and cfg.sr_channels == (256, 128)
    with torch.device("meta"):
        g = TriplaneGenerator(cfg)
    sd = g.state_dict()
    assert sd["synthesis.b256.torgb.weight"].shape == (96, 128, 1, 1)  # 3 planes x 32 channels
    assert sd["decoder.fc0.weight"].shape == (64, 32) and sd["decoder.fc1.weight"].shape == (33, 64)
    assert sd["superres.block1.conv1.weight"].shape == (128, 128, 3, 3)
    assert sd["mapping.fc0.weight"].shape == (512, 1024)  # z concatenated with the embedded camera label


def test_mapping_truncation(tiny_generator):
    g = tiny_generator
    z = torch.randn(3, g.cfg.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = g.mapping_forward(z)
        zero = g.mapping_forward(z, truncation_psi=0.0)
        half = g.mapping_forward(z, truncation_psi=0.5)
        cut = g.mapping_forward(z, truncation_psi=0.0, truncation_cutoff=3)
    w_avg = g.mapping.w_avg
    assert torch.allclose(zero, w_avg.expand_as(zero), atol=1e-6)
    assert torch.allclose(half, (full + w_avg) / 2, atol=1e-5)
    assert torch.allclose(cut[:, :3], w_avg.expand(3, 3, -1), atol=1e-6) and torch.equal(cut[:, 3:], full[:, 3:])
    # w_avg of the fallback is the mean of mapped z (frontal camera label).
    avg, _ = g.w_stats(512, seed=0)
    assert torch.allclose(avg.view(-1), w_avg, atol=1e-5)


def test_volume_rendering_is_finite_and_bounded(tiny_generator):
    g = tiny_generator
    cams = C.look_at(torch.tensor([0.0, 0.4]), torch.tensor([0.0, -0.2]))
    with torch.no_grad():
        out = g.synthesize(g.mapping.w_avg.expand(2, g.num_ws, -1), cams)
    assert torch.isfinite(out.image).all() and torch.isfinite(out.image_raw).all()
    assert out.image_raw.abs().max() <= 1.002 + 1e-6  # colours in [-0.001, 1.001] composited, then 2x - 1
    assert ((out.alpha >= 0) & (out.alpha <= 1 + 1e-6)).all()
    assert ((out.depth >= g.cfg.ray_start - 1e-4) & (out.depth <= g.cfg.ray_end + 1e-4)).all()
    assert not torch.allclose(out.image[0], out.image[1])  # the view changes the image


def test_composite_matches_the_closed_form():
    """Constant raw density s and colour c along [0, L]: alpha = 1 - exp(-softplus(s - 1) L)."""
    s, c, n, length = 2.0, 0.25, 33, 1.5
    depths = torch.linspace(0, length, n).view(1, 1, n, 1)
    feats, depth, alpha, weights, _ = composite(torch.full((1, 1, n, 3), c), torch.full((1, 1, n, 1), s), depths)
    expect = 1 - math.exp(-math.log1p(math.exp(s - 1)) * length)
    assert alpha.item() == pytest.approx(expect, rel=1e-4)
    assert feats[0, 0, 0].item() == pytest.approx(2 * c * expect - 1, rel=1e-4)
    assert 0 < depth.item() < length / 2  # the mass is front-loaded


def test_upsampling_convolution_equals_its_reference():
    x = torch.randn(2, 6, 5, 5, generator=torch.Generator().manual_seed(0))
    w = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(S.upsample_conv2d(x, w, groups=2), S.upsample_conv2d_reference(x, w, groups=2), atol=1e-5)
    up = S.upsample2d(torch.ones(1, 1, 4, 4))
    assert up.shape == (1, 1, 8, 8) and torch.allclose(up[..., 2:-2, 2:-2], torch.ones(1, 1, 4, 4))


def test_camera_conventions():
    assert C.fov_to_focal(C.EG3D_FOV_DEG) == pytest.approx(C.EG3D_FOCAL, abs=0.01)
    cam = C.look_at()
    assert torch.allclose(cam.origin, torch.tensor([[0.0, 0.0, 2.9]]), atol=1e-6)  # pivot + 2.7 z
    labels = cam.labels()
    assert labels.shape == (1, 25) and labels[0, 16].item() == pytest.approx(C.EG3D_FOCAL)
    assert torch.allclose(C.Camera.from_labels(labels).c2w, cam.c2w)
    o, d = C.camera_rays(cam, 2)  # the four rays of a 2x2 image: +x right and +y down in the image
    assert d[0, 0, 0] < 0 < d[0, 1, 0] and d[0, 0, 1] > 0 > d[0, 2, 1]
    uvz = C.project_points(cam, torch.tensor([[[0.0, 0.0, 0.2], [0.1, 0.1, 0.2]]]))
    assert torch.allclose(uvz[0, 0], torch.tensor([0.5, 0.5, 2.7]), atol=1e-5)
    assert uvz[0, 1, 0] > 0.5 and uvz[0, 1, 1] < 0.5  # subject's left = image right, up = image up
    side = C.look_at(0.5)
    assert side.origin[0, 0] > 0  # yaw > 0 moves the camera towards +x


# ------------------------------------------------------------------------------------------ PTI
def test_pti_reconstructs_the_portrait_and_stays_local(tiny_generator, generic, tmp_path):
    g = tiny_generator
    target = sample_portrait(g.cfg.img_resolution)
    cfg = PTIConfig.tiny()
    # The geometry prior for the fallback generator: the frontal 3DMM's depth (its portrait camera
    # is the generator's default frontal camera).
    coeffs = _frontal_coeffs(generic)
    cam = portrait_camera(coeffs)
    assert torch.allclose(cam.c2w, g.default_camera().c2w, atol=0.02)
    face_depth, face_mask = FaceRig.from_fit(coeffs, generic, cam).depth_map(cam, g.cfg.neural_rendering_resolution)
    # the face round the world origin, the camera 2.7 from the pivot (0, 0, 0.2): about 2.9 away
    assert face_mask.sum() >= 6 and ((face_depth[face_mask] > 2.7) & (face_depth[face_mask] < 3.05)).all()
    res = run_pti(g, target, None, cfg, face_depth=(face_depth, face_mask))
    assert res.w_pivot.shape == (1, g.num_ws, g.cfg.w_dim)
    assert res.background.shape == (3, 32, 32) and res.loss_kind in ("lpips", "structural")
    assert len(res.losses["inversion"]) == cfg.inversion_steps and len(res.losses["tuning"]) == cfg.tuning_steps
    # Stated factor: the reconstruction MSE falls at least 4x from w_avg to after tuning (about 15x
    # seen), and the inversion alone already helps.
    assert res.error_pivot < res.error_initial
    assert res.error_final * 4 <= res.error_initial, (res.error_initial, res.error_pivot, res.error_final)
    tuned = res.generator()
    assert any(not torch.equal(a, b) for a, b in zip(tuned.parameters(), g.parameters()))
    with torch.no_grad():  # the tuned density sits on the 3DMM face (within ~2 cm; 0.043 seen, 12 + 6 samples/ray)
        depth_err = [float((gen.synthesize(res.w_pivot, cam).depth - face_depth).abs()[face_mask].mean())
                     for gen in (g, tuned)]
    assert depth_err[1] < 0.05 and depth_err[1] < depth_err[0] / 2, depth_err
    # Locality: at held-out codes alpha away from the pivot, the tuned generator changed much
    # less than at the pivot itself (relative to the original generator).
    w_r = locality_codes(g, res.w_pivot, cam, cfg, seed=99)
    with torch.no_grad():
        def change(w):
            a = tuned.synthesize(w, cam, noise_mode="none").image
            b = g.synthesize(w, cam, noise_mode="none").image
            return float((a - b).square().mean())
        at_pivot, away = change(res.w_pivot), change(w_r)
    assert away < 0.5 * at_pivot, (away, at_pivot)
    # The result round-trips through a weights-only file.
    back = load_pti(res.save(tmp_path / "pti.pt"))
    assert torch.equal(back.w_pivot, res.w_pivot) and back.error_final == res.error_final
    with torch.no_grad():
        again = back.generator().synthesize(res.w_pivot, cam).image
        assert torch.equal(again, tuned.synthesize(res.w_pivot, cam).image)


@pytest.mark.slow
def test_locality_regulariser_limits_the_drift(tiny_generator):
    g = tiny_generator
    target = sample_portrait(g.cfg.img_resolution)
    cam = g.default_camera()
    drift = {}
    for weight in (0.0, 1.0):
        cfg = PTIConfig.tiny(locality_weight=weight)
        res = run_pti(g, target, None, cfg)
        w_r = locality_codes(g, res.w_pivot, cam, cfg, seed=7)
        with torch.no_grad():
            a = res.generator().synthesize(w_r, cam, noise_mode="none").image
            b = g.synthesize(w_r, cam, noise_mode="none").image
        drift[weight] = float((a - b).square().mean())
    assert drift[1.0] < drift[0.0], drift


# ------------------------------------------------------------------------------------- 3DMM fit
def test_fitted_coeffs_reproduce_the_dlib_landmarks(generic):
    img = sample_portrait(256)
    fit = fit_portrait(img, generic, FaceFitConfig(photometric=True, photo_iters=5, photo_tex_iters=5))
    c = fit.coeffs
    assert c["id"].shape == (generic.n_id,) and c["exp"].shape == (generic.n_exp,)
    assert c["euler"].shape == (3,) and c["trans"].shape == (3,) and c["light"].shape == (9, 3)
    assert float(c["focal"]) == pytest.approx(C.EG3D_FOCAL * 256) and int(c["image_size"]) == 256
    assert fit.reprojection_error_px < 4.0, fit.reprojection_error_px  # mean px at 256
    # The portrait camera puts the face at the world origin: the nose tip projects where dlib found it.
    cam = portrait_camera(c)
    rig = FaceRig.from_fit(c, generic, cam)
    tip = rig.to_world(generic.landmarks(c["id"], c["exp"][None])[0, 30])
    uv = C.project_points(cam, tip[None, None])[0, 0, :2] * 256
    assert (uv - torch.from_numpy(fit.landmarks[30])).norm() < 6.0


def test_bad_portraits_are_refused_before_any_work(tmp_path, generic):
    with pytest.raises(FaceNotFound):
        fit_portrait(np.full((256, 256, 3), 128, np.uint8), generic, FaceFitConfig(photometric=False))
    with pytest.raises(InputError, match="at least 128"):
        fit_portrait(sample_portrait(64), generic)
    bad = tmp_path / "portrait.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    with pytest.raises(InputError, match="cannot read"):
        fit_portrait(bad, generic)
    with pytest.raises(InputError, match="not found"):
        load_portrait(tmp_path / "missing.jpg")
    with pytest.raises(InputError, match="square"):
        load_portrait(np.zeros((200, 300, 3), np.uint8))
    from PIL import Image

    good = tmp_path / "ok.png"
    Image.fromarray(sample_portrait(128)).save(good)
    assert load_portrait(good).shape == (128, 128, 3)


# ------------------------------------------------------------------------------------ audio2exp
def _speech_then_silence(sr: int = 16000) -> np.ndarray:
    """1 s of a voiced, syllable-modulated harmonic signal, then 1 s of silence."""
    t = np.arange(sr) / sr
    voice = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 30))
    voice *= (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t - np.pi / 2)) ** 2
    return np.concatenate([0.2 * voice, np.zeros(sr)]).astype(np.float32)


def test_phonetic_audio2exp_follows_the_phones(generic):
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    from models.audio.tts import synthesize

    text = "Papa, we see two moons."
    samples, sr = synthesize(text, engine="espeak")
    samples = np.concatenate([samples, np.zeros(sr, np.float32)])  # then 1 s of silence
    a2e = PhoneticAudioToExpression(generic.exp_names)
    curves = a2e.curves(samples, sr, fps=25, text=text)
    exp = a2e.expressions(curves)
    t = int(np.ceil(len(samples) / sr * 25))
    assert exp.shape == (t, generic.n_exp) and exp.dtype == np.float32 and np.isfinite(exp).all()
    assert curves["timeline"].source == "aligned"
    col = {m: exp[:, generic.exp_names.index(m)] for m in ("jaw_open", "lips_stretch", "lips_pucker")}
    frame = {p.phone: int(p.middle * 25) for p in reversed(curves["timeline"].spoken())}  # first of each
    assert col["jaw_open"][frame["AA"]] > 4 * col["jaw_open"][frame["P"]] and curves["closure"][frame["P"]] > 0.7
    assert col["lips_pucker"][frame["UW"]] > 0.4 > col["lips_pucker"][frame["IY"]]
    assert col["lips_stretch"][frame["IY"]] > 0.2 > col["lips_stretch"][frame["UW"]]
    assert np.abs(exp[-10:]).max() < 0.01  # closed and neutral in the silence
    others = [i for i, n in enumerate(generic.exp_names) if n not in ("jaw_open", "lips_stretch", "lips_pucker")]
    assert np.all(exp[:, others] == 0)
    # Without the text the phones are recognised; int16 input and a 30 fps timeline work too.
    heard = a2e.curves((samples * 32767).astype(np.int16), sr, fps=30)
    assert heard["timeline"].source == "recognised"
    assert heard["jaw_open"].shape == (int(np.ceil(len(samples) / sr * 30)),)
    assert heard["jaw_open"][: int(30 * (len(samples) / sr - 1))].max() > 0.3


def test_audio2exp_network_weights_load_weights_only(tmp_path, generic):
    torch.manual_seed(0)
    net = MelToExpression(generic.n_exp, hidden=16)
    path = save_audio2exp(net, tmp_path / "a2e.pt", generic.exp_names)
    a2e = load_audio2exp(path)
    exp = a2e.predict(_speech_then_silence(), 16000)
    assert exp.shape == (50, generic.n_exp) and np.isfinite(exp).all()
    with pytest.raises(AssetMissing):
        load_audio2exp(tmp_path / "none.pt")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(InputError):
        load_audio2exp(tmp_path / "evil.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


# ------------------------------------------------------------------------------------ deformation
def test_deformation_moves_the_mouth_and_leaves_far_points_still(generic):
    coeffs = _frontal_coeffs(generic)
    cam = portrait_camera(coeffs)
    rig = FaceRig.from_fit(coeffs, generic, cam)
    jaw = generic.exp_names.index("jaw_open")
    exp = torch.zeros(2, generic.n_exp)
    exp[1, jaw] = 1.0  # frame 0: the portrait's own expression, frame 1: jaw open
    warp = ExpressionWarp(rig, exp, DeformConfig())
    opened = generic.vertices(coeffs["id"], exp[1:])[0]
    chin, forehead = opened[generic.lmk_idx[8]], opened[:, 1].argmax()
    lower_lip = opened[generic.lmk_idx[57]]
    head_pts = torch.stack([chin, lower_lip, opened[forehead], torch.tensor([0.0, 300.0, 0.0])])  # mm
    world = rig.to_world(head_pts)[None].expand(2, -1, -1)
    res = warp(world)
    moved_mm = (rig.to_head(res.points) - head_pts).norm(dim=-1)  # (2, 4)
    assert torch.all(moved_mm[0] < 1e-3)  # the fitted expression itself: nothing moves
    assert moved_mm[1, 0] > 5.0 and moved_mm[1, 1] > 3.0  # chin and lower lip go back up
    assert moved_mm[1, 2] < 0.05 and moved_mm[1, 3] < 1e-3  # forehead and a far point stay (float round trip)
    # Moving back: the displaced chin lands near the fitted (closed-mouth) chin.
    fitted_chin = generic.vertices(coeffs["id"], exp[:1])[0, generic.lmk_idx[8]]
    assert (rig.to_head(res.points)[1, 0] - fitted_chin).norm() < 2.0
    # The newly opened gap between the lips is the dark mouth interior.
    lips = generic.landmarks(coeffs["id"], exp[1:])[0]
    gap = (lips[62] + lips[66]) / 2 - torch.tensor([0.0, 0.0, 5.0])
    inner = warp(rig.to_world(gap)[None, None].expand(2, 1, 3))
    assert inner.feature_scale[1, 0, 0] < 0.5 and inner.density_offset[1, 0, 0] > 0
    assert inner.feature_scale[0, 0, 0] == 1.0


def test_render_frames_animates_only_the_mouth(tiny_generator, generic):
    g = tiny_generator
    coeffs = _frontal_coeffs(generic)
    cam = portrait_camera(coeffs, g.cfg.focal, g.cfg.camera_radius, g.cfg.camera_pivot)
    exp = np.zeros((3, generic.n_exp), np.float32)
    exp[1:, generic.exp_names.index("jaw_open")] = [0.6, 1.2]
    w = g.mapping.w_avg[None, None].expand(1, g.num_ws, -1)
    cfg = RenderConfig(batch_frames=2)
    frames = render_frames(g, w, coeffs, exp, cam, model=generic, config=cfg)
    assert frames.shape == (3, 32, 32, 3) and frames.dtype == np.uint8
    with torch.no_grad():
        still = ((g.synthesize(w, cam).image[0].permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).round().byte().numpy()
    assert np.array_equal(frames[0], still)  # the fitted expression renders the static frame
    diff = np.abs(frames[2].astype(int) - frames[0]).sum(-1)  # (32, 32)
    assert diff.max() > 0  # the open jaw changes pixels ...
    rows = np.nonzero(diff.any(1))[0]
    assert rows.min() >= 16  # ... in the lower half of the face only (the face is centred)
    assert diff[:, :6].max() == 0 and diff[:, -6:].max() == 0  # and not at the image sides
    assert len(render_frames(g, w, coeffs, exp[:0], cam, model=generic)) == 0
    with pytest.raises(InputError):
        render_frames(g, w, coeffs, exp[:, :3], cam, model=generic)


# ------------------------------------------------------------------------------------- checkpoints
def _as_eg3d(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names -> EG3D's (the inverse of the converter's table), plus EG3D's filter buffers."""
    out = {}
    for name, v in state.items():
        for src, dst in PREFIXES:
            if name.startswith(dst):
                out[src + name[len(dst):]] = v.clone()
                break
    out["backbone.synthesis.b8.resample_filter"] = torch.ones(4, 4)
    out["superresolution.block0.conv0.resample_filter"] = torch.ones(4, 4)
    return out


def test_convert_eg3d_maps_an_eg3d_state_dict(tiny_generator, tmp_path):
    g = tiny_generator
    eg3d = _as_eg3d(g.state_dict())
    assert "backbone.synthesis.b16.torgb.weight" in eg3d and "decoder.net.2.weight" in eg3d
    cfg, ours = convert_state_dict(eg3d, {"ray_start": g.cfg.ray_start, "depth_resolution": 12,
                                          "depth_resolution_importance": 6, "image_resolution": 32},
                                   neural_rendering_resolution=16)
    assert (cfg.triplane_resolution, cfg.triplane_channels, cfg.z_dim, cfg.sr_channels) == (16, 16, 64, (32,))
    h = TriplaneGenerator(cfg).eval()
    h.load_state_dict(ours)
    z = torch.randn(1, cfg.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(h(z).image, g(z).image, atol=1e-6)
    with pytest.raises(InputError, match="no counterpart"):
        convert_state_dict(eg3d | {"backbone.extra.weight": torch.zeros(1)})
    bad = dict(eg3d)
    bad["decoder.net.0.bias"] = torch.zeros(7)
    with pytest.raises(InputError, match="shape"):
        convert_state_dict(bad)
    # The command line converts a (weights-only) torch file of an EG3D state dict.
    src = tmp_path / "eg3d_state.pt"
    torch.save(eg3d, src)
    assert convert_main([str(src), str(tmp_path / "out.pt")]) == 0
    assert load_generator(tmp_path / "out.pt").cfg.triplane_resolution == 16


def test_generator_checkpoints_load_weights_only(tiny_generator, tmp_path):
    g = tiny_generator
    path = save_generator(g, tmp_path / "g.pt")
    h = load_generator(path)
    assert h.cfg == g.cfg
    with torch.no_grad():
        assert torch.equal(h.synthesize(g.mapping.w_avg[None, None].expand(1, g.num_ws, -1)).image,
                           g.synthesize(g.mapping.w_avg[None, None].expand(1, g.num_ws, -1)).image)
    pkl = tmp_path / "ffhqrebalanced512-128.pkl"
    pkl.write_bytes(pickle.dumps({"G_ema": _Evil()}, protocol=2))
    with pytest.raises(InputError, match="convert_eg3d"):
        load_generator(pkl)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(InputError, match="weights-only"):
        load_generator(evil)
    with pytest.raises(AssetMissing):
        load_generator(tmp_path / "missing.pt")


def test_default_generator_falls_back_to_the_small_one():
    g = default_generator(seed=0)  # no generator asset is registered in the test data root
    assert g.cfg == GeneratorConfig.small()
    assert torch.equal(g.synthesis.b4.const, small_generator(0).synthesis.b4.const)
