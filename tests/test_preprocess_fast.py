"""The fast preprocessing paths give today's outputs: each is checked against the plain
per-frame formula it replaces (written out here with scipy/numpy as the reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from models.face import composite, parsing
from tests.test_preprocess_models import portrait, studio, studio_lms, talking  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def prefect_server():
    """Overrides conftest's session Prefect server: these are model tests."""
    return None


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def _blobs(rng: np.random.Generator, size: int, n: int = 6) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for _ in range(n):
        cy, cx, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(3, size // 4))]
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return mask


@pytest.mark.parametrize("seed", range(4))
def test_blur_where_equals_blurring_the_whole_frame(seed):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    where = _blobs(rng, 96, 2)
    where[: seed * 3] = seed == 3  # also regions touching the image border
    ref = rgb.copy()
    full = ndimage.gaussian_filter(ref.astype(np.float32), (1.0, 1.0, 0))
    ref[where] = np.clip(full[where] + 0.5, 0, 255).astype(np.uint8)
    fast = rgb.copy()
    composite._blur_where(fast, where, 1.0)
    np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("px", [0, 1, 3, 7])
def test_grow_vertically_equals_iterated_dilation(px):
    mask = _blobs(np.random.default_rng(px), 64)
    ref = mask if px == 0 else ndimage.binary_dilation(mask, np.array([[0, 1, 0]] * 3, bool), iterations=px)
    np.testing.assert_array_equal(composite._grow_vertically(mask, px), ref)


def test_rgb_to_labels_fast_path_and_nearest_colour():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (2, 32, 32)).astype(np.uint8)
    np.testing.assert_array_equal(parsing.rgb_to_labels(parsing.labels_to_rgb(labels)), labels)
    off = parsing.labels_to_rgb(labels).copy()
    off[0, 0, 0] = (240, 20, 10)  # not a palette colour: nearest is red (head)
    off[0, 0, 1] = (120, 130, 250)  # nearest is blue (torso)
    got = parsing.rgb_to_labels(off)
    assert got[0, 0, 0] == parsing.HEAD and got[0, 0, 1] == parsing.TORSO
    np.testing.assert_array_equal(got[1], labels[1])


@pytest.mark.parametrize("r", [1, 2, 4, 9])
def test_disk_morphology_equals_scipy(r):
    masks = np.stack([_blobs(np.random.default_rng(r + k), 80, 5) ^ _blobs(np.random.default_rng(50 + k), 80, 3)
                      for k in range(3)])
    got_d = parsing._dilate_batch(torch.from_numpy(masks), r).numpy()
    got_e = parsing._erode_batch(torch.from_numpy(masks), r).numpy()
    disk = parsing._disk(r)
    for k, m in enumerate(masks):
        np.testing.assert_array_equal(got_d[k], ndimage.binary_dilation(m, disk))
        np.testing.assert_array_equal(got_e[k], ndimage.binary_erosion(m, disk, border_value=0))
        np.testing.assert_array_equal(got_d[k], parsing._dilate(m, r))  # the per-frame path (EDT above r=3)
        np.testing.assert_array_equal(got_e[k], parsing._erode(m, r))


def test_fill_holes_equals_scipy():
    for k in range(4):
        m = _blobs(np.random.default_rng(k), 64, 8) ^ _blobs(np.random.default_rng(10 + k), 64, 4)
        np.testing.assert_array_equal(parsing._fill_holes(m), ndimage.binary_fill_holes(m))


def test_batched_classical_parsing_matches_the_per_frame_reference(studio, studio_lms):  # noqa: F811
    """Today's per-frame `classical_parsing` is the reference: every part's IoU > 0.98 per frame
    (measured: identical) and `parse_frames` returns the batched result."""
    frames, _, wall = studio
    cfg = parsing.ClassicalParsingConfig()
    ref = np.stack([parsing.classical_parsing(f, lm, wall, cfg) for f, lm in zip(frames, studio_lms)])
    got = parsing.classical_parsing_batch(frames[:5], studio_lms[:5], wall, cfg)
    got = np.concatenate([got, parsing.classical_parsing_batch(frames[5:], studio_lms[5:], wall, cfg)])
    assert got.shape == ref.shape and got.dtype == np.uint8
    for part in (parsing.HEAD, parsing.NECK, parsing.TORSO):
        assert min(_iou(ref[k] == part, got[k] == part) for k in range(len(ref))) > 0.98
    assert (got != ref).mean() < 1e-3
    # a different, tighter setting goes through the same batch path
    tight = parsing.ClassicalParsingConfig(diff_threshold=45.0, close_px=6, open_px=1, head_close=0.12)
    ref_t = parsing.classical_parsing(frames[3], studio_lms[3], wall, tight)
    got_t = parsing.classical_parsing_batch(frames[3:4], studio_lms[3:4], wall, tight)[0]
    assert (got_t != ref_t).mean() < 1e-3
    whole = parsing.parse_frames(frames, studio_lms, background=wall,
                                 config=parsing.ParsingConfig(method="classical", batch_size=4))
    np.testing.assert_array_equal(whole, got)


def test_batched_parsing_with_person_masks_matches_the_per_frame_reference(studio, studio_lms):  # noqa: F811
    """The segmentation path (person masks in place of the plate) batched: the same labels as
    per-frame `classical_parsing(..., person=)`; `parse_frames` with the network batches it."""
    from talkflow import assets

    frames, _, wall = studio
    cfg = parsing.ClassicalParsingConfig()
    person = np.abs(frames.astype(np.int16) - wall.astype(np.int16)).max(-1) > 30  # (T,S,S) masks
    ref = np.stack([parsing.classical_parsing(f, lm, None, cfg, person=m)
                    for f, lm, m in zip(frames, studio_lms, person)])
    got = parsing.classical_parsing_batch(frames, studio_lms, None, cfg, person=person)
    assert (got != ref).mean() < 1e-4
    for part in (parsing.HEAD, parsing.NECK, parsing.TORSO):
        assert min(_iou(ref[k] == part, got[k] == part) for k in range(len(ref))) > 0.98
    with pytest.raises(parsing.InputError, match="person masks"):
        parsing.classical_parsing_batch(frames[:2], studio_lms[:2], None, cfg, person=person[:1])
    seg = assets.shipped("selfie_segmentation")
    if seg is not None:
        from models.face.selfie_segmentation import SelfieSegmenter

        masks = np.stack([SelfieSegmenter(seg).mask(f) for f in frames[:4]])
        each = np.stack([parsing.classical_parsing(f, lm, None, cfg, person=m)
                         for f, lm, m in zip(frames[:4], studio_lms[:4], masks)])
        whole = parsing.parse_frames(frames[:4], studio_lms[:4], segmentation=seg,
                                     config=parsing.ParsingConfig(method="classical", batch_size=3))
        assert (whole != each).mean() < 1e-4


def test_batched_parsing_rejects_bad_shapes(studio, studio_lms):  # noqa: F811
    frames, _, wall = studio
    with pytest.raises(parsing.InputError):
        parsing.classical_parsing_batch(frames[:2], studio_lms[:2], wall[:100])
    with pytest.raises(parsing.InputError):
        parsing.classical_parsing_batch(frames[:2], np.full((2, 68, 2), np.nan), wall)
