"""Model-level preprocessing: video landmarks, parsing, background, composites, blinks, audio features.

The clips are synthetic: skimage's astronaut portrait animated by models.synth.talking_photo,
and for parsing that face pasted over a fixed wall with a neck and a shirt (a static camera
with known part masks).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull
from skimage.draw import polygon as draw_polygon

from models.audio import features as af
from models.face import background as bgm
from models.face import blink, composite, parsing
from models.face.landmarks import largest_face_landmarks
from models.face.video_landmarks import read_lms, track_video_landmarks, write_lms
from models.synth.talking_photo import animate_portrait, sample_portrait
from talkflow.errors import AssetMissing, FaceNotFound, FaceTooSmall, InputError

SIZE = 512


@pytest.fixture(scope="session")
def prefect_server():
    """Overrides conftest's session Prefect server: models/ never touches Prefect."""
    return None


# --------------------------------------------------------------------------- synthetic clips


@pytest.fixture(scope="module")
def portrait():
    img = sample_portrait(SIZE)
    return img, largest_face_landmarks(img)


@pytest.fixture(scope="module")
def talking(portrait):
    """24 frames, mouth opening at ~3 Hz (period 8 frames), slight head motion."""
    img, lm = portrait
    env = (0.5 + 0.5 * np.sin(np.arange(24) * 2 * np.pi / 8)).astype(np.float32)
    return animate_portrait(img, lm, env, seed=1), env


def _wall(size: int, seed: int = 0) -> np.ndarray:
    """A plausible static background: a shaded wall with soft stains, fine grain and a door frame."""
    rng = np.random.default_rng(seed)

    def blobs(sigma: float) -> np.ndarray:
        n = ndimage.gaussian_filter(rng.normal(size=(size, size, 3)), (sigma, sigma, 0))
        return (n - n.mean()) / n.std()

    yy, xx = np.mgrid[0:size, 0:size] / size
    wall = np.stack([150 + 50 * xx, 170 - 30 * yy, 140 + 40 * xx * yy], -1) + 12 * blobs(40) + 4 * blobs(2)
    wall[:, int(0.85 * size) : int(0.88 * size)] -= 50
    return np.clip(wall, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def studio(portrait, talking):
    """(frames (12,S,S,3), ground-truth labels (S,S), wall (S,S,3)): the talking face cut by an
    ellipse, a skin-coloured neck and a shirt, over a fixed wall."""
    img, lm = portrait
    anim = talking[0][:12]
    shape = (SIZE, SIZE)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    jaw_w = lm[16, 0] - lm[0, 0]
    chin_y, cx = lm[8, 1], lm[:17, 0].mean()
    top = lm[17:27, 1].min() - 0.75 * (chin_y - lm[17:27, 1].mean())
    head = ((xx - cx) / (0.58 * jaw_w)) ** 2 + ((yy - 0.5 * (top + chin_y)) / (0.5 * (chin_y - top) + 4)) ** 2 <= 1
    neck = np.zeros(shape, bool)
    n0, n1 = int(chin_y - 0.15 * jaw_w), int(chin_y + 0.45 * jaw_w)
    neck[n0:n1, int(cx - 0.3 * jaw_w) : int(cx + 0.3 * jaw_w)] = True
    sh = n1 - 10
    xs = [cx - 0.45 * jaw_w, cx + 0.45 * jaw_w, cx + 1.2 * jaw_w, cx + 1.4 * jaw_w, SIZE, SIZE, 0, 0,
          cx - 1.4 * jaw_w, cx - 1.2 * jaw_w]
    ys = [sh, sh, sh + 0.15 * jaw_w, sh + 0.4 * jaw_w, sh + 0.6 * jaw_w, SIZE, SIZE, sh + 0.6 * jaw_w,
          sh + 0.4 * jaw_w, sh + 0.15 * jaw_w]
    torso = np.zeros(shape, bool)
    rr, cc = draw_polygon(np.array(ys), np.array(xs), shape)
    torso[rr, cc] = True
    skin = np.median(img[int(lm[29, 1]) : int(lm[33, 1]), int(lm[3, 0]) : int(lm[4, 0]) + 5].reshape(-1, 3), 0)
    shirt = np.clip(np.array([40, 50, 120]) + 8 * np.random.default_rng(1).normal(size=(SIZE, SIZE, 1)), 0, 255)
    wall = _wall(SIZE)
    gt = np.zeros(shape, np.uint8)
    gt[torso], gt[neck], gt[head] = parsing.TORSO, parsing.NECK, parsing.HEAD
    frames = np.empty_like(anim)
    for i, a in enumerate(anim):
        f = wall.copy()
        f[torso] = shirt[torso].astype(np.uint8)
        f[neck] = skin.astype(np.uint8)
        f[head] = a[head]
        frames[i] = f
    return frames, gt, wall


@pytest.fixture(scope="module")
def studio_lms(studio):
    return track_video_landmarks(studio[0]).lms


def _jitter(lms: np.ndarray) -> float:
    """Mean |second difference| over time of the rigid points (nose, eyes), px."""
    pts = list(range(27, 48))
    return float(np.abs(np.diff(lms[:, pts], 2, axis=0)).mean())


def _hull_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    hull = points[ConvexHull(points).vertices]
    mask = np.zeros(shape, bool)
    rr, cc = draw_polygon(hull[:, 1], hull[:, 0], shape)
    mask[rr, cc] = True
    return mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# --------------------------------------------------------------------------- landmarks


def test_landmarks_every_frame_and_smooth(talking):
    frames, env = talking
    seen = []
    v = track_video_landmarks(frames, progress=lambda done, total: seen.append((done, total)))
    assert v.lms.shape == (24, 68, 2) and v.lms.dtype == np.float32
    assert v.detected.all() and v.warnings == [] and v.missing.size == 0
    assert seen[-1] == (24, 24)
    # Smoothing removes most frame-to-frame jitter (dlib gives whole pixels) ...
    assert _jitter(v.lms) < 0.6 * _jitter(v.raw)
    assert np.abs(v.lms - v.raw).max() < 4.0
    # ... but keeps the fast mouth motion: opening follows the 3 Hz envelope with most of its range.
    opening = v.lms[:, 66, 1] - v.lms[:, 62, 1]
    raw_opening = v.raw[:, 66, 1] - v.raw[:, 62, 1]
    assert np.corrcoef(opening, env)[0, 1] > 0.9
    assert np.ptp(opening) > 0.8 * np.ptp(raw_opening)


def test_landmarks_on_threads_equal_one_thread(talking, monkeypatch):
    """Frames detected ahead on several threads give exactly the one-thread points, blank
    frames included (one shared dlib detector mixed detections across threads)."""
    import models.face.video_landmarks as VL

    frames = np.concatenate([talking[0], talking[0]])
    frames[[0, 5, 6, 17, 30]] = 0
    monkeypatch.setattr(VL, "DETECT_THREADS", 1)
    one = track_video_landmarks(frames, smooth=None, max_missing_share=0.5)
    monkeypatch.setattr(VL, "DETECT_THREADS", 3)
    for _ in range(3):
        many = track_video_landmarks(frames, smooth=None, max_missing_share=0.5)
        assert many.missing.tolist() == [0, 5, 6, 17, 30]
        np.testing.assert_array_equal(many.raw, one.raw)


def test_blank_frames_reported_and_interpolated(talking, tmp_path):
    frames = talking[0][:12].copy()
    frames[[0, 6]] = 0
    v = track_video_landmarks(frames, smooth=None)
    assert v.missing.tolist() == [0, 6]
    assert any("2 of 12" in w and "0, 6" in w for w in v.warnings)
    np.testing.assert_allclose(v.lms[6], 0.5 * (v.lms[5] + v.lms[7]), atol=1e-4)
    np.testing.assert_array_equal(v.lms[0], v.lms[1])  # edge: nearest detected frame
    write_lms(tmp_path / "3.lms", v.lms[3])
    np.testing.assert_allclose(read_lms(tmp_path / "3.lms"), v.lms[3], atol=0.01)


def test_too_many_faceless_frames_raise(talking):
    frames = list(talking[0][:20])
    for i in range(6):
        frames[i] = np.full_like(frames[i], 90)
    with pytest.raises(FaceNotFound, match=r"of the first \d+ frames \(20 in all\)") as exc:
        track_video_landmarks(frames)
    assert not isinstance(exc.value, FaceTooSmall)
    assert "max_missing_share" in str(exc.value)


def test_tiny_face_raises_small_face_error(portrait):
    small = np.asarray(Image.fromarray(portrait[0]).resize((120, 120), Image.LANCZOS))
    frame = np.full((SIZE, SIZE, 3), 128, np.uint8)
    frame[200:320, 200:320] = small
    with pytest.raises(FaceTooSmall, match="too small") as exc:
        track_video_landmarks(np.stack([frame] * 3))
    assert isinstance(exc.value, InputError)


# --------------------------------------------------------------------------- parsing


def test_classical_parsing_gives_sane_masks(studio, studio_lms):
    frames, gt, _ = studio
    labels = parsing.parse_frames(frames, studio_lms, config=parsing.ParsingConfig(method="classical"))
    assert labels.shape == frames.shape[:3] and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 3}  # one label map: parts cannot overlap
    bg, head, neck, torso = parsing.part_areas(labels)
    assert 0.15 < head < 0.45 and 0.01 < neck < 0.12 and 0.02 < torso < 0.3 and bg > 0.3
    ys = np.arange(SIZE)[None, :, None]
    centre = {k: float((ys * (labels == k)).sum() / (labels == k).sum()) for k in (1, 2, 3)}
    assert centre[1] < centre[2] < centre[3]
    for i in (0, len(frames) - 1):
        hull = _hull_mask(studio_lms[i], (SIZE, SIZE))
        assert (labels[i][hull] == parsing.HEAD).mean() > 0.99
    assert _iou(labels[0] == 1, gt == 1) > 0.8
    assert _iou(labels[0] == 3, gt == 3) > 0.5


def test_classical_parsing_refined_background(studio, studio_lms):
    frames, gt, _ = studio
    cfg = parsing.ParsingConfig(method="classical", refine_background=True)
    done = []
    labels = parsing.parse_frames(frames[:4], studio_lms[:4], config=cfg, progress=lambda i, n: done.append((i, n)))
    assert done[-1] == (8, 8)  # two passes over four frames
    assert _iou(labels[0] == 1, gt == 1) > 0.8


def test_classical_parsing_with_known_background(studio, studio_lms):
    frames, gt, wall = studio
    labels = parsing.classical_parsing(frames[0], studio_lms[0], wall)
    assert _iou(labels == 1, gt == 1) > 0.9
    assert _iou(labels == 2, gt == 2) > 0.5
    assert _iou(labels == 3, gt == 3) > 0.6
    rgb = parsing.labels_to_rgb(labels)
    assert rgb.shape == (SIZE, SIZE, 3)
    assert tuple(rgb[labels == 1][0]) == (255, 0, 0) and tuple(rgb[labels == 0][0]) == (255, 255, 255)
    np.testing.assert_array_equal(parsing.rgb_to_labels(rgb), labels)


def test_classical_parsing_body_above_the_chin_is_torso_and_stray_hair_head(studio, studio_lms):
    """A collar rising beside the neck, from the jaw's side outwards, to just under the mouth
    (`hair_low`) is torso (not background, not head), a tuft of hair beside the temple is head,
    in the per-frame and the batched parser."""
    frames, _, wall = studio
    lm = studio_lms[0]
    person = np.abs(frames[0].astype(np.int16) - wall.astype(np.int16)).max(-1) > 30
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    jaw_w, chin_y, cx = lm[16, 0] - lm[0, 0], lm[8, 1], lm[:17, 0].mean()
    brow_y = lm[17:27, 1].mean()
    face_h = chin_y - brow_y
    top = chin_y - 0.8 * parsing.ClassicalParsingConfig().hair_low * face_h  # just under the mouth
    collar = ((yy >= top) & (yy <= chin_y + 0.3 * jaw_w)
              & (np.abs(xx - cx) >= 0.6 * jaw_w) & (np.abs(xx - cx) <= 1.1 * jaw_w))
    tuft = (yy >= brow_y - 0.1 * jaw_w) & (yy <= brow_y + 0.1 * jaw_w) & (xx >= lm[16, 0] + 0.1 * jaw_w) \
        & (xx <= lm[16, 0] + 0.25 * jaw_w)
    extra = collar | tuft
    assert not person[extra].any()  # both lie on the wall in the studio frame
    person = person | extra
    frame = np.where(extra[..., None], np.uint8(90), frames[0])
    one = parsing.classical_parsing(frame, lm, None, person=person)
    batch = parsing.classical_parsing_batch(frame[None], lm[None], None, person=person[None])[0]
    for labels in (one, batch):
        assert (labels[collar] == parsing.TORSO).mean() > 0.995, np.bincount(labels[collar], minlength=4)
        assert (labels[tuft] == parsing.HEAD).mean() > 0.97
        assert not (labels[~person] == parsing.TORSO).any()  # torso only where the person is


def test_bisenet_layout_forward_and_strict_round_trip(tmp_path):
    torch.manual_seed(0)
    model = parsing.BiSeNet().eval()
    keys = model.state_dict().keys()
    for k in ["cp.resnet.conv1.weight", "cp.resnet.layer1.0.conv1.weight", "cp.resnet.layer2.0.downsample.0.weight",
              "cp.resnet.layer4.1.bn2.running_var", "cp.arm16.conv.conv.weight", "cp.arm32.conv_atten.weight",
              "cp.arm32.bn_atten.running_mean", "cp.conv_head32.conv.weight", "cp.conv_head16.bn.weight",
              "cp.conv_avg.conv.weight", "ffm.convblk.conv.weight", "ffm.conv1.weight", "ffm.conv2.weight",
              "conv_out.conv.conv.weight", "conv_out.conv_out.weight", "conv_out16.conv_out.weight",
              "conv_out32.conv.bn.bias"]:
        assert k in keys, k
    assert not any(k.startswith(("sp.", "cp.resnet.fc")) for k in keys)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, SIZE, SIZE))
    assert logits.shape == (1, 19, SIZE, SIZE)

    # Old checkpoints: DataParallel prefix, no num_batches_tracked counters.
    state = {f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "79999_iter.pth"
    torch.save(state, path)
    loaded = parsing.load_bisenet(path)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))

    torch.save({**model.state_dict(), "extra.weight": torch.zeros(1)}, path)
    with pytest.raises(InputError, match="layout"):
        parsing.load_bisenet(path)

    frames = np.random.default_rng(0).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    torch.save(model.state_dict(), path)
    labels = parsing.parse_frames(frames, np.zeros((1, 68, 2), np.float32), weights=path,
                                  config=parsing.ParsingConfig(bisenet_size=128))
    assert labels.shape == (1, 64, 64) and labels.max() <= 3


def test_bisenet_missing_asset_names_the_file():
    assert parsing.resolve_method("auto") == "classical"
    with pytest.raises(AssetMissing, match="79999_iter.pth"):
        parsing.resolve_method("bisenet")


def test_class_to_part_follows_ernerf():
    part = dict(zip(parsing.CLASS_NAMES, parsing.CLASS_TO_PART.tolist()))
    assert part["background"] == 0 and part["cloth"] == 3
    assert part["neck"] == part["neck_l"] == 2
    for name in ("skin", "l_brow", "r_eye", "eye_g", "l_ear", "ear_r", "nose", "mouth", "u_lip", "hair", "hat"):
        assert part[name] == 1, name


# --------------------------------------------------------------------------- background and composites


def test_background_recovered_under_a_moving_square():
    size, t = 128, 20
    wall = _wall(size, seed=3)
    frames, masks = [], []
    for i in range(t):
        f, m = wall.copy(), np.zeros((size, size), bool)
        x0 = 4 + 5 * i
        m[40:80, x0 : x0 + 30] = True
        m[:20, :20] = True  # a corner that is always covered
        f[m] = (220, 30, 30)
        frames.append(f)
        masks.append(m)
    frames, masks = np.stack(frames), np.stack(masks)

    plain = bgm.estimate_background(frames)  # median without masks: the square covers each pixel rarely
    err = np.abs(plain.astype(int) - wall.astype(int)).max(-1)
    assert np.median(err[20:]) <= 1 and (err[20:] > 3).mean() < 0.01

    est, seen = bgm.estimate_background(frames, masks, bgm.BackgroundConfig(margin_px=1), return_seen=True)
    assert not seen[:19, :19].any() and seen[30:].all()
    err = np.abs(est.astype(int) - wall.astype(int)).max(-1)
    assert err[seen].max() <= 1
    # never-seen corner: copied from the nearest seen pixels, so close to the wall there
    assert np.abs(est[:19, :19].astype(int) - wall[:19, :19].astype(int)).mean() < 20


def test_gt_and_torso_images(studio, studio_lms):
    frames, gt_labels, wall = studio
    labels = gt_labels
    gt = composite.gt_image(frames[0], labels, wall)
    np.testing.assert_array_equal(gt[labels == 0], wall[labels == 0])
    np.testing.assert_array_equal(gt[labels != 0], frames[0][labels != 0])
    rgba = composite.torso_rgba(frames[0], labels)
    assert rgba.shape == (SIZE, SIZE, 4) and rgba.dtype == np.uint8
    alpha = rgba[..., 3]
    assert (alpha[(labels == 2) | (labels == 3)] == 255).all()
    assert (alpha[labels == 0] == 0).all() and (rgba[..., :3][alpha == 0] == 0).all()
    painted = (alpha == 255) & (labels == 1)  # the neck extended under the chin
    assert 0 < painted.sum() < 0.25 * (labels == 1).sum()
    bare = composite.torso_rgba(frames[0], labels, config=composite.TorsoConfig(neck_extend_px=0, torso_extend_px=0))
    assert ((bare[..., 3] == 255) == ((labels == 2) | (labels == 3))).all()


# --------------------------------------------------------------------------- blinks


def test_blink_closed_eyes_high_open_near_zero(portrait):
    lm = portrait[1]
    rng = np.random.default_rng(0)
    lms = np.repeat(lm[None], 60, 0) + rng.normal(0, 0.3, (60, 68, 2)).astype(np.float32)
    closed = [20, 21, 22, 40, 41]
    for eye in (blink.RIGHT_EYE, blink.LEFT_EYE):
        p = list(eye)
        for t in closed:
            mid = 0.5 * (lms[t, p[1:3]] + lms[t, [p[5], p[4]]])  # upper and lower lids meet
            lms[t, p[1:3]] = mid
            lms[t, [p[5], p[4]]] = mid
    ear = blink.eye_aspect_ratio(lms)
    assert 0.15 < np.median(ear) < 0.45
    au = blink.au45_from_landmarks(lms)
    assert au.shape == (60,) and au.dtype == np.float32
    assert (au[closed] > 4.5).all()
    assert np.delete(au, closed).max() < 0.8 and np.median(np.delete(au, closed)) < 0.2
    # a clip without blinks is not stretched to the full scale
    assert blink.au45_from_landmarks(np.delete(lms, closed, 0)).max() < 1.0


# --------------------------------------------------------------------------- audio


def _reference_log_mel(x: np.ndarray) -> np.ndarray:
    """Independent numpy log-mel: librosa's defaults (Slaney mel, zero-padded centred frames)."""
    sr, n_fft, win, hop, n_mels = 16000, 512, 400, 320, 80
    n = np.arange(win)
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2 : (n_fft - win) // 2 + win] = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)
    padded = np.concatenate([np.zeros(n_fft // 2), x.astype(np.float64), np.zeros(n_fft // 2)])
    n_frames = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[i * hop : i * hop + n_fft] for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (L,257)

    def hz2mel(f):
        return f / (200 / 3) if f < 1000 else 15 + math.log(f / 1000) * 27 / math.log(6.4)

    def mel2hz(m):
        return m * (200 / 3) if m < 15 else 1000 * math.exp((m - 15) * math.log(6.4) / 27)

    edges = [mel2hz(m) for m in np.linspace(hz2mel(0.0), hz2mel(sr / 2), n_mels + 2)]
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    fb = np.zeros((n_mels, len(freqs)))
    for i in range(n_mels):
        lo, c, hi = edges[i : i + 3]
        for j, f in enumerate(freqs):
            if lo < f < hi:
                fb[i, j] = (f - lo) / (c - lo) if f <= c else (hi - f) / (hi - c)
        fb[i] *= 2.0 / (hi - lo)
    return np.log(np.maximum(power @ fb.T, 1e-5))


def test_log_mel_matches_reference_at_50_fps():
    t = np.arange(32000) / 16000
    rng = np.random.default_rng(0)
    x = (0.3 * np.sin(2 * np.pi * (200 + 900 * t) * t) * (1 + np.sin(2 * np.pi * 3 * t))
         + 0.01 * rng.normal(size=t.size)).astype(np.float32)
    mel = af.log_mel(x)
    assert mel.shape == (101, 80) and mel.dtype == np.float32  # 2 s -> 1 + 2 * 50 frames
    np.testing.assert_allclose(mel, _reference_log_mel(x), atol=1e-4, rtol=0)
    assert af.log_mel(x[:16000]).shape[0] == 51


def test_window_features_alignment_and_edges():
    t = 10
    feats = np.stack([np.arange(2 * t + 1), -np.arange(2 * t + 1)], 1).astype(np.float32)  # (21,2) row index
    w = af.window_features(feats, t)
    assert w.shape == (t, 16, 2) and w.dtype == np.float32
    for i in range(t):
        np.testing.assert_array_equal(w[i, :, 0], np.clip(np.arange(2 * i - 8, 2 * i + 8), 0, 2 * t))
        assert w[i, 8, 0] == 2 * i  # video frame i (i/25 s) is feature row 2i (2i/50 s)
    with pytest.raises(InputError, match="give audio as long as the video"):
        af.window_features(feats, t + 20)


def test_extract_logmel_features_and_files(tmp_path):
    sr, seconds = 22050, 1.2
    x = (0.2 * np.sin(2 * np.pi * 220 * np.arange(int(sr * seconds)) / sr) * 32767).astype(np.int16)
    feats, info = af.extract_features(x, sr, 30)
    assert feats.shape == (30, 16, 80) and feats.dtype == np.float32
    assert info == af.FeatureInfo(kind="logmel", dim=80, fps=25, window=16)
    af.save_features(tmp_path, feats, info)
    assert json.loads((tmp_path / "aud_feats.json").read_text()) == {"kind": "logmel", "dim": 80, "fps": 25,
                                                                    "window": 16}
    again, info2 = af.load_features(tmp_path)
    np.testing.assert_array_equal(again, feats)
    assert info2 == info


def test_logmel_features_are_standardised_per_band_and_ignore_the_gain():
    """Each band has mean 0 and variance 1 over the clip, so the same speech 4x louder gives the
    same features; `normalize=False` keeps the raw log-mel (which shifts by log 16)."""
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    x = 0.1 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.normal(size=t.size)
    x = x.astype(np.float32)
    feats, _ = af.extract_features(x, 16000, 50)
    loud, _ = af.extract_features(4 * x, 16000, 50)
    np.testing.assert_allclose(loud, feats, atol=1e-3)
    steps = af.normalize_bands(af.log_mel(x))
    np.testing.assert_allclose(steps.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(steps.std(0), 1, atol=1e-3)
    raw = af.AudioFeatureConfig(logmel=af.LogMelConfig(normalize=False))
    a, _ = af.extract_features(x, 16000, 50, config=raw)
    b, _ = af.extract_features(4 * x, 16000, 50, config=raw)
    assert abs(float((b - a).mean()) - np.log(16)) < 0.05


def test_hubert_from_local_folder(tmp_path):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    HubertModel(cfg).eval().save_pretrained(tmp_path / "tiny-hubert")
    x = (0.1 * np.random.default_rng(0).normal(size=16000 * 2)).astype(np.float32)
    feats, info = af.extract_features(x, 16000, 50, kind="hubert", model_dir=tmp_path / "tiny-hubert")
    assert feats.shape == (50, 16, 32) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert info.kind == "hubert" and info.dim == 32
    steps = af.model_features(x, "hubert", tmp_path / "tiny-hubert", model_class="HubertModel",
                              output="last_hidden_state", chunk_s=0.5, context_s=0.2)
    assert steps.shape == (1 + x.size // 320, 32)
    with pytest.raises(AssetMissing, match="config.json"):
        af.extract_features(x, 16000, 50, kind="hubert", model_dir=tmp_path / "nothing-here")


def test_deepspeech_npy_validation(tmp_path):
    t = 40
    good = tmp_path / "aud_ds.npy"
    np.save(good, np.random.default_rng(0).normal(size=(t, 16, 29)).astype(np.float32))
    assert af.load_deepspeech_npy(good, t).shape == (t, 16, 29)
    steps = tmp_path / "steps.npy"
    np.save(steps, np.zeros((2 * t, 29), np.float32))
    assert af.load_deepspeech_npy(steps, t).shape == (t, 16, 29)
    for name, arr, msg in [("dim.npy", np.zeros((t, 16, 28)), "expected DeepSpeech"),
                           ("count.npy", np.zeros((t + 9, 16, 29)), "windows but the video has 40 frames"),
                           ("len.npy", np.zeros((3 * t, 29)), "matches neither")]:
        np.save(tmp_path / name, arr)
        with pytest.raises(InputError, match=msg):
            af.load_deepspeech_npy(tmp_path / name, t)
    (tmp_path / "junk.npy").write_text("not numpy")
    with pytest.raises(InputError, match="cannot read"):
        af.load_deepspeech_npy(tmp_path / "junk.npy", t)
