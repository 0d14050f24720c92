"""The Python API: the pipeline's steps as calls, run here or on the work pools.

    from talkflow.api import Talkflow

    tf = Talkflow()                      # runs the flow in this process (embedded Prefect,
                                         # or reporting to PREFECT_API_URL when it is set)
    tf = Talkflow(mode="deployment")     # runs it on a worker through its deployment
    result = tf.media("talk.mp4")        # -> flows.media.MediaResult (typed, cached)

Each call is one flow and one deployment (the names in prefect.yaml), listed in CALLS. The calls
of the ER-NeRF / NeRFFaceSpeech tools (preprocess, train, extract_audio_features, infer, portrait)
are declared here already and raise NotImplementedError until their flows land.

In deployment mode, paths are sent as absolute paths: they must be readable by the workers
(a shared mount such as the data root). Results come back from the result store (S3 in
production), so the caller needs the same store credentials as the workers.

Like the CLI, this module is a face of the core: it imports flows, and only when a call runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel

from talkflow.errors import InputError, TalkflowError

if TYPE_CHECKING:
    from flows.demo import DemoResult
    from flows.media import MediaConfig, MediaResult
    from talkflow.store import StageResult
    from tasks.sample_clip import SampleClipConfig
    from tasks.speech import SpeechConfig

Mode = Literal["local", "deployment"]
TrainStage = Literal["auto", "head", "lips", "torso"]


class RunFailed(TalkflowError):
    """A flow run started through its deployment did not complete."""


@dataclass(frozen=True)
class Call:
    flow: str  # "package.module:function"
    deployment: str  # "<flow name>/<deployment name>", as `prefect deploy` registers it
    result: str  # "package.module:Model" the flow returns
    planned: str = ""  # while the flow does not exist: what it will do


CALLS: dict[str, Call] = {
    "media": Call("flows.media:media_stage", "media-stage/media", "flows.media:MediaResult"),
    "sample_clip": Call("flows.sample_clip:make_sample_clip", "sample-clip/sample-clip",
                        "talkflow.store:StageResult"),
    "demo": Call("flows.demo:demo", "demo/demo", "flows.demo:DemoResult"),
    "preprocess": Call("flows.preprocess:preprocess_video", "preprocess-video/preprocess",
                       "talkflow.store:StageResult"),
    # Declared, not yet written: each raises NotImplementedError until its flow lands.
    "train": Call("flows.train:train_avatar", "train-avatar/train", "tasks.train:AvatarRecord"),
    "extract_audio_features": Call(
        "flows.render_video:extract_audio_features", "extract-audio-features/audio-features",
        "talkflow.store:StageResult", planned="audio features (HuBERT/wav2vec2, or log-mel)"),
    "infer": Call("flows.render:render_video", "render-video/infer", "flows.render:RenderResult"),
    "portrait": Call("flows.portrait:generate_from_portrait", "generate-from-portrait/portrait",
                     "flows.portrait:PortraitResult"),
}


def _load(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _jsonable(value: Any) -> Any:
    """Parameters as the Prefect API carries them (the worker validates them back into types)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value.expanduser().resolve())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _typed(model: type[BaseModel], out: Any) -> Any:
    if isinstance(out, model):
        return out
    if isinstance(out, BaseModel):  # the same model from another import of its module
        out = out.model_dump()
    return model.model_validate(out)


class Talkflow:
    """Runs talkflow's flows and returns their typed results.

    mode: "local" runs the flow in this process; "deployment" creates a run of its deployment
    and waits for a worker to finish it (timeout_s: None waits as long as it takes).
    deployments: override deployment names, e.g. {"media": "media-stage/staging"}.
    """

    def __init__(
        self,
        mode: Mode = "local",
        *,
        timeout_s: float | None = None,
        poll_s: float = 2.0,
        deployments: Mapping[str, str] | None = None,
    ):
        if mode not in get_args(Mode):
            raise InputError(f"mode must be one of {get_args(Mode)}, not {mode!r}")
        unknown = set(deployments or {}) - set(CALLS)
        if unknown:
            raise InputError(f"no such calls: {sorted(unknown)}; calls are {sorted(CALLS)}")
        self.mode = mode
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.deployments = {name: c.deployment for name, c in CALLS.items()} | dict(deployments or {})

    # -- the calls whose flows exist -----------------------------------------------------------
    def media(
        self, video: Path | str, config: MediaConfig | None = None, namespace: str | None = None
    ) -> MediaResult:
        """Normalize a talking video, extract its frames, mux them back (flows.media)."""
        return self.run("media", video=Path(video), config=config, namespace=namespace)

    def sample_clip(
        self, text: str, config: SampleClipConfig | None = None, speech: SpeechConfig | None = None
    ) -> StageResult:
        """A short clip of a real face photo saying `text` (flows.sample_clip)."""
        return self.run("sample_clip", text=text, config=config, speech=speech)

    def demo(self, text: str, config: MediaConfig | None = None) -> DemoResult:
        """Text -> sample clip -> media stage (flows.demo)."""
        return self.run("demo", text=text, config=config)

    def preprocess(self, video: Path | str, name: str, config: BaseModel | None = None) -> StageResult:
        """ER-NeRF preprocessing of `video` for the person `name` -> the dataset manifest."""
        self._validate_name(name)
        return self.run("preprocess", video=Path(video), person=name, config=config)

    # -- declared; their flows are not written yet -------------------------------------------

    def train(self, name: str, stage: TrainStage = "auto", config: BaseModel | None = None):
        """Train `name`'s avatar: stage "auto" runs head -> lips -> torso, resuming where it stopped."""
        if stage not in get_args(TrainStage):
            raise InputError(f"stage must be one of {get_args(TrainStage)}, not {stage!r}")
        self._validate_name(name)
        return self.run("train", person=name, config=config, stage=stage)

    def extract_audio_features(self, audio: Path | str, extractor: str = "auto"):
        """Audio features for rendering (HuBERT / wav2vec2 when registered, else log-mel)."""
        return self._planned("extract_audio_features")

    def infer(self, name: str, audio: Path | str | None = None, *, text: str | None = None,
              with_torso: bool = True):
        """Render `name`'s avatar speaking `audio` (or `text` through TTS)."""
        from flows.render import RenderVideoConfig
        from tasks.render import RenderConfig

        if (audio is None) == (text is None):
            raise InputError("give exactly one of audio or text")
        self._validate_name(name)
        return self.run("infer", person=name, audio=Path(audio) if audio is not None else None, text=text,
                        config=RenderVideoConfig(render=RenderConfig(with_torso=with_torso)))

    def portrait(self, image: Path | str, audio: Path | str | None = None, *,
                 text: str | None = None, character: str = "default", config: BaseModel | None = None):
        """One-shot NeRFFaceSpeech video of the portrait `image` speaking `audio` or `text`."""
        if (audio is None) == (text is None):
            raise InputError("give exactly one of audio or text")
        self._validate_name(character)
        return self.run("portrait", character=character, image=Path(image),
                        audio=Path(audio) if audio is not None else None, text=text, config=config)

    # -- machinery -----------------------------------------------------------------------------
    def run(self, call: str, **params: Any) -> Any:
        """Run CALLS[call] with keyword parameters (None means the flow's default)."""
        spec = CALLS[call]
        if spec.planned:
            return self._planned(call)
        params = {k: v for k, v in params.items() if v is not None}
        if self.mode == "local":
            from talkflow.runtime import ensure_result_storage

            ensure_result_storage()
            out = _load(spec.flow)(**params)
        else:
            out = self._run_deployment(self.deployments[call], params)
        return _typed(_load(spec.result), out)

    def _run_deployment(self, name: str, params: dict[str, Any]) -> Any:
        from prefect.deployments import run_deployment

        flow_run = run_deployment(
            name, parameters=_jsonable(params), timeout=self.timeout_s, poll_interval=self.poll_s
        )
        state = flow_run.state
        if state is None or not state.is_completed():
            what = state.name if state is not None else "unknown"
            detail = f": {state.message}" if state is not None and state.message else ""
            raise RunFailed(f"deployment {name}: flow run {flow_run.name} ({flow_run.id}) did not "
                            f"complete; its state is {what}{detail}")
        return state.result()

    @staticmethod
    def _validate_name(name: str) -> None:
        from talkflow.cache import validate_name

        validate_name(name, "name")

    def _planned(self, call: str):
        spec = CALLS[call]
        raise NotImplementedError(
            f"Talkflow.{call}(): {spec.planned} is not available yet; its flow "
            f"({spec.flow}, deployment {self.deployments[call]}) has not landed. "
            f"Available now: {', '.join(n for n, c in CALLS.items() if not c.planned)}."
        )


__all__ = ["CALLS", "Call", "Mode", "RunFailed", "Talkflow", "TrainStage"]
