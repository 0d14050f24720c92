"""The warp renderer on constructed cases: a synthetic fit of the generic 3DMM whose projected
landmarks are the portrait's landmarks, over a textured test image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.face3d.morphable import generic_model
from models.nerffacespeech.camera import EG3D_FOCAL
from models.portrait_warp import WarpRigConfig, build_rig, load_rig, render_warp
from models.portrait_warp.rig import project_mesh
from talkflow.errors import InputError

S = 256


@pytest.fixture(scope="module")
def model():
    return generic_model()


@pytest.fixture(scope="module")
def case(model):
    """(image, landmarks, coeffs): a textured S x S image and a frontal fit, face ~45 % of the width."""
    focal = EG3D_FOCAL * S
    coeffs = {"id": torch.zeros(model.n_id), "exp": torch.zeros(model.n_exp), "euler": torch.zeros(3),
              "trans": torch.tensor([0.0, 8.0, 176.0 * focal / (0.45 * S)]), "focal": torch.tensor(focal),
              "image_size": torch.tensor(S)}
    _, lmk = project_mesh(model, coeffs, coeffs["exp"][None])
    lm = lmk[0].double().numpy()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:S, 0:S]
    image = np.stack([(xx * 0.7 + 40) % 256, (yy * 0.9 + 20) % 256, 128 + 60 * np.sin(xx / 7.0) * np.cos(yy / 5.0)], -1)
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    return image, lm, coeffs


@pytest.fixture(scope="module")
def rig(case, model):
    image, lm, coeffs = case
    return build_rig(image, lm, coeffs, model, WarpRigConfig(min_size=S))


def _jaw(model, coeffs, amount: float) -> np.ndarray:
    exp = coeffs["exp"].clone()
    exp[model.exp_names.index("jaw_open")] = amount
    return exp[None].numpy()


def test_neutral_expression_leaves_the_portrait_unchanged(rig, case, coeffs=None):
    image, _, fit = case
    frames = render_warp(rig, generic_model(), np.repeat(fit["exp"][None].numpy(), 3, 0))
    assert frames.shape == (3, S, S, 3)
    assert np.abs(frames.astype(int) - image.astype(int)).max() <= 1


def test_open_jaw_moves_the_lower_lip_down_and_not_the_eyes(rig, case, model):
    image, lm, fit = case
    frame = render_warp(rig, model, _jaw(model, fit, 0.4))[0].astype(int)
    # the eyes (landmarks 36-47 and 6 px round them) stay where they are (sub-pixel at most)
    x0, y0 = np.floor(lm[36:48].min(0)).astype(int) - 6
    x1, y1 = np.ceil(lm[36:48].max(0)).astype(int) + 6
    eyes = image[y0:y1, x0:x1].astype(float)
    eye_errors = [np.abs(frame[y0 + k:y1 + k, x0:x1] - eyes).mean() for k in range(-3, 4)]
    assert int(np.argmin(eye_errors)) == 3 and eye_errors[3] < 1.0
    # the lower lip: the column under the mouth centre, matched against the portrait shifted down
    cx, lip_y = int(round(lm[57, 0])), int(round(lm[57, 1]))
    column = image[:, cx - 3:cx + 4].astype(float)
    out = frame[:, cx - 3:cx + 4].astype(float)
    ref = column[lip_y - 4:lip_y + 5]
    errors = [np.abs(out[lip_y - 4 + k:lip_y + 5 + k] - ref).mean() for k in range(0, 20)]
    shift = int(np.argmin(errors))
    assert shift >= 3, f"the lower lip moved {shift} px"
    # the interior is painted between the lips: darker than the portrait there
    mid = int(round((lm[62, 1] + lm[66, 1]) / 2 + shift / 2))
    assert frame[mid, cx].mean() < image[mid, cx].astype(float).mean() - 20


def test_pixels_outside_the_face_mask_stay_still(rig, case, model):
    image, _, fit = case
    rng = np.random.default_rng(1)
    exp = fit["exp"][None].numpy() + rng.uniform(-0.6, 0.6, (4, model.n_exp)).astype(np.float32)
    frames = render_warp(rig, model, exp)
    still = rig.face_mask() == 0
    assert still.mean() > 0.3  # hair and background: most of the frame
    assert (frames[:, still] == image[still][None]).all()
    assert (np.abs(frames.astype(int) - image.astype(int)).max(-1) > 3)[:, ~still].any()  # and the face moved


def test_rig_round_trip_and_output_size(rig, case, model, tmp_path):
    image, lm, fit = case
    path = rig.save(tmp_path / "rig.pt")
    again = load_rig(path)
    exp = _jaw(model, fit, 0.3)
    assert np.array_equal(render_warp(again, model, exp), render_warp(rig, model, exp))
    big = build_rig(image, lm, fit, model, WarpRigConfig(min_size=2 * S))
    assert render_warp(big, model, exp).shape == (1, 2 * S, 2 * S, 3)  # small portraits are upscaled
    with pytest.raises(InputError, match="exp_seq"):
        render_warp(rig, model, np.zeros((2, 3), np.float32))
    with pytest.raises(InputError, match="uint8"):
        build_rig(image[:100], lm, fit, model)


def test_closure_presses_the_lips_over_the_gap_between_them(case, model):
    from skimage.draw import polygon

    image, lm, fit = case
    apart = lm.copy()  # a portrait whose lips stand 10 px apart, a black mouth between them
    apart[[61, 62, 63], 1] -= 5.0
    apart[[65, 66, 67], 1] += 5.0
    smile = image.copy()
    rr, cc = polygon(apart[60:68, 1], apart[60:68, 0], smile.shape[:2])
    smile[rr, cc] = 0
    rig = build_rig(smile, apart, fit, model, WarpRigConfig(min_size=S))
    exp = np.repeat(fit["exp"][None].numpy(), 3, 0)
    frames = render_warp(rig, generic_model(), exp, closure=np.array([0.0, 0.5, 1.0]))
    assert np.abs(frames[0].astype(int) - smile.astype(int)).max() <= 1  # no closure: the portrait
    y0, y1 = int(apart[60:68, 1].min()) - 3, int(apart[60:68, 1].max()) + 4
    x0, x1 = int(apart[60, 0]), int(apart[64, 0]) + 1
    dark = [(f[y0:y1, x0:x1].max(-1) < 20).sum() for f in frames]  # mouth pixels still showing
    assert dark[0] > 150 and dark[0] * 0.35 < dark[1] < dark[0] * 0.65 and dark[2] < dark[0] * 0.05
    assert np.array_equal(frames[2][: y0 - 30], smile[: y0 - 30])  # far from the mouth nothing moves
    with pytest.raises(InputError):
        render_warp(rig, generic_model(), exp, closure=np.zeros(2))
