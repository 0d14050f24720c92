"""The backend's calls end to end, in this process: preprocess -> train -> features -> infer,
and a portrait (a tiny CPU run: a small model, tens of steps)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from flows.portrait import PortraitConfig
from flows.preprocess import PreprocessConfig
from flows.render import RenderConfig, RenderVideoConfig
from flows.sample_clip import SampleClipConfig, make_sample_clip
from models.nerffacespeech.face_fit import FaceFitConfig
from models.nerffacespeech.generator import GeneratorConfig
from models.nerffacespeech.pti import PTIConfig
from models.synth.talking_photo import sample_portrait
from talkflow import media
from talkflow.api import AVATAR_MANIFEST, DATASET_MANIFEST, Talkflow
from talkflow.store import get_store
from tasks.media import NormalizeConfig
from tasks.portrait import GeneratorChoice
from tasks.speech import synthesize_speech
from tasks.tracking import TrackingConfig
from tasks.train_config import TrainAvatarConfig, TrainStageConfig

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

TINY = dict(rays_per_batch=512, lr_net=5e-3, checkpoint_every=100, val_frames=1, val_downscale=4)
QUICK = RenderVideoConfig(render=RenderConfig(downscale=4))  # 64x64 rays, upscaled to 256
TRAIN = TrainAvatarConfig(model="small", head=TrainStageConfig(steps=20, **TINY),
                          lips=TrainStageConfig(steps=4, **TINY), torso=TrainStageConfig(steps=8, **TINY))


@pytest.fixture(scope="module")
def tf():
    return Talkflow()


@pytest.fixture(scope="module")
def dataset(tf, tmp_path_factory):
    clip = make_sample_clip("One two three four five six.", SampleClipConfig(size=256, seed=7))
    video = tmp_path_factory.mktemp("in") / "bob.mp4"
    shutil.copyfile(get_store().fetch(clip["video"]), video)
    config = PreprocessConfig(normalize=NormalizeConfig(size=256), tracking=TrackingConfig(photometric=False))
    return tf.preprocess(video, "bob", data_path=tmp_path_factory.mktemp("data") / "bob", config=config)


@pytest.fixture(scope="module")
def model(tf, dataset, tmp_path_factory):
    return tf.train(dataset.data_path, tmp_path_factory.mktemp("models") / "bob", None, "auto", config=TRAIN)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    wav = tmp_path_factory.mktemp("speech") / "hello.wav"
    shutil.copyfile(get_store().fetch(synthesize_speech("Nice to meet you.")["audio"]), wav)
    return wav


def test_preprocess_writes_the_dataset_folder(dataset):
    folder = dataset.data_path
    assert dataset.task_id == "bob" and dataset.manifest.namespace == "bob"
    for name in ("transforms_train.json", "transforms_val.json", "aud.wav", "bc.jpg", "au.csv", DATASET_MANIFEST):
        assert (folder / name).is_file(), name
    n = dataset.manifest.meta["n_frames"]
    assert len(list((folder / "ori_imgs").glob("*.jpg"))) == n == len(list((folder / "gt_imgs").iterdir()))
    train = json.loads((folder / "transforms_train.json").read_text())
    assert len(train["frames"]) == dataset.manifest.meta["n_train"]


def test_train_writes_the_model_folder_and_hits_the_cache(tf, dataset, model, journal, tmp_path):
    assert model.person == "bob"
    assert [model.avatar.head.meta["steps"], model.avatar.lips.meta["steps"], model.avatar.torso.meta["steps"]] == [
        20, 4, 8]
    for name in ("head", "lips", "torso"):
        state = torch.load(model.model_path / f"{name}.pth", map_location="cpu", weights_only=True)
        assert state  # a real checkpoint
    assert json.loads((model.model_path / AVATAR_MANIFEST).read_text())["person"] == "bob"
    heads = journal.count("train_head")
    head_only = tf.train(dataset.data_path, tmp_path / "head", stage="head", config=TRAIN)
    assert journal.count("train_head") == heads  # the same head: a cache hit
    assert head_only.avatar.lips is None and not (tmp_path / "head" / "lips.pth").exists()
    assert head_only.avatar.head == model.avatar.head


def test_extract_audio_features_is_what_the_avatar_reads(tf, speech, tmp_path):
    npy = tf.extract_audio_features(speech, "logmel", out_path=tmp_path / "hello_logmel.npy")
    feats = np.load(npy)
    frames = round(media.probe(speech).duration_s * 25)
    assert feats.dtype == np.float32 and feats.shape[1:] == (16, 80) and abs(feats.shape[0] - frames) <= 1
    assert np.isfinite(feats).all() and feats.std() > 0
    default = tf.extract_audio_features(speech)
    assert default == speech.with_name("hello_logmel.npy") and np.array_equal(np.load(default), feats)


def test_infer_with_and_without_torso(tf, model, speech, tmp_path, monkeypatch):
    from talkflow.store import ArtifactStore

    fetched = []
    fetch = ArtifactStore.fetch
    monkeypatch.setattr(ArtifactStore, "fetch", lambda self, art: fetched.append(art.key) or fetch(self, art))
    torso = tf.infer(model.model_path, speech, output_path=tmp_path / "torso.mp4", with_torso=True, config=QUICK)
    plain = tf.infer(model.model_path, speech, output_path=tmp_path / "plain.mp4", with_torso=False, config=QUICK)
    # rendering fetched the poses, blinks, plate and (without the torso) the torso images, nothing else
    parts = model.avatar.dataset.artifacts
    assert {parts[p].key for p in ("transforms_train", "au", "bc", "torso_imgs")} <= set(fetched)
    assert not {parts[p].key for p in ("frames", "gt_imgs", "parsing", "lms", "transforms_val")} & set(fetched)
    assert torso.result.avatar_stage == "train_torso" and plain.result.avatar_stage == "train_lips"
    for video in (torso, plain):
        info = media.probe(video.video_path)
        assert info.has_video and info.has_audio and (info.width, info.height) == (256, 256)
        assert abs(info.duration_s - media.probe(speech).duration_s) <= 0.1
    by_name = tf.infer("bob", text="Nice to meet you.", output_path=tmp_path / "text.mp4", with_torso=False,
                       config=QUICK)
    assert media.probe(by_name.video_path).has_audio


def test_portrait(tf, tmp_path, speech):
    image = tmp_path / "ada.png"
    Image.fromarray(sample_portrait(256)).save(image)
    tiny = GeneratorConfig.small(triplane_resolution=16, neural_rendering_resolution=16, sr_input_resolution=16,
                                 img_resolution=32, depth_resolution=12, depth_resolution_importance=6)
    config = PortraitConfig(fit=FaceFitConfig(photometric=False), pti=PTIConfig.tiny(w_avg_samples=256),
                            generator=GeneratorChoice(config=tiny))
    video = tf.portrait(image, speech, character="ada", output_path=tmp_path / "ada.mp4", config=config)
    info = media.probe(video.video_path)
    assert info.has_video and info.has_audio and video.duration_s > 0


def test_retrain_after_new_footage_recomputes_only_what_changed(dataset, model, journal, tmp_path):
    """New footage at the recorded path (the same picture, a new voice): the scheduled retrain
    preprocesses it again and retrains; the stages that see only the picture are cache hits."""
    from flows.retrain import retrain
    from tasks.registry import read_avatar

    assert retrain(TRAIN)["bob"] == "up to date"
    video = next(dataset.data_path.parents[1].glob("in*/bob.mp4"))  # where the dataset fixture put it
    quieter = tmp_path / "bob.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(video), "-c:v", "copy",
                    "-af", "volume=0.5", "-c:a", "aac", str(quieter)], check=True)
    shutil.copyfile(quieter, video)  # the footage changes on disk

    picture = ("frames", "landmarks", "parsing", "background", "composite", "blinks", "tracking")
    sound = ("normalize", "audio_features", "dataset", "train_head", "train_lips", "train_torso")
    before = {s: journal.count(s) for s in picture + sound}
    assert retrain(TRAIN)["bob"] == "retrained: source footage changed"
    delta = {s: journal.count(s) - before[s] for s in before}
    assert delta == {**dict.fromkeys(picture, 0), **dict.fromkeys(sound, 1)}, delta
    avatar = read_avatar("bob")
    assert avatar.dataset != model.avatar.dataset and avatar.torso != model.avatar.torso
    assert retrain(TRAIN)["bob"] == "up to date"
