"""What the avatar hears: audio windows at the clip's edges, band statistics from the training
frames only, and new audio featurised with the settings the avatar was trained with."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flows.render import _feature_config
from models.audio import features as af
from models.ernerf.audio import audio_windows
from talkflow.errors import InputError


def test_windows_past_the_clip_ends_repeat_the_first_and_last_frames():
    feats = torch.arange(1, 6, dtype=torch.float32)[:, None, None].expand(5, 16, 3)  # frame k holds k + 1
    win = audio_windows(feats, torch.tensor([0, 4]), att_window=8)  # offsets -4 .. 3
    assert win.shape == (2, 8, 16, 3)
    assert win[0, :, 0, 0].tolist() == [1, 1, 1, 1, 1, 2, 3, 4]
    assert win[1, :, 0, 0].tolist() == [1, 2, 3, 4, 5, 5, 5, 5]
    assert (win != 0).all()  # no zero window: zeros are codes no real frame has


def test_band_statistics_come_from_the_training_part_only():
    rng = np.random.default_rng(0)
    steps = rng.normal(2.0, 3.0, (100, 4))
    steps[90:] += 50.0  # a loud held-out end
    whole, train = af.normalize_bands(steps), af.normalize_bands(steps, 0.9)
    assert np.allclose(train[:90].mean(0), 0, atol=1e-5) and np.allclose(train[:90].std(0), 1, atol=1e-4)
    assert np.allclose(whole.mean(0), 0, atol=1e-5) and not np.allclose(whole[:90].mean(0), 0, atol=0.1)
    x = rng.normal(0, 0.1, 16_000 * 2).astype(np.float32)
    cfg = af.AudioFeatureConfig(logmel=af.LogMelConfig(stats_fraction=0.5))
    a, _ = af.extract_features(x, 16_000, 50, config=cfg)
    b, _ = af.extract_features(np.concatenate([x[:16_000], 10 * x[16_000:]]), 16_000, 50, config=cfg)
    assert np.allclose(a[:20], b[:20], atol=1e-4)  # the second half never changes the first's features


def _avatar(features: dict):
    return SimpleNamespace(person="ann", features=features)


def test_rendering_uses_the_feature_config_the_avatar_was_trained_with():
    trained = af.AudioFeatureConfig(logmel=af.LogMelConfig(n_mels=40, fmax=7600.0, stats_fraction=0.9))
    avatar = _avatar({"kind": "logmel", "dim": 40, "config": trained.model_dump(mode="json")})
    used = _feature_config(avatar, None)
    assert used.logmel.n_mels == 40 and used.logmel.fmax == 7600.0
    assert used.logmel.stats_fraction == 1.0  # new audio: statistics over all of itself
    assert _feature_config(avatar, used) == used
    with pytest.raises(InputError, match="other settings"):
        _feature_config(avatar, af.AudioFeatureConfig())  # default log-mel: 80 bands, not the avatar's 40
    with pytest.raises(InputError, match="phonemes"):
        _feature_config(avatar, af.AudioFeatureConfig(kind="phonemes"))
    old = _avatar({"kind": "logmel", "dim": 80})  # recorded before the config was: the defaults
    assert _feature_config(old, None) == af.AudioFeatureConfig()
