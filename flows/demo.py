"""The demo, end to end on the CPU in minutes: a sample clip made from text -> the media stage ->
ER-NeRF preprocessing -> a small training run -> a NEW sentence rendered by the avatar."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from flows.media import MediaConfig, MediaResult, media_stage
from flows.preprocess import PreprocessConfig, preprocess_video
from flows.render import RenderResult, RenderVideoConfig, render
from flows.sample_clip import SampleClipConfig, make_sample_clip
from flows.train import train_avatar
from talkflow.store import StageResult, get_store
from tasks import presets
from tasks.evaluation import score_lip_sync
from tasks.outputs import publish_output
from tasks.registry import AvatarRecord

PERSON = "demo"
# 256 px: dlib needs faces of ~80 px (the portrait's face is ~40 % of the frame); the preprocess preset's
DEMO_SIZE = presets.get("preprocess", "cpu-demo").values["normalize"]["size"]


class DemoResult(BaseModel):
    sample: StageResult
    media: MediaResult
    dataset: StageResult
    avatar: AvatarRecord
    rendered: RenderResult
    lip_sync: StageResult  # the new sentence's phonetic lip-sync figures (meta)


# Both sentences carry lip closures (/p b m/), rounded and spread vowels: what the lip-sync figure scores.
DEMO_TEXT = ("Hello! I made this clip from one photo and a simple voice. Watch my lips: they open wide, "
             "they press shut on every p, b and m, and they round for you.")
DEMO_NEW_TEXT = "Maybe my brother will bring both puppies home by May."


@flow(name="demo")
def demo(text: str = DEMO_TEXT, new_text: str = DEMO_NEW_TEXT, config: MediaConfig = MediaConfig()) -> DemoResult:
    """Every step cached: a rerun with the same texts is all cache hits.

    Args:
        text: what the sample portrait says in the training clip.
        new_text: a sentence the trained avatar says, never heard in training.
        config: the media stage's settings.
    """
    sample = make_sample_clip(text, SampleClipConfig(size=DEMO_SIZE))
    clip = get_store().fetch(sample["video"])
    media = media_stage(clip, config, namespace=PERSON)
    dataset = preprocess_video(clip, PERSON, presets.build("preprocess", "cpu-demo", cls=PreprocessConfig))
    avatar = train_avatar(PERSON, presets.build("train", "cpu-demo"))  # finds the dataset by name
    rendered = render(PERSON, text=new_text, config=presets.build("render", "preview", cls=RenderVideoConfig))
    lip_sync = score_lip_sync(rendered.video["video"], new_text, namespace=PERSON)
    publish_output("demo", rendered.video["video"], namespace=PERSON, figures=lip_sync.meta, stages={
        "sample clip": sample, "media": media.video, "dataset": dataset, "train head": avatar.head,
        "train lips": avatar.lips, "train torso": avatar.torso, "render": rendered.video, "lip sync": lip_sync})
    return DemoResult(sample=sample, media=media, dataset=dataset, avatar=avatar, rendered=rendered,
                      lip_sync=lip_sync)
