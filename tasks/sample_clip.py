"""The sample talking clip for the demo and the tests: a real photo animated by speech."""

from __future__ import annotations

from pydantic import BaseModel, Field

from models.audio.visemes import VisemeConfig
from talkflow import media
from talkflow.cache import stage
from talkflow.contract import VIDEO_FPS
from talkflow.store import StageResult, get_store
from tasks.inputs import local_file, scratch

LANDMARK_SIZE = 512


class SampleClipConfig(BaseModel):
    seed: int = Field(0, description="Head-motion seed; the same seed gives the same clip.")
    size: int = Field(512, ge=64, le=1024, description="Frame side in pixels.")
    fps: int = Field(VIDEO_FPS, ge=1, le=60, description="Frame rate of the clip, frames per second.")
    head_motion_px: float = Field(3.0, ge=0, description="Head translation amplitude, pixels.")
    head_rotation_deg: float = Field(2.0, ge=0, description="Head rotation amplitude, degrees.")
    max_mouth_open: float = Field(1.0, ge=0, le=1.5, description="Jaw drop at a fully open viseme (/aa/), in "
                                  "outer-lip heights of the portrait.")
    lip_spread: float = Field(0.12, ge=0, lt=1, description="Lip widening at a fully spread viseme (/iy/), as a "
                              "share of the mouth width.")
    lip_rounding: float = Field(0.25, ge=0, lt=1, description="Lip narrowing at a fully rounded viseme (/uw/), "
                                "as a share of the mouth width.")
    visemes: VisemeConfig = Field(default_factory=VisemeConfig, description="How the speech's phones become "
                                  "mouth shapes (coarticulation, loudness as intensity).")


@stage("sample_clip", "2")
def animate_sample_clip(speech: StageResult, config: SampleClipConfig) -> StageResult:
    """skimage's astronaut portrait whose mouth makes the shapes of the speech's phones (aligned to
    the spoken text), muxed with it. The phone timeline is kept beside the clip (``phones``)."""
    from models.audio.alignment import speech_phones
    from models.audio.visemes import viseme_tracks
    from models.face.landmarks import largest_face_landmarks
    from models.synth.talking_photo import animate_portrait, sample_portrait, speech_envelope

    samples, rate = media.read_wav(local_file(speech["audio"]))
    portrait = sample_portrait(config.size)
    # dlib's detector needs a face of about 80 px: find landmarks at 512 px and scale them
    landmarks = largest_face_landmarks(sample_portrait(LANDMARK_SIZE)) * (config.size / LANDMARK_SIZE)
    envelope = speech_envelope(samples, rate, fps=config.fps)
    timeline = speech_phones(samples, rate, speech.meta.get("text"))
    mouth = viseme_tracks(timeline, len(envelope), config.fps, loudness=envelope, config=config.visemes)
    frames = animate_portrait(
        portrait, landmarks, mouth["opening"], mouth["width"], mouth["closure"], seed=config.seed,
        head_motion_px=config.head_motion_px, head_rotation_deg=config.head_rotation_deg,
        max_mouth_open=config.max_mouth_open, spread=config.lip_spread, rounding=config.lip_rounding,
    )
    with scratch("sample") as work:
        (work / "phones.json").write_text(timeline.to_json())
        phones = get_store().put_file(work / "phones.json")
        media.write_frames(frames, work / "frames", ext="png")
        media.mux(work / "frames", local_file(speech["audio"]), work / "clip.mp4",
                  fps=config.fps, ext="png")
        info = media.probe(work / "clip.mp4")
        art = get_store().put_file(work / "clip.mp4")
    return StageResult(
        artifacts={"video": art, "phones": phones},
        meta={"duration_s": info.duration_s, "n_frames": len(frames), "fps": config.fps,
              "phones_source": timeline.source},
    )
