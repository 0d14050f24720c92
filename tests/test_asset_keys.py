"""Assets are in the cache keys: the flows resolve each registered asset and pass it to the stages
as a Path, so registering or changing one recomputes exactly the stages that use it (and what
depends on them); every other stage is a cache hit. Counted with the computed-stages journal."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from flows.portrait import PortraitConfig, generate_from_portrait
from flows.preprocess import PreprocessConfig, preprocess_video
from flows.sample_clip import SampleClipConfig, make_sample_clip
from models.audio.features import AudioFeatureConfig
from models.face.parsing import BiSeNet, ParsingConfig
from models.face3d.morphable import generic_model
from models.nerffacespeech.face_fit import FaceFitConfig
from models.nerffacespeech.generator import GeneratorConfig, save_generator, small_generator
from models.nerffacespeech.pti import PTIConfig
from models.synth.talking_photo import sample_portrait
from talkflow import assets
from talkflow.store import get_store
from tasks.media import NormalizeConfig
from tasks.portrait import GeneratorChoice
from tasks.tracking import TrackingConfig
from tests.test_face3d import tiny_bfm

pytestmark = pytest.mark.slow

TINY_G = GeneratorConfig.small(triplane_resolution=16, neural_rendering_resolution=16, sr_input_resolution=16,
                               img_resolution=32, depth_resolution=12, depth_resolution_importance=6)
PORTRAIT = PortraitConfig(fit=FaceFitConfig(photometric=False), pti=PTIConfig.tiny(w_avg_samples=256),
                          generator=GeneratorChoice(config=TINY_G))
PORTRAIT_STAGES = ("portrait_fit", "pti", "warp_rig", "tts", "audio2exp", "portrait_render", "warp_render", "mux")
PREPROCESS_STAGES = ("normalize", "frames", "landmarks", "audio_features", "parsing", "background", "composite",
                     "blinks", "tracking", "dataset")


@pytest.fixture
def registry():
    """This test's registrations, undone afterwards (the data root is shared by the session)."""
    path = assets.registry_path()
    saved = path.read_bytes() if path.exists() else None
    yield assets
    if saved is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(saved)


def counter(journal, stages):
    def computed_since(before: dict[str, int]) -> set[str]:
        return {s for s in stages if journal.count(s) != before[s]}

    return (lambda: {s: journal.count(s) for s in stages}), computed_since


def lpips_weights(folder, seed: int = 0):
    """LPIPS-Alex in the layout `load_lpips` reads: alex.pth (linear heads) + an AlexNet backbone beside it."""
    from models.ernerf.losses import _ALEX_CONVS, _ALEX_INDEX

    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c[1], 1, 1, generator=g) for k, c in enumerate(_ALEX_CONVS)},
               folder / "alex.pth")
    backbone = {}
    for (i, o, k, _, _), idx in zip(_ALEX_CONVS, _ALEX_INDEX):
        backbone[f"features.{idx}.weight"] = torch.randn(o, i, k, k, generator=g) * 0.05
        backbone[f"features.{idx}.bias"] = torch.zeros(o)
    torch.save(backbone, folder / "alexnet-owt-test.pth")
    return folder / "alex.pth"


def test_portrait_assets_lpips_generator_bfm(tmp_path, journal, registry):
    image = tmp_path / "portrait.png"
    Image.fromarray(sample_portrait(256)).save(image)
    counts, computed = counter(journal, PORTRAIT_STAGES)

    def run():
        before = counts()
        result = generate_from_portrait("keys", image, text="Hello there.", config=PORTRAIT)
        return result, computed(before)

    first, _ = run()
    assert first.renderer == "warp" and first.pti is None and run()[1] == set()  # all hits

    lpips = lpips_weights(tmp_path / "lpips")
    registry.register("lpips", lpips)
    assert run()[1] == set()  # the warp path uses no LPIPS: nothing recomputes

    g = tmp_path / "generator.pt"
    save_generator(small_generator(1, TINY_G), g)
    registry.register("generator", g)
    with_g, changed = run()  # "auto" now takes the registered generator; the fit and the driver are hits
    assert changed == {"pti", "portrait_render", "mux"} and with_g.pti.meta["generator"] == "registered"
    assert with_g.pti.meta["loss"] == "lpips"
    save_generator(small_generator(2, TINY_G), g)  # the same path, new content
    assert run()[1] == {"pti", "portrait_render", "mux"}
    lpips_weights(tmp_path / "lpips", seed=1)  # LPIPS changed in place: PTI's loss changed
    assert run()[1] == {"pti", "portrait_render", "mux"}

    mat = tmp_path / "01_MorphableModel.mat"
    tiny_bfm(mat, generic_model())
    registry.register("bfm", mat)
    with_bfm, changed = run()
    assert changed == {"portrait_fit", "pti", "audio2exp", "portrait_render", "mux"}
    assert with_bfm.fit.meta["model"] != first.fit.meta["model"]


def tiny_hubert(folder, seed: int):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    if folder.exists():
        shutil.rmtree(folder)
    HubertModel(cfg).eval().save_pretrained(folder)
    return folder


@pytest.fixture
def bisenet_reads_its_weights_and_parses_classically(monkeypatch):
    """A randomly initialised BiSeNet labels the sample clip as all person (no background plate
    then): the parsing stage still loads the registered weights, and labels as the classical method
    does, so that this test is about cache keys, not about parsing quality."""
    import models.face.parsing
    from models.face.parsing import load_bisenet

    real = models.face.parsing.parse_frames

    def parse(frames, lms, config, weights, device, **kwargs):
        if weights is not None:
            load_bisenet(weights)
        return real(frames, lms, config=config.model_copy(update={"method": "classical"}), weights=None,
                    device=device, **kwargs)

    monkeypatch.setattr(models.face.parsing, "parse_frames", parse)  # the stage imports it when it runs


def test_preprocess_assets_bisenet_and_hubert(tmp_path, journal, registry,
                                              bisenet_reads_its_weights_and_parses_classically):
    sample = make_sample_clip("One two three four five six.", SampleClipConfig(size=256, seed=7))
    clip = get_store().fetch(sample["video"])
    config = PreprocessConfig(normalize=NormalizeConfig(size=256), audio=AudioFeatureConfig(kind="hubert"),
                              parsing=ParsingConfig(bisenet_size=64), tracking=TrackingConfig(photometric=False))
    registry.register("hubert", tiny_hubert(tmp_path / "hubert", seed=0))
    counts, computed = counter(journal, PREPROCESS_STAGES)

    def run():
        before = counts()
        dataset = preprocess_video(clip, "keys", config)
        return dataset, computed(before)

    first, _ = run()
    assert first.meta["parsing"] == "classical" and first.meta["features"]["kind"] == "hubert"

    model = BiSeNet().eval()
    torch.save(model.state_dict(), tmp_path / "79999_iter.pth")
    registry.register("bisenet", tmp_path / "79999_iter.pth")
    with_bisenet, changed = run()
    assert changed == {"parsing", "background", "composite", "dataset"}  # parsing and what is made from it
    assert with_bisenet.meta["parsing"] == "bisenet"

    tiny_hubert(tmp_path / "hubert", seed=1)  # the registered folder's weights change
    again, changed = run()
    assert changed == {"audio_features", "dataset"}
    a = np.load(get_store().fetch(again["feats"]))
    b = np.load(get_store().fetch(with_bisenet["feats"]))
    assert a.shape == b.shape and not np.allclose(a, b)
