"""One-shot portraits through the flow: the character fit is cached per character and image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from prefect import flow

from flows.portrait import PortraitConfig, generate_from_portrait
from models.nerffacespeech.face_fit import FaceFitConfig
from models.nerffacespeech.generator import GeneratorConfig, save_generator, small_generator
from models.nerffacespeech.pti import PTIConfig
from models.portrait_warp import WarpRigConfig
from models.synth.talking_photo import sample_portrait
from talkflow import assets, media
from talkflow.cache_admin import free_namespace, list_entries
from talkflow.errors import AssetMissing, EmptyMedia, FaceNotFound, InputError
from talkflow.store import get_store
from tasks.portrait import GeneratorChoice, fit_character_face, invert_portrait

pytestmark = pytest.mark.slow
TINY_G = GeneratorConfig.small(triplane_resolution=16, neural_rendering_resolution=16, sr_input_resolution=16,
                               img_resolution=32, depth_resolution=12, depth_resolution_importance=6)
CONFIG = PortraitConfig(fit=FaceFitConfig(photometric=False), pti=PTIConfig.tiny(w_avg_samples=256),
                        generator=GeneratorChoice(config=TINY_G), warp_rig=WarpRigConfig(min_size=256))


@pytest.fixture
def portrait(tmp_path):
    path = tmp_path / "portrait.png"
    Image.fromarray(sample_portrait(256)).save(path)
    return path


@pytest.fixture
def registered_generator(tmp_path):
    """A tiny generator checkpoint registered as the generator asset for one test."""
    before = assets.registry_path().read_text() if assets.registry_path().exists() else None
    assets.register("generator", save_generator(small_generator(0, TINY_G, w_avg_samples=256), tmp_path / "g.pt"))
    yield
    if before is None:
        assets.registry_path().unlink()
    else:
        assets.registry_path().write_text(before)


def test_warp_path_second_video_skips_the_fit_and_a_new_image_recomputes(portrait, tmp_path, journal):
    assert assets.locate("generator") is None
    first = generate_from_portrait("ada", portrait, text="Hello there.", config=CONFIG)
    assert first.renderer == "warp" and first.pti is None
    fits, rigs = journal.count("portrait_fit"), journal.count("warp_rig")
    info = media.probe(get_store().fetch(first.video["video"]))
    assert info.has_audio and info.has_video and (info.width, info.height) == (256, 256)  # the portrait's size

    renamed = tmp_path / "same-image-new-name.png"
    renamed.write_bytes(portrait.read_bytes())
    renders = journal.count("warp_render")
    second = generate_from_portrait("ada", renamed, text="Something else entirely.", config=CONFIG)
    assert (journal.count("portrait_fit"), journal.count("warp_rig")) == (fits, rigs)  # fit and rig skipped
    assert journal.count("warp_render") == renders + 1
    assert second.rig == first.rig and second.video != first.video

    # a new image under the old character name is a new fit (no stale cache)
    changed = np.asarray(Image.open(portrait)).copy()
    changed[:20] = 255 - changed[:20]
    Image.fromarray(changed).save(portrait)
    third = generate_from_portrait("ada", portrait, text="Hello there.", config=CONFIG)
    assert (journal.count("portrait_fit"), journal.count("warp_rig")) == (fits + 1, rigs + 1)
    assert third.fit.meta["image_sha256"] != first.fit.meta["image_sha256"]

    # the character's entries are listed under its name and freed together
    assert {e.stage for e in list_entries(get_store(), "ada")} >= {"portrait_fit", "warp_rig", "warp_render", "mux"}
    removed, freed = free_namespace(get_store(), "ada")
    assert removed >= 6 and freed > 0 and list_entries(get_store(), "ada") == []
    assert not get_store().verify(first.rig["rig"])


def test_generator_path_when_registered_and_its_pti_is_cached(portrait, journal, registered_generator):
    first = generate_from_portrait("gen", portrait, text="Hello there.", config=CONFIG)
    assert first.renderer == "generator" and first.rig is None
    info = media.probe(get_store().fetch(first.video["video"]))
    assert (info.width, info.height) == (32, 32)
    ptis = journal.count("pti")
    second = generate_from_portrait("gen", portrait, text="Another sentence.", config=CONFIG)
    assert journal.count("pti") == ptis and second.pti == first.pti
    # the warp can still be asked for explicitly
    warp = generate_from_portrait("gen", portrait, text="Hello there.",
                                  config=CONFIG.model_copy(update={"renderer": "warp"}))
    assert warp.renderer == "warp" and journal.count("pti") == ptis


def test_generator_renderer_without_a_generator_fails_before_any_work(portrait, journal):
    fits = journal.count("portrait_fit")
    with pytest.raises(AssetMissing, match="talkflow assets add generator"):
        generate_from_portrait("nogen", portrait, text="Hi.",
                               config=CONFIG.model_copy(update={"renderer": "generator"}))
    assert journal.count("portrait_fit") == fits


@flow
def two_requests_at_once(image, config: PortraitConfig):
    fit = fit_character_face(image, config.fit, namespace="twin")
    futures = [invert_portrait.submit(fit, config.pti, fallback=config.generator, namespace="twin")
               for _ in range(2)]
    return [f.result() for f in futures]


def test_concurrent_first_calls_compute_pti_once(portrait, journal):
    n = journal.count("pti")
    a, b = two_requests_at_once(portrait, CONFIG)
    assert a == b and journal.count("pti") == n + 1


def test_bad_input(tmp_path, portrait):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(grey)
    with pytest.raises(FaceNotFound):
        generate_from_portrait("grey", grey, text="Hi.", config=CONFIG)
    tiny = tmp_path / "tiny.png"
    Image.fromarray(sample_portrait(64)).save(tiny)
    with pytest.raises(InputError, match="at least"):
        generate_from_portrait("tiny", tiny, text="Hi.", config=CONFIG)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(portrait.read_bytes()[:200])
    with pytest.raises(InputError):
        generate_from_portrait("corrupt", corrupt, text="Hi.", config=CONFIG)
    with pytest.raises(InputError, match="invalid character"):
        generate_from_portrait("../../etc", portrait, text="Hi.", config=CONFIG)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(EmptyMedia):
        generate_from_portrait("quiet", portrait, audio=empty, config=CONFIG)
    with pytest.raises(InputError, match="exactly one"):
        generate_from_portrait("both", portrait, config=CONFIG)


def test_a_new_renderer_is_one_module_and_one_registry_entry(portrait, monkeypatch, journal):
    """tests/toy_renderer.py plus the entry below: the flow, its config and its result take it."""
    from flows import renderers

    monkeypatch.setitem(renderers.RENDERERS, "toy", renderers.Renderer(
        "toy", "a dark bar for a mouth (tests)", "tests.toy_renderer:ToyRenderer"))
    assert "toy: a dark bar" in renderers.describe()
    config = CONFIG.model_copy(update={"renderer": "toy"})
    first = generate_from_portrait("toy-ada", portrait, text="Hello there.", config=config)
    assert first.renderer == "toy" and first.prepared.stage == "toy_prepare" and first.pti is first.rig is None
    frames = get_store().fetch(first.video["video"])
    assert media.probe(frames).has_audio
    prepared = journal.count("toy_prepare")
    again = generate_from_portrait("toy-ada", portrait, text="Something else.", config=config)
    assert journal.count("toy_prepare") == prepared and again.prepared == first.prepared  # cached per character
    from tasks.registry import known_characters

    assert "toy-ada" in known_characters()
    with pytest.raises(InputError, match="--renderer must be one of auto, generator, warp, toy, not 'nope'"):
        PortraitConfig(renderer="nope")
