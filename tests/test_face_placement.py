"""The fitted 3DMM face sits where EG3D's density is: EG3D centres the face-centred BFM at the
world origin (its cameras look at the pivot, 0.2 in front). Checked with a generator whose
density is a known surface: a ball round the world origin."""

from __future__ import annotations

import math

import pytest
import torch

import models.nerffacespeech.generator as generator_module
from models.face3d.camera import matrix_to_euler
from models.face3d.morphable import generic_model
from models.nerffacespeech.camera import EG3D_FOCAL, FACE_CENTRE_MM, look_at, project_points
from models.nerffacespeech.deform import FaceRig
from models.nerffacespeech.face_fit import portrait_camera
from models.nerffacespeech.generator import GeneratorConfig, small_generator

BALL = 0.1  # radius of the known surface, world units


@pytest.fixture
def ball_generator(monkeypatch):
    """The small generator with its density replaced by a solid ball of radius BALL at the origin."""
    original = generator_module.query_field

    def ball_field(planes, decoder, points, box_warp):
        density, feats = original(planes, decoder, points, box_warp)
        inside = points.norm(dim=-1, keepdim=True) < BALL
        return torch.where(inside, 1e3, -1e3).to(density), feats  # opaque within 0.005 of the surface

    monkeypatch.setattr(generator_module, "query_field", ball_field)
    cfg = GeneratorConfig.small(depth_resolution=96, depth_resolution_importance=48)
    return small_generator(0, cfg)


def coeffs(yaw: float, pitch: float, trans) -> dict[str, torch.Tensor]:
    model = generic_model()
    rot = torch.tensor([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]]) @ \
        torch.tensor([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    return {"id": torch.zeros(model.n_id), "exp": torch.zeros(model.n_exp),
            "euler": matrix_to_euler(rot.float()), "trans": torch.tensor(trans, dtype=torch.float32),
            "focal": torch.tensor(EG3D_FOCAL * 256), "image_size": torch.tensor(256)}


def test_face_centre_is_the_mean_vertex_of_the_face_mesh():
    centre = generic_model().mean.mean(0)
    assert torch.allclose(centre, torch.tensor(FACE_CENTRE_MM), atol=0.05)


@pytest.mark.parametrize("yaw, pitch, trans", [(0.0, 0.0, (0.0, 0.0, 1500.0)), (0.35, -0.15, (40.0, -25.0, 1300.0))])
def test_fitted_face_lands_on_the_generators_density(ball_generator, yaw, pitch, trans):
    g = ball_generator
    c = coeffs(yaw, pitch, trans)
    cam = portrait_camera(c, g.cfg.focal, g.cfg.camera_radius, g.cfg.camera_pivot)
    to_pivot = float((cam.origin[0] - torch.tensor(g.cfg.camera_pivot)).norm())
    assert to_pivot == pytest.approx(g.cfg.camera_radius, abs=1e-4)
    rig = FaceRig.from_fit(c, generic_model(), cam)
    centre = rig.to_world(torch.tensor(FACE_CENTRE_MM)[None])[0]
    assert float(centre.norm()) < 1e-4  # the face centre is the world origin
    # the generator's rendered depth at the face centre's pixel is the ball's surface in front of it
    r = g.cfg.neural_rendering_resolution
    with torch.no_grad():
        out = g.synthesize(g.mapping.w_avg[None, None].expand(1, g.num_ws, -1), cam)
    u, v = (project_points(cam, centre[None, None])[0, 0, :2] * r).long().tolist()
    distance = float((cam.origin[0] - centre).norm())
    assert float(out.depth[0, 0, v, u]) == pytest.approx(distance - BALL, abs=0.03)


def test_the_frontal_portrait_camera_is_eg3ds_frontal_camera():
    c = coeffs(0.0, 0.0, (0.0, 0.0, 1500.0))
    cam = portrait_camera(c)
    frontal = look_at(0.0, 0.0)
    assert torch.allclose(cam.c2w[0, :3, :3], frontal.c2w[0, :3, :3], atol=1e-6)  # same orientation
    assert float((cam.origin[0] - frontal.origin[0]).norm()) < 0.02  # within 2 % of the radius
