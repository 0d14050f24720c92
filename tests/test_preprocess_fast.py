"""The fast preprocessing paths give today's outputs: each is checked against the plain
per-frame formula it replaces (written out here with scipy/numpy as the reference)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from models.face import composite, parsing


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
