"""ER-NeRF training and rendering flows end to end on the sample clip (a tiny CPU run).

One dataset per module: the sample portrait (256 px: dlib's detector needs faces of ~80 px,
at 128 px the face is ~50 px and landmarks fail) through the real preprocessing flow. One
avatar per module: a small model, 200 head + 20 lips + 60 torso steps (about 45 s on 2 cores).
Stated figures for this run: the head's loss falls by more than half and its held-out PSNR
(4 unseen frames at 128 px) is above 18 dB: 28.2 dB seen with the fixed seed, 19-28 dB over other
initialisations; an untrained model gets about 13.4 dB.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pydantic
import pytest
from prefect.artifacts import Artifact

from flows.preprocess import PreprocessConfig, preprocess_video
from flows.render import RenderVideoConfig, render, render_batch
from flows.sample_clip import SampleClipConfig, make_sample_clip
from flows.train import train_avatar
from models.audio.features import AudioFeatureConfig, FeatureInfo, save_features
from talkflow import media
from talkflow.errors import InputError
from talkflow.store import StageResult, get_store
from tasks import presets
from tasks.media import NormalizeConfig
from tasks.registry import STAGE_NAMES, read_avatar
from tasks.render import RenderConfig, render_frames_stage
from tasks.resume import resume_key
from tasks.speech import synthesize_speech
from tasks.tracking import TrackingConfig
from tasks.train import VERSION, train_head
from tasks.train_config import TrainAvatarConfig, TrainStageConfig

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

PERSON = "astro"
# the cpu-demo preset's rates (MLPs at 5x the reference's, the audio attention at the reference's own)
QUICK = {k: v for k, v in presets.get("train", "cpu-demo").values["head"].items() if k != "steps"}
CONFIG = TrainAvatarConfig(
    model="small",
    head=TrainStageConfig(steps=200, **QUICK),
    lips=TrainStageConfig(steps=20, rays_per_batch=512, checkpoint_every=100, val_downscale=2),
    torso=TrainStageConfig(steps=60, **{**QUICK, "rays_per_batch": 512}),
)
RENDER = RenderVideoConfig(render=RenderConfig(downscale=2))
NEW_SENTENCE = "Nice to meet you."


@pytest.fixture(scope="module")
def dataset() -> StageResult:
    clip = make_sample_clip("One two three four five six.", SampleClipConfig(size=256, seed=7))
    config = PreprocessConfig(normalize=NormalizeConfig(size=256), tracking=TrackingConfig(photometric=False))
    return preprocess_video(get_store().fetch(clip["video"]), PERSON, config)


@pytest.fixture(scope="module")
def avatar(dataset):
    return train_avatar(PERSON, CONFIG)


def test_short_training_lowers_loss_and_generalises(avatar, dataset):
    head, lips, torso = avatar.head.meta, avatar.lips.meta, avatar.torso.meta
    assert [head["steps"], lips["steps"], torso["steps"]] == [200, 20, 60]
    assert head["resumed_from_step"] == 0 and head["steps_computed"] == 200
    assert head["final_loss"] < 0.5 * head["first_loss"], head["curve"]
    assert torso["final_loss"] < torso["first_loss"]
    assert head["val"]["psnr"] > 18.0, head["val"]  # held-out frames (unseen audio and poses), 128 px
    assert head["val"]["ssim"] > 0.5 and lips["val"]["psnr"] > 18.0 and torso["val"]["psnr"] > 15.0
    assert head["val_frames"] == dataset.meta["n_val"] == 4 and lips["patch_loss"] == "structural"
    assert head["attention"]["max"] < 0.5, head["attention"]  # spread over the neighbours, not collapsed
    recorded = head["features"]  # the features' kind and the config they were computed with
    assert {k: recorded[k] for k in ("kind", "dim", "fps", "window")} == {"kind": "logmel", "dim": 80, "fps": 25,
                                                                          "window": 16}
    n_train = dataset.meta["n_train"]
    assert recorded["config"]["logmel"]["stats_fraction"] == pytest.approx(n_train / dataset.meta["n_frames"])
    # the checkpoints are stored, the registry names them, and no resume pointer is left behind
    store = get_store()
    assert all(store.verify(r["checkpoint"]) for r in (avatar.head, avatar.lips, avatar.torso))
    assert read_avatar(PERSON).torso == avatar.torso
    assert store.list_keys(f"resume/{PERSON}") == []
    # the loss curve and the validation table are Prefect artifacts
    curve = json.loads(Artifact.get(f"{PERSON}-train-head-loss").data)
    assert curve[-1]["step"] == 200 and curve[-1]["loss"] == pytest.approx(head["final_loss"], abs=1e-6)
    assert "| psnr |" in Artifact.get(f"{PERSON}-train-torso-validation").data


def test_cached_stages_skip_and_a_lips_change_retrains_lips_and_torso(avatar, dataset, journal):
    counts = {s: journal.count(s) for s in STAGE_NAMES.values()}
    t0 = time.perf_counter()
    again = train_avatar(PERSON, CONFIG)
    assert {s: journal.count(s) for s in STAGE_NAMES.values()} == counts  # all three were cache hits
    assert time.perf_counter() - t0 < 20
    assert again.torso.artifacts == avatar.torso.artifacts

    changed = CONFIG.model_copy(update={"lips": CONFIG.lips.model_copy(update={"seed": 1})})
    retrained = train_avatar(PERSON, changed)
    delta = {s: journal.count(s) - counts[s] for s in STAGE_NAMES.values()}
    assert delta == {"train_head": 0, "train_lips": 1, "train_torso": 1}
    assert retrained.head.artifacts == avatar.head.artifacts
    assert retrained.lips["checkpoint"].sha256 != avatar.lips["checkpoint"].sha256
    assert read_avatar(PERSON).torso == retrained.torso  # the registry follows the latest training


def test_killed_stage_resumes_from_its_checkpoint(dataset, run_python, tmp_path, journal):
    """The head stage in a subprocess, killed after its first checkpoint; the rerun goes on from it."""
    config = TrainStageConfig(steps=30, rays_per_batch=256, lr_net=5e-3, checkpoint_every=5, val_frames=1,
                              val_downscale=4)
    inputs = {"dataset": dataset, "config": config, "model": "small", "namespace": "resumed"}
    store = get_store()
    pointer = store.local_path(resume_key(STAGE_NAMES["head"], VERSION, inputs))
    counter = tmp_path / "steps.txt"
    proc = run_python(f"""
        import time, torch
        torch.set_num_threads(1)
        from talkflow.runtime import configure_prefect_env
        configure_prefect_env()
        from models.ernerf import trainer
        step = trainer.Trainer.step

        def counted(self):  # one line per computed step, slowed so the kill lands mid-way
            out = step(self)
            with open({str(counter)!r}, "a") as f:
                f.write(f"{{self.step_count}}\\n")
            time.sleep(0.2)
            return out

        trainer.Trainer.step = counted
        from talkflow.store import StageResult
        from tasks.train import train_head
        from tasks.train_config import TrainStageConfig
        train_head(StageResult.model_validate_json({dataset.model_dump_json()!r}),
                   TrainStageConfig.model_validate_json({config.model_dump_json()!r}), "small",
                   namespace="resumed")
    """, background=True)
    try:
        deadline = time.monotonic() + 180
        while not pointer.exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint pointer appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = json.loads(pointer.read_text())["step"]
    killed_steps = len(counter.read_text().split())
    # the checkpoint is written inside its step, so the kill may land before that step's counter line
    assert 5 <= saved < 30 and saved % 5 == 0 and killed_steps >= saved - 1

    n = journal.count("train_head")
    result = train_head(dataset, config, "small", namespace="resumed")
    meta = result.meta
    assert meta["resumed_from_step"] == saved
    assert meta["steps_computed"] == 30 - saved  # saved steps + computed now = the whole schedule
    assert meta["resumed_from_step"] + meta["steps_computed"] == meta["steps"] == 30
    assert journal.count("train_head") == n + 1 and not pointer.exists()
    assert [s for s, _ in meta["curve"]][0] < saved  # the loss curve of the killed run is kept

    # the resumed run ends where an uninterrupted one does
    straight = train_head(dataset, config, "small", namespace="straight")
    assert straight.meta["resumed_from_step"] == 0 and straight.meta["steps_computed"] == 30
    assert straight.meta["final_loss"] == pytest.approx(meta["final_loss"], rel=1e-3)
    assert straight.meta["val"]["psnr"] == pytest.approx(meta["val"]["psnr"], abs=0.05)


def test_bad_inputs_fail_before_work(avatar, dataset, journal, tmp_path):
    with pytest.raises(InputError, match=r"no avatar named 'nobody'.*astro"):
        render("nobody", text="Hello.")
    with pytest.raises(InputError, match="exactly one of audio or text"):  # a blank form field is not a text
        render(PERSON, text="   ")
    with pytest.raises(InputError, match="exactly one of audio or text"):
        render(PERSON)
    with pytest.raises(InputError, match=r"hubert features have D=1024.*logmel features with D=80"):
        render(PERSON, text="Hello.", config=RenderVideoConfig(audio=AudioFeatureConfig(kind="hubert")))
    with pytest.raises(pydantic.ValidationError, match="nope"):  # refused with the trainer's names as the form does
        TrainStageConfig(overrides={"nope": 1})

    # features of another dimension reach the render stage: refused before any frame is rendered
    npy, info = save_features(tmp_path, np.zeros((10, 16, 29), np.float32), FeatureInfo(kind="deepspeech", dim=29))
    store = get_store()
    features = StageResult(stage="audio_features", artifacts={"feats": store.put_file(npy),
                                                              "info": store.put_file(info)},
                           meta={"kind": "deepspeech", "dim": 29, "fps": 25, "window": 16})
    n = journal.count("render_frames")
    with pytest.raises(InputError, match=r"deepspeech with D=29.*logmel features with D=80"):
        render_frames_stage(avatar.torso, dataset, features, RenderConfig(), namespace=PERSON)
    assert journal.count("render_frames") == n


def test_render_a_new_sentence(avatar, tmp_path, journal):
    from talkflow.contract import frame_count

    result = render(PERSON, text=NEW_SENTENCE, config=RENDER)
    mp4 = get_store().fetch(result.video["video"])
    info = media.probe(mp4)
    speech = result.audio.meta["duration_s"]
    assert info.has_video and info.has_audio and (info.width, info.height) == (256, 256)
    rate = result.audio.meta["sample_rate"]
    frames = frame_count(round(speech * rate), rate)  # the contract's rule: every sample shown
    assert result.frames.meta["n_frames"] == frames == result.video.meta["n_frames"]
    assert abs(info.duration_s - speech) <= 1 / 25, (info.duration_s, speech)
    assert result.avatar_stage == "train_torso" and result.frames.meta["frames_per_s"] > 0
    frame = media.FrameFolder(get_store().fetch(result.frames["frames"]))[0]
    assert frame.shape == (256, 256, 3) and frame.std() > 10  # a picture, not a flat colour

    # batch mode on the same speech as a file: prepared again, rendered from the cache
    wav = tmp_path / "speech.wav"
    shutil.copyfile(get_store().fetch(synthesize_speech(NEW_SENTENCE)["audio"]), wav)
    n = journal.count("render_frames")
    [again] = render_batch(PERSON, [wav], RENDER)
    assert journal.count("render_frames") == n and again.frames.artifacts == result.frames.artifacts


def test_retrain_touches_only_changed_avatars(avatar, dataset, journal, tmp_path):
    from flows.retrain import retrain
    from tasks.registry import register_source, registered_source

    trained = [journal.count(s) for s in ("train_head", "train_lips", "train_torso")]
    assert retrain(CONFIG)[PERSON] == "up to date"
    assert [journal.count(s) for s in ("train_head", "train_lips", "train_torso")] == trained

    # new footage at the recorded path: the next scheduled run would re-preprocess and retrain
    source = registered_source(PERSON)
    footage = tmp_path / "footage.mp4"
    footage.write_bytes(Path(source.video).read_bytes())
    register_source(PERSON, footage, PreprocessConfig.model_validate(source.config))
    assert retrain(CONFIG, dry_run=True)[PERSON] == "up to date"
    footage.write_bytes(footage.read_bytes() + b"\0")  # the footage changes on disk
    assert retrain(CONFIG, dry_run=True)[PERSON] == "would retrain: source footage changed"
    register_source(PERSON, Path(source.video), PreprocessConfig.model_validate(source.config))
