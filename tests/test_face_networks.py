"""MediaPipe's shipped networks (BlazeFace, the 468-point mesh, selfie segmentation) on the
astronaut photo, against dlib's box and points; the parser's person foreground on a known case;
clear errors when a network file is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image
from skimage import data

from models.face import parsing
from models.face.blazeface import BlazeFaceDetector, ssd_anchor_centres
from models.face.face_mesh import MESH_TO_68, FaceMesh, refine, roi_from_detection, track_mesh
from models.face.landmarks import detect_faces, landmarks68
from models.face.selfie_segmentation import SelfieSegmenter
from models.face.video_landmarks import track_video_landmarks
from models.synth.talking_photo import animate_portrait, sample_portrait
from talkflow import assets
from talkflow.errors import AssetMissing


@pytest.fixture(scope="session")
def prefect_server():
    """Overrides conftest's session Prefect server: models/ never touches Prefect."""
    return None


@pytest.fixture(scope="module")
def astronaut():
    img = data.astronaut()
    box = detect_faces(img)[0]
    return img, box, landmarks68(img, box)


@pytest.fixture(scope="module")
def detector():
    return BlazeFaceDetector(assets.shipped("face_detection"))


@pytest.fixture(scope="module")
def mesh():
    return FaceMesh(assets.shipped("face_mesh"))


def _iou(a, b) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_anchor_layout_matches_the_networks():
    short, full = ssd_anchor_centres(128, [8, 16, 16, 16], True), ssd_anchor_centres(192, [4], False)
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    assert np.allclose(short[:2], [[0.5 / 16, 0.5 / 16]] * 2)  # two anchors per 8-px cell
    assert np.allclose(short[512:518], [[0.5 / 8, 0.5 / 8]] * 6)  # six per 16-px cell
    assert np.allclose(full[-1], [47.5 / 48, 47.5 / 48])


@pytest.mark.parametrize("name", ["face_detection", "face_detection_full_range"])
def test_blazeface_finds_the_astronaut(name, astronaut):
    img, box, lm = astronaut
    faces = BlazeFaceDetector(assets.shipped(name)).detect(img)
    assert len(faces) == 1 and faces[0].score > 0.85
    x0, y0, x1, y1 = faces[0].box
    inter = max(0, min(x1, box.right) - max(x0, box.left)) * max(0, min(y1, box.bottom) - max(y0, box.top))
    assert inter / ((x1 - x0) * (y1 - y0) + box.area - inter) > 0.6
    eyes = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])  # subject's right eye first
    assert np.abs(faces[0].keypoints[:2] - eyes).max() < 6


def test_blazeface_finds_no_face_in_a_rocket(detector):
    assert detector.detect(data.rocket()) == []


def test_mesh_on_the_astronaut_agrees_with_dlib(astronaut, detector, mesh):
    img, box, lm = astronaut
    res = refine(mesh, img, roi_from_detection(detector.detect(img)[0]))
    assert res.score > 0.9 and res.points.shape == (468, 3)
    m68 = res.landmarks68()

    def inside(p, grow):
        g = grow * box.width
        return ((p[:, 0] >= box.left - g) & (p[:, 0] <= box.right + g)
                & (p[:, 1] >= box.top - g) & (p[:, 1] <= box.bottom + g))

    assert inside(m68[27:68], 0.0).all()  # nose, eyes, lips inside dlib's box
    assert inside(res.points, 0.25).all()  # the whole mesh (forehead, cheeks) near it
    err = np.linalg.norm(m68[48:68] - lm[48:68], axis=-1)  # interocular distance is 44 px
    assert err.mean() < 2.5 and err.max() < 5.0


def test_mesh_tracks_a_moving_face_and_loses_none(mesh, detector):
    img = sample_portrait(256)
    frames = animate_portrait(img, track_video_landmarks(img[None], smooth=None).lms[0],
                              np.array([0.0, 0.5, 1.0, 0.5]), seed=3)
    pts, found = track_mesh(frames, mesh, detector.detect)
    assert found.all() and np.isfinite(pts).all()
    opening = np.linalg.norm(pts[:, MESH_TO_68[66], :2] - pts[:, MESH_TO_68[62], :2], axis=-1)
    assert opening[2] > opening[0] + 2  # the mouth opens with the loudness


def test_mesh_lips_in_video_landmarks(astronaut):
    img = sample_portrait(512)
    frames = np.stack([img, img])
    dl = track_video_landmarks(frames, smooth=None).lms
    hy = track_video_landmarks(frames, smooth=None, mouth="mesh", mesh=assets.shipped("face_mesh")).lms
    assert np.array_equal(hy[:, :48], dl[:, :48])  # only the lips change
    d = np.linalg.norm(hy[:, 48:] - dl[:, 48:], axis=-1)
    assert 0.1 < d.mean() < 6.0


@pytest.fixture(scope="module")
def segmenter():
    return SelfieSegmenter(assets.shipped("selfie_segmentation"))


def test_segmentation_recovers_a_moved_person(segmenter):
    """Known case: the portrait's person, cut out and shifted, over another photo."""
    img = sample_portrait(256)
    person = segmenter.mask(img)
    assert 0.4 < person.mean() < 0.8
    back = np.asarray(Image.fromarray(data.coffee()[:, 100:500]).resize((256, 256)))
    truth = np.zeros_like(person)
    truth[:, 30:] = person[:, :-30]
    moved = np.zeros_like(img)
    moved[:, 30:] = img[:, :-30]
    comp = np.where(truth[..., None], moved, back)
    assert _iou(segmenter.mask(comp), truth) > 0.93
    assert segmenter.mask(data.rocket()).mean() < 0.01  # no person


def test_parser_takes_its_person_from_the_segmentation(segmenter):
    img = sample_portrait(256)
    lm = track_video_landmarks(img[None], smooth=None).lms
    person = segmenter.mask(img)
    labels = parsing.parse_frames(img[None], lm, config=parsing.ParsingConfig(method="classical"),
                                  segmentation=assets.shipped("selfie_segmentation"))[0]
    assert _iou(labels != parsing.BG, person) > 0.95
    assert (labels[parsing.head_core(lm[0], labels.shape)] == parsing.HEAD).mean() > 0.95
    with pytest.raises(parsing.InputError, match="person mask"):
        parsing.classical_parsing(img, lm[0], None, person=person[:10])


def test_missing_network_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    for name in assets.SHIPPED:
        with pytest.raises(AssetMissing, match="scripts/setup.sh"):
            assets.shipped(name)
    with pytest.raises(FileNotFoundError, match="nope.tflite"):
        FaceMesh(tmp_path / "nope.tflite")


def test_mesh_fallback_finds_a_tilted_head_dlib_misses():
    from talkflow.errors import FaceNotFound

    img = sample_portrait(256)
    lm = track_video_landmarks(img[None], smooth=None).lms[0]
    tilted = np.asarray(Image.fromarray(img).rotate(50, resample=Image.BILINEAR, center=(128, 128)))
    a = np.deg2rad(50)
    truth = (lm - 128) @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]).T + 128
    with pytest.raises(FaceNotFound):
        track_video_landmarks(tilted[None], smooth=None)
    got = track_video_landmarks(tilted[None], smooth=None, mesh=assets.shipped("face_mesh"),
                                detector=assets.shipped("face_detection"))
    assert got.detected.all() and "face mesh" in got.warnings[0]
    iod = np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0))
    assert np.linalg.norm(got.lms[0] - truth, axis=-1)[27:68].mean() < 0.1 * iod
