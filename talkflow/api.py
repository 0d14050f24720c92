"""The Python API: the pipeline's steps as calls, run here or on the work pools.

    from talkflow.api import Talkflow

    tf = Talkflow()                      # runs each flow in this process, reporting to the data
                                         # root's background Prefect server (started on first use)
                                         # or to PREFECT_API_URL when it is set
    tf = Talkflow(mode="deployment")     # runs it on a worker through its deployment

    data = tf.preprocess("alice.mp4", "alice")                  # -> data.data_path (ER-NeRF folder)
    model = tf.train(data.data_path, "models/alice", gpu_id=0)   # head -> lips -> torso
    feats = tf.extract_audio_features("speech.wav", "logmel")   # (T, 16, D) .npy
    video = tf.render("models/alice", "speech.wav", with_torso=True)   # (`infer` is the same call)
    clip = tf.portrait("face.jpg", text="Hello there.", character="ada")
    demo = tf.demo()

Each call is one flow and one deployment (the names in prefect.yaml), listed in CALLS; the CLI's
commands are these calls. Every call checks its names, paths and kinds first, before any Prefect
server starts, and raises a talkflow.errors.InputError (one line: what was wrong, what to do) on
bad input.

gpu_id pins the call to one GPU: CUDA_VISIBLE_DEVICES while a local call runs; on a work pool,
the Docker container's device_ids (job variables gpu_count=0, gpu_ids=[id]) or, on a process
pool, the run's CUDA_VISIBLE_DEVICES (its `env` job variable). Other pool types refuse it.

In deployment mode, paths are sent as absolute paths: they must be readable by the workers
(a shared mount such as the data root). Results come back from the result store (S3 in
production), so the caller needs the same store credentials as the workers.

Like the CLI, this module is a face of the core: it imports flows, and only when a call runs.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from talkflow import checks
from talkflow.checks import FeatureKind, TrainStage
from talkflow.contract import MIN_PORTRAIT_PX
from talkflow.errors import InputError, TalkflowError

if TYPE_CHECKING:
    from flows.demo import DemoResult
    from flows.media import MediaConfig, MediaResult
    from flows.portrait import PortraitConfig, PortraitResult
    from flows.preprocess import PreprocessConfig
    from flows.render import RenderResult, RenderVideoConfig
    from talkflow.store import StageResult
    from tasks.registry import AvatarRecord
    from tasks.sample_clip import SampleClipConfig
    from tasks.speech import SpeechConfig
    from tasks.train_config import TrainAvatarConfig

Mode = Literal["local", "deployment"]
DATASET_MANIFEST = "talkflow_dataset.json"  # in a dataset folder: the manifest train() reads
AVATAR_MANIFEST = "avatar.json"  # in a model folder: the trained avatar render() renders


class RunFailed(TalkflowError):
    """A flow run started through its deployment did not complete."""


@dataclass(frozen=True)
class Call:
    flow: str  # "package.module:function"
    deployment: str  # "<flow name>/<deployment name>", as `prefect deploy` registers it
    result: str  # "package.module:Model" the flow returns


CALLS: dict[str, Call] = {
    "media": Call("flows.media:media_stage", "media-stage/media", "flows.media:MediaResult"),
    "sample_clip": Call("flows.sample_clip:make_sample_clip", "sample-clip/sample-clip",
                        "talkflow.store:StageResult"),
    "demo": Call("flows.demo:demo", "demo/demo", "flows.demo:DemoResult"),
    "preprocess": Call("flows.preprocess:preprocess_video", "preprocess-video/preprocess",
                       "talkflow.store:StageResult"),
    "import_dataset": Call("flows.import_dataset:import_dataset_flow", "import-dataset/import-dataset",
                           "talkflow.store:StageResult"),
    "train": Call("flows.train:train_avatar", "train-avatar/train", "tasks.registry:AvatarRecord"),
    "extract_audio_features": Call("flows.features:extract_audio_features",
                                   "extract-audio-features/audio-features", "talkflow.store:StageResult"),
    "render": Call("flows.render:render", "render/render", "flows.render:RenderResult"),
    "portrait": Call("flows.portrait:generate_from_portrait", "generate-from-portrait/portrait",
                     "flows.portrait:PortraitResult"),
}
CALL_ALIASES = {"infer": "render"}  # the backend's earlier name of a call
# deployments renamed since: old name -> new; prefect.yaml keeps render-video/infer running
RENAMED_DEPLOYMENTS = {"render-video/infer": "render/render"}
GPU_POOL_TYPES = ("docker", "process")  # the work pool types gpu_id can pin


# -- what the calls return --------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """preprocess(): the ER-NeRF dataset folder (docs/dataset.md) and its manifest."""

    task_id: str
    data_path: Path
    manifest: StageResult


@dataclass(frozen=True)
class Model:
    """train(): the model folder (avatar.json + one .pth per trained stage) and the avatar record."""

    person: str
    model_path: Path
    avatar: AvatarRecord


@dataclass(frozen=True)
class Video:
    """render() / portrait(): the mp4 written, and the flow's result (every stage's manifest)."""

    video_path: Path
    duration_s: float
    result: RenderResult | PortraitResult


@dataclass(frozen=True)
class Demo:
    """demo(): the three mp4s it writes, and the flow's result."""

    sample_clip: Path
    talking: Path
    avatar_new_sentence: Path
    result: DemoResult


# -- helpers ----------------------------------------------------------------------------------
def _load(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _jsonable(value: Any) -> Any:
    """Parameters as the Prefect API carries them (the worker validates them back into types). A
    config carries the fields it was given, so that the flow still tells them from its defaults
    (a preset gives way only to what was given: tasks.presets.changed_fields)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
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


def _export(artifact, dest: Path) -> Path:
    """Copy a stored artifact to a user-visible path."""
    from talkflow.store import get_store

    dest = Path(dest).expanduser().resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(get_store().fetch(artifact), dest)
    return dest


def gpu_job_variables(gpu_id: int | str | None, pool_type: str = "docker") -> dict[str, Any]:
    """Job variables that pin a run to one GPU: a Docker GPU pool's device_ids
    (pools/gpu_pool.py), a process pool's CUDA_VISIBLE_DEVICES (Prefect's process worker
    adds the `env` job variable to the run's environment). InputError for other pool types."""
    index = checks.gpu_index(gpu_id)
    if index is None:
        return {}
    if pool_type == "docker":
        return {"gpu_count": 0, "gpu_ids": [index]}
    if pool_type == "process":
        return {"env": {"CUDA_VISIBLE_DEVICES": index}}
    raise InputError(f"gpu_id pins runs on {' and '.join(GPU_POOL_TYPES)} work pools, not on a pool of type "
                     f"{pool_type}; pin the GPU in that pool's job template, or leave gpu_id empty")


def _call_name(call: str) -> str:
    name = CALL_ALIASES.get(call, call)
    if name not in CALLS:
        raise InputError(f"no such call {call!r}; calls are {', '.join(sorted(CALLS))}")
    return name


@contextmanager
def pinned_gpu(gpu_id: int | str | None) -> Iterator[None]:
    """CUDA_VISIBLE_DEVICES=<gpu_id> while the block runs in this process."""
    index = checks.gpu_index(gpu_id)
    if index is None:
        yield
        return
    import sys

    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    torch = sys.modules.get("torch")
    if old != index and torch is not None and torch.cuda.is_initialized():
        raise InputError(f"CUDA is already in use in this process (CUDA_VISIBLE_DEVICES={old!r}); pin GPU "
                         f"{index} in a new process, or set CUDA_VISIBLE_DEVICES={index} before the first call")
    os.environ["CUDA_VISIBLE_DEVICES"] = index
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old


class _HeldLog(logging.Filter):
    """Holds what Prefect would print on the console while a call runs (see local_run)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[int, logging.LogRecord] = {}  # one record reaches every console handler
        self.handlers: list[logging.Handler] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.setdefault(id(record), record)
        return False

    @contextmanager
    def holding(self) -> Iterator[None]:
        from prefect.logging.handlers import PrefectConsoleHandler

        self.handlers = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
        for h in self.handlers:
            h.addFilter(self)
        try:
            yield
        finally:
            for h in self.handlers:
                h.removeFilter(self)

    def replay(self, skip: set[str]) -> None:
        for record in self.records.values():
            if record.getMessage() in skip:
                continue
            for handler in self.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
        self.records.clear()


@contextmanager
def local_run(gpu_id: int | str | None = None) -> Iterator[list[str]]:
    """Run flows in this process: its Prefect server ready (embedded: the data root's background
    server, started if need be), result storage ready, GPU pinned, stage warnings collected
    (the list yielded), and Prefect's console output held while the block runs: after a user
    error (a TalkflowError) it is dropped, so the error alone says what was wrong; otherwise it
    is printed afterwards, less the stage warnings, which the caller reports."""
    from talkflow.cache import collect_warnings
    from talkflow.runtime import background_run_settings, ensure_result_storage

    ensure_result_storage()
    held = _HeldLog()
    with background_run_settings(), pinned_gpu(gpu_id), collect_warnings() as warnings:
        try:
            with held.holding():
                yield warnings
        except TalkflowError:
            held.records.clear()
            raise
        finally:
            held.replay(skip=set(warnings))


class Talkflow:
    """Runs talkflow's flows and returns their typed results.

    mode: "local" runs the flow in this process; "deployment" creates a run of its deployment
    and waits for a worker to finish it (timeout_s: None waits as long as it takes).
    deployments: override deployment names, e.g. {"media": "media-stage/staging"}.

    After a local call, `warnings` lists what its stages recorded (several faces, frames without
    a face, a variable frame rate resampled, ...); each is also a Prefect warning of its task run.
    """

    def __init__(
        self,
        mode: Mode = "local",
        *,
        timeout_s: float | None = None,
        poll_s: float = 2.0,
        deployments: Mapping[str, str] | None = None,
    ):
        checks.choice(mode, Mode, "mode")
        unknown = set(deployments or {}) - set(CALLS) - set(CALL_ALIASES)
        if unknown:
            raise InputError(f"no such calls: {sorted(unknown)}; calls are {sorted(CALLS)}")
        self.mode = mode
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.deployments = {name: c.deployment for name, c in CALLS.items()} | {
            _call_name(k): v for k, v in (deployments or {}).items()}
        self.warnings: list[str] = []

    # -- the backend's calls -------------------------------------------------------------------
    def preprocess(self, video_path: Path | str, task_id: str, *, data_path: Path | str | None = None,
                   config: PreprocessConfig | None = None, copy: bool = False, transcript: str = "") -> Dataset:
        """ER-NeRF preprocessing of `video_path` for the person `task_id`; the dataset folder is
        written at `data_path` (default <data_root>/datasets/<task_id>; links into the store, or
        copies with copy=True) with its manifest, which train() reads. `transcript`: the words
        spoken, if known (visemes features align to them)."""
        checks.validate_name(task_id, "task_id")
        if config is not None:
            checks.feature_kind(config.audio.kind, "config.audio.kind")
            video = checks.talking_video(video_path, need_audio=config.normalize.require_audio,
                                         min_duration_s=config.normalize.min_duration_s,
                                         max_audio_gap_s=config.normalize.max_audio_gap_s)
        else:
            video = checks.talking_video(video_path)
        from talkflow.settings import get_settings

        dest = Path(data_path) if data_path is not None else get_settings().root / "datasets" / task_id
        dest = dest.expanduser().resolve()
        if dest.exists() and any(dest.iterdir()) and not (dest / DATASET_MANIFEST).is_file():
            raise InputError(f"'{dest}' is a folder that preprocess() did not write; it is replaced by the "
                             "dataset, so give a new or empty folder as data_path")
        manifest = self.run("preprocess", video=video.resolve(), person=task_id, config=config,
                            transcript=transcript)
        from tasks.dataset import materialize_dataset

        dest = materialize_dataset(manifest, dest, copy=copy)
        (dest / DATASET_MANIFEST).write_text(manifest.model_dump_json(indent=1))
        return Dataset(task_id=task_id, data_path=dest, manifest=manifest)

    def train(self, data_path: Path | str, model_path: Path | str | None = None, gpu_id: int | None = None,
              stage: TrainStage = "auto", *, config: TrainAvatarConfig | None = None) -> Model:
        """Train the avatar of the dataset at `data_path` (a folder preprocess() wrote, or the name
        of a preprocessed person) and write it to `model_path` (default <data_root>/models/<person>).
        stage "auto" runs head -> lips -> torso; "head"/"lips" stop after that stage.
        Stages already trained on the same data and settings are cache hits; a killed run resumes."""
        checks.choice(stage, TrainStage, "stage")
        checks.gpu_index(gpu_id)
        manifest = _dataset_manifest(data_path)
        from tasks.registry import register_dataset

        register_dataset(manifest.namespace, manifest)  # the flow trains the person's registered dataset
        avatar = self.run("train", person=manifest.namespace, config=config, stage=stage, gpu_id=gpu_id)
        from talkflow.settings import get_settings
        from talkflow.store import get_store

        dest = Path(model_path) if model_path is not None else get_settings().root / "models" / avatar.person
        dest = dest.expanduser().resolve()
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("head", "lips", "torso"):
            result = getattr(avatar, name)
            target = dest / f"{name}.pth"
            if result is None:
                target.unlink(missing_ok=True)
            else:
                shutil.copyfile(get_store().fetch(result["checkpoint"]), target)
        (dest / AVATAR_MANIFEST).write_text(avatar.model_dump_json(indent=1))
        return Model(person=avatar.person, model_path=dest, avatar=avatar)

    def extract_audio_features(self, wav_path: Path | str, kind: FeatureKind = "logmel", *,
                               out_path: Path | str | None = None, gpu_id: int | None = None) -> Path:
        """The (T, 16, D) float32 .npy of `wav_path` that an avatar trained on `kind` features reads
        (T: video frames; D: the kind's width; both in docs/media-contract.md). Default out_path:
        <wav_path without suffix>_<kind>.npy."""
        checks.feature_kind(kind, "kind")
        wav = checks.speech_audio(wav_path)
        checks.output_file(out_path, "out_path")
        result = self.run("extract_audio_features", audio=wav.resolve(), kind=kind, gpu_id=gpu_id)
        dest = Path(out_path) if out_path is not None else wav.with_name(f"{wav.stem}_{kind}.npy")
        return _export(result["feats"], dest)

    def render(self, model_path: Path | str, audio_path: Path | str | None = None, *, text: str | None = None,
               output_path: Path | str | None = None, with_torso: bool = True,
               config: RenderVideoConfig | None = None, gpu_id: int | None = None) -> Video:
        """Render the avatar at `model_path` (a folder train() wrote, or the name of a trained
        person: their latest training) speaking `audio_path` (any audio or
        video file) or `text` (offline TTS). with_torso=False keeps the dataset's own torso."""
        source = checks.audio_or_text(audio_path, text)
        audio = source.resolve() if isinstance(source, Path) else None
        avatar = _avatar_at(model_path)
        from flows.render import RenderVideoConfig

        config = config or RenderVideoConfig()
        config = config.model_copy(update={"render": config.render.model_copy(update={"with_torso": with_torso})})
        result = self.run("render", person=avatar.person, audio=audio, text=text, config=config, avatar=avatar,
                          gpu_id=gpu_id)
        from talkflow.settings import get_settings

        dest = Path(output_path) if output_path is not None else (
            get_settings().outputs_dir / avatar.person / f"{result.video['video'].sha256[:8]}.mp4")
        return Video(_export(result.video["video"], dest), result.video.meta["duration_s"], result)

    infer = render  # the backend's name of this call

    def portrait(self, image_path: Path | str, audio_path: Path | str | None = None, *, text: str | None = None,
                 character: str = "default", output_path: Path | str | None = None,
                 config: PortraitConfig | None = None, gpu_id: int | None = None,
                 transcript: str | None = None, renderer: str | None = None) -> Video:
        """One-shot NeRFFaceSpeech video of the portrait `image_path` speaking `audio_path` or `text`;
        the character's fit (3DMM + the renderer's preparation) is cached per character and image
        content. `transcript`: what the audio says, when known (its phones are then aligned, not
        recognised). `renderer`: a name of flows.renderers, or "auto" (overrides config.renderer)."""
        checks.validate_name(character, "character")
        from flows import renderers

        requested = renderer or (config.renderer if config is not None else renderers.AUTO)
        if self.mode == "local":
            renderers.choose(requested)  # a missing asset fails here, before any work
        elif requested != renderers.AUTO:
            renderers.entry(requested)  # a known name; the worker checks its own assets
        if renderer is not None:
            from flows.portrait import PortraitConfig

            config = (config or PortraitConfig()).model_copy(update={"renderer": renderer})
        image = checks.portrait_image(image_path, config.fit.min_size if config is not None else MIN_PORTRAIT_PX)
        source = checks.audio_or_text(audio_path, text)
        audio = source.resolve() if isinstance(source, Path) else None
        result = self.run("portrait", character=character, image=image.resolve(), audio=audio, text=text,
                          config=config, gpu_id=gpu_id, transcript=transcript)
        from talkflow.settings import get_settings

        dest = Path(output_path) if output_path is not None else (
            get_settings().outputs_dir / "portraits" / f"{character}-{result.video['video'].sha256[:8]}.mp4")
        return Video(_export(result.video["video"], dest), result.video.meta["duration_s"], result)

    def demo(self, text: str | None = None, new_text: str | None = None, *,
             output_dir: Path | str | None = None) -> Demo:
        """The whole ER-NeRF path on a sample clip made from `text`, then the avatar saying
        `new_text` (empty: flows.demo's sentences); three mp4s in `output_dir` (default
        <data_root>/outputs/demo). A second run is all cache hits."""
        for what, value in (("text", text), ("new_text", new_text)):
            if value is not None and not value.strip():
                raise InputError(f"{what} is empty; give at least one word")
        result = self.run("demo", text=text, new_text=new_text)
        from talkflow.settings import get_settings

        out = Path(output_dir) if output_dir is not None else get_settings().outputs_dir / "demo"
        return Demo(sample_clip=_export(result.sample["video"], out / "sample_clip.mp4"),
                    talking=_export(result.media.video["video"], out / "talking.mp4"),
                    avatar_new_sentence=_export(result.rendered.video["video"], out / "avatar_new_sentence.mp4"),
                    result=result)

    def import_dataset(self, folder: Path | str, person: str) -> StageResult:
        """Register an ER-NeRF dataset folder (as the reference's data_utils/process.py writes it) as
        `person`'s dataset, so that train(person) trains on it; cached by the folder's content."""
        checks.validate_name(person, "person")
        from tasks.dataset import check_reference_folder

        folder = check_reference_folder(Path(folder))  # a missing part fails before Prefect starts
        return self.run("import_dataset", folder=folder, person=person)

    # -- the pipeline's other flows ------------------------------------------------------------
    def media(self, video: Path | str, config: MediaConfig | None = None,
              namespace: str | None = None) -> MediaResult:
        """Normalize a talking video, extract its frames, mux them back (flows.media)."""
        if namespace is not None:
            checks.validate_name(namespace, "namespace")
        return self.run("media", video=checks.existing_file(video, "video").resolve(), config=config,
                        namespace=namespace)

    def sample_clip(self, text: str, config: SampleClipConfig | None = None,
                    speech: SpeechConfig | None = None, *, output_path: Path | str | None = None) -> StageResult:
        """A short clip of a real face photo saying `text` (flows.sample_clip); copied to
        `output_path` when given."""
        if not text or not text.strip():
            raise InputError("the text is empty; give at least one word")
        result = self.run("sample_clip", text=text, config=config, speech=speech)
        if output_path is not None:
            _export(result["video"], Path(output_path))
        return result

    # -- machinery -----------------------------------------------------------------------------
    def run(self, call: str, *, gpu_id: int | str | None = None, **params: Any) -> Any:
        """Run CALLS[call] with keyword parameters (None means the flow's default).

        Locally, the flow runs inside `local_run` (see there); `self.warnings` lists the
        warnings its stages recorded.
        """
        call = _call_name(call)
        spec = CALLS[call]
        params = {k: v for k, v in params.items() if v is not None}
        self.warnings = []
        if self.mode == "deployment":
            name = self.deployments[call]
            jobs = gpu_job_variables(gpu_id, _pool_type(name)) if checks.gpu_index(gpu_id) is not None else {}
            out = self._run_deployment(name, params, jobs)
            return _typed(_load(spec.result), out)

        from talkflow.runtime import start_background_server

        start_background_server()  # boots while the flow's modules import; local_run waits for it
        flow = _load(spec.flow)
        with local_run(gpu_id) as warnings:
            try:
                out = flow(**params)
            finally:
                self.warnings = warnings
        return _typed(_load(spec.result), out)

    def _run_deployment(self, name: str, params: dict[str, Any], job_variables: dict[str, Any]) -> Any:
        from prefect.deployments import run_deployment
        from prefect.exceptions import ObjectNotFound

        try:
            flow_run = run_deployment(name, parameters=_jsonable(params), job_variables=job_variables or None,
                                      timeout=self.timeout_s, poll_interval=self.poll_s)
        except ObjectNotFound:
            raise _missing_deployment(name) from None
        state = flow_run.state
        if state is None or not state.is_completed():
            what = state.name if state is not None else "unknown"
            detail = f": {state.message}" if state is not None and state.message else ""
            raise RunFailed(f"deployment {name}: flow run {flow_run.name} ({flow_run.id}) did not "
                            f"complete; its state is {what}{detail}")
        return state.result()


def _missing_deployment(name: str) -> InputError:
    renamed = RENAMED_DEPLOYMENTS.get(name)
    hint = (f"it is now {renamed!r} (deployments=... names the new one)" if renamed else
            "deploy prefect.yaml (`prefect --no-prompt deploy --all`) or name an existing deployment")
    return InputError(f"the Prefect server has no deployment {name!r}; {hint}")


def _pool_type(deployment: str) -> str:
    """The type (docker, process, ...) of the work pool a deployment runs on."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            found = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise _missing_deployment(deployment) from None
        return client.read_work_pool(found.work_pool_name).type


def _dataset_manifest(data_path: Path | str) -> StageResult:
    """The dataset of a folder preprocess() wrote (its manifest), or a person's latest dataset."""
    from talkflow.store import StageResult

    folder = Path(data_path).expanduser()
    if folder.is_dir():
        path = folder / DATASET_MANIFEST
        if not path.is_file():
            raise InputError(f"'{folder}' is not a talkflow dataset folder (no {DATASET_MANIFEST}); make one "
                             "with preprocess(), or register an ER-NeRF folder with `talkflow import-dataset`")
        manifest = StageResult.model_validate_json(path.read_text())
        if manifest.stage != "dataset" or not manifest.namespace:
            raise InputError(f"'{path}' is not a dataset manifest of preprocess()")
        return manifest
    if isinstance(data_path, str) and checks.NAME_RE.match(data_path):
        from tasks.registry import registered_dataset

        manifest = registered_dataset(data_path)
        if manifest is not None:
            return manifest
        raise InputError(f"no dataset folder '{data_path}' and no person {data_path!r} preprocessed; "
                         "run preprocess() first")
    raise InputError(f"the dataset folder '{data_path}' does not exist; make one with preprocess()")


def _avatar_at(model: Path | str) -> AvatarRecord:
    """The avatar of a folder train() wrote, its checkpoints still in the store; or a person's latest."""
    from talkflow.store import get_store
    from tasks.registry import AvatarRecord, read_avatar

    folder = Path(model).expanduser()
    if folder.is_dir():
        path = folder / AVATAR_MANIFEST
        if not path.is_file():
            raise InputError(f"'{folder}' is not a talkflow model folder (no {AVATAR_MANIFEST}); make one with train()")
        avatar = AvatarRecord.model_validate_json(path.read_text())
        store = get_store()
        for name in ("head", "lips", "torso"):
            result = getattr(avatar, name)
            if result is not None and not store.verify(result["checkpoint"]):
                raise InputError(f"the {name} checkpoint of '{folder}' is no longer in the store (pruned?); "
                                 "train again")
        return avatar
    if isinstance(model, str) and checks.NAME_RE.match(model):
        return read_avatar(model)  # InputError naming the known avatars when there is none
    raise InputError(f"the model folder '{model}' does not exist; make one with train()")


__all__ = ["CALLS", "CALL_ALIASES", "Call", "Dataset", "Demo", "FeatureKind", "Mode", "Model", "RunFailed", "Talkflow",
           "TrainStage", "Video", "gpu_job_variables", "local_run", "pinned_gpu"]
