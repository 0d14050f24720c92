"""ER-NeRF training as cached, resumable stages: head -> lips -> torso, and the avatar registry.

Each stage is a `talkflow.cache.stage` task. Its cache key is the content of its arguments: the
dataset manifest, the stage config, and (lips, torso) the previous stage's result, whose
checkpoint sha256 enters the key, so a retrained head retrains what follows it.

Resuming: every `checkpoint_every` steps the trainer state (model, optimiser, step, RNG) goes to
the store as a content-addressed object, then a small pointer document is written at
`resume/<namespace>/<stage>-<digest>.json` (digest: the same inputs as the cache key). A retry,
or a rerun after the process was killed, finds the pointer, verifies its checkpoint and goes on
from that step; a run that completes removes its pointer. A pointer whose checkpoint is missing
or corrupt is ignored (training starts over).

The registry: `avatars/<person>.json` in the store names a person's dataset and latest stage
results, so rendering needs only the name. `train_avatar` writes it last, atomically.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic
from pydantic import BaseModel, Field

from models.ernerf.audio import AudioConfig, attention_profile
from models.ernerf.dataset import ERNeRFDataset, check_dataset, downscale_split, load_split
from models.ernerf.encodings import HashGridConfig
from models.ernerf.fields import HeadFieldConfig, TorsoFieldConfig
from models.ernerf.model import ERNeRF, ModelConfig
from models.ernerf.occupancy import OccupancyConfig
from models.ernerf.rendering import RenderConfig as ModelRenderConfig
from models.ernerf.trainer import TrainConfig, Trainer, load_model, stage_config
from talkflow.cache import NO_NAMESPACE, cache_key, stage, validate_name
from talkflow.errors import InputError
from talkflow.gpu import gpu_slot
from talkflow.settings import get_settings
from talkflow.store import Artifact, ArtifactStore, StageResult, get_store
from tasks.dataset import materialize_dataset
from tasks.inputs import local_file, scratch

STAGES = ("head", "lips", "torso")
STAGE_NAMES = {s: f"train_{s}" for s in STAGES}  # the cache / journal names
VERSION = "1"
TRAIN_TIMEOUT_S = 48 * 3600  # the reference schedule takes hours on one GPU
RESUME_DIR = "resume"
AVATARS_DIR = "avatars"

ModelPreset = Literal["small", "reference"]
TrainPreset = Literal["reference", "cpu-demo"]


_MISSING = object()


# ----------------------------------------------------------------------------------- configs
class TrainStageConfig(BaseModel):
    """One training stage. Empty fields take the reference's value for that stage
    (models.ernerf.trainer.stage_config: head 100k steps, lips 25k, torso 200k; 65536 rays)."""

    steps: int | None = Field(None, ge=1, description="Optimisation steps; empty: the reference's.")
    rays_per_batch: int | None = Field(None, ge=1, description="Rays per step; empty: the reference's 65536.")
    lr: float | None = Field(None, gt=0, description="Hash-table learning rate; empty: the stage's reference rate.")
    lr_net: float | None = Field(None, gt=0, description="MLP learning rate; empty: the stage's reference rate.")
    seed: int = Field(0, description="Seed of the ray sampling (a resumed run continues its random stream).")
    checkpoint_every: int = Field(1000, ge=1, description="Steps between resumable checkpoints in the store.")
    log_every: int = Field(0, ge=0, description="Steps per loss-curve point and progress update; 0: 1 % of the steps.")
    val_frames: int | None = Field(None, ge=1, description="Held-out frames to evaluate; empty: all of them.")
    val_downscale: int = Field(1, ge=1, le=8,
                               description="Evaluate at 1/N resolution (faster); LMD is in px of a 512 px frame.")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Any other models.ernerf TrainConfig field, e.g. {\"lambda_entropy\": 0}.")

    @classmethod
    def reference(cls, stage_name: str) -> TrainStageConfig:
        """The stage's reference steps, rays and learning rates written out (a form shows them)."""
        ref = stage_config(stage_name)
        return cls(steps=ref.steps, rays_per_batch=ref.rays_per_batch, lr=ref.lr, lr_net=ref.lr_net)

    def train_config(self, stage_name: str) -> TrainConfig:
        """The trainer's config: the stage's reference defaults, then the set fields, then overrides."""
        fields = {k: v for k, v in (("steps", self.steps), ("rays_per_batch", self.rays_per_batch),
                                    ("lr", self.lr), ("lr_net", self.lr_net)) if v is not None}
        bad = {"stage", "checkpoint_every", "seed"} & set(self.overrides)
        if bad:
            raise InputError(f"overrides may not set {sorted(bad)}; use the config's own fields")
        try:
            return stage_config(stage_name, **fields, **self.overrides, seed=self.seed,
                                checkpoint_every=self.checkpoint_every)
        except pydantic.ValidationError as exc:
            errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise InputError(f"bad {stage_name} training config: {errors}") from exc


class TrainAvatarConfig(BaseModel):
    """The three stages and the model size. Defaults are the reference schedule (hours on a GPU)."""

    model: ModelPreset = Field("reference", description="reference: ER-NeRF's sizes; small: a CPU-sized model.")
    head: TrainStageConfig = Field(default_factory=lambda: TrainStageConfig.reference("head"),
                                   description="Stage 1: the head on the whole frame.")
    lips: TrainStageConfig = Field(default_factory=lambda: TrainStageConfig.reference("lips"),
                                   description="Stage 2: the head fine-tuned on the lips (patch loss).")
    torso: TrainStageConfig = Field(default_factory=lambda: TrainStageConfig.reference("torso"),
                                    description="Stage 3: the torso, with the head frozen.")

    @classmethod
    def cpu_demo(cls) -> TrainAvatarConfig:
        """Minutes on 2 CPU cores for a 256 px clip of a few seconds (the demo; a toy avatar).
        The MLPs learn at 5x the reference rate, the audio attention at the reference's own 5e-3
        (at 5x that it collapses onto one neighbouring frame)."""
        quick = {"rays_per_batch": 1024, "lr_net": 5e-3, "checkpoint_every": 100, "val_downscale": 2,
                 "overrides": {"attention_lr_mult": 1.0}}
        return cls(model="small", head=TrainStageConfig(steps=300, **quick),
                   lips=TrainStageConfig(steps=30, **{**quick, "rays_per_batch": 512, "lr_net": None, "overrides": {}}),
                   torso=TrainStageConfig(steps=600, **quick))

    @classmethod
    def preset(cls, name: TrainPreset) -> TrainAvatarConfig:
        """reference: ER-NeRF's sizes and schedule (hours on a GPU); cpu-demo: the demo's small
        model and short schedule (minutes on 2 CPU cores, a toy avatar)."""
        if name == "reference":
            return cls()
        if name == "cpu-demo":
            return cls.cpu_demo()
        raise InputError(f"unknown training preset {name!r}; use 'reference' or 'cpu-demo'")

    def on_preset(self, name: TrainPreset) -> TrainAvatarConfig:
        """The preset `name`, with every field of this config that differs from the reference
        default applied on top (a form sends the whole config: its untouched fields are the
        reference's, and give way to the preset's). With "reference" this is the config itself."""
        if name == "reference":
            return self

        def changed(value: Any, default: Any) -> Any:
            if isinstance(value, dict) and isinstance(default, dict):
                out = {k: changed(v, default.get(k, _MISSING)) for k, v in value.items()}
                return {k: v for k, v in out.items() if v is not _MISSING}
            return _MISSING if value == default else value

        def merge(base: dict, top: dict) -> dict:
            out = dict(base)
            for k, v in top.items():
                out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
            return out

        edits = changed(self.model_dump(), type(self)().model_dump())
        return type(self).model_validate(merge(type(self).preset(name).model_dump(), edits))

    def validate_stages(self) -> None:
        """Raise InputError for a bad override before any work starts."""
        for name in STAGES:
            getattr(self, name).train_config(name)


def model_config(preset: ModelPreset, audio_dim: int, n_train: int) -> ModelConfig:
    """The ER-NeRF model for a dataset: the reference sizes, or a small one that trains on a CPU."""
    codes = max(10_000, n_train)  # reference ind_num; must cover the training frames
    if preset == "reference":
        return ModelConfig(audio=AudioConfig(in_dim=audio_dim), num_appearance_codes=codes)
    if preset != "small":
        raise InputError(f"unknown model preset {preset!r}; use 'small' or 'reference'")
    return ModelConfig(
        audio=AudioConfig(in_dim=audio_dim, code_dim=16),
        head=HeadFieldConfig(grid=HashGridConfig(num_levels=6, features_per_level=2, base_resolution=8,
                                                 desired_resolution=96, log2_hashmap_size=11),
                             geo_feat_dim=15, sigma_hidden=32, color_hidden=32, audio_att_hidden=32),
        torso=TorsoFieldConfig(grid=HashGridConfig(num_levels=4, features_per_level=2, base_resolution=8,
                                                   desired_resolution=64, log2_hashmap_size=10,
                                                   grid_type="tiled")),
        render=ModelRenderConfig(step_size=0.04, max_samples=24),
        occupancy=OccupancyConfig(resolution=32),
        num_appearance_codes=codes,
    )


# ------------------------------------------------------------------------------ resume slot
def resume_key(stage_name: str, inputs: dict[str, Any]) -> str:
    """`resume/<namespace>/<stage>-<digest>.json`: the digest of the same inputs as the cache key."""
    digest = cache_key(stage_name, VERSION, inputs).rsplit(".", 1)[-1]
    return f"{RESUME_DIR}/{inputs.get('namespace') or NO_NAMESPACE}/{stage_name}-{digest}.json"


class ResumeSlot:
    """The latest checkpoint of an unfinished stage run: the object first, the pointer last."""

    def __init__(self, store: ArtifactStore, key: str):
        self.store, self.key = store, key
        self.current: Artifact | None = None
        self.curve: list[list[float]] = []  # [step, mean loss] of each logged window

    def load(self, log: Callable[[str], None]) -> tuple[int, Path | None]:
        """(step, local checkpoint) of a verified pointer, else (0, None)."""
        text = self.store.read_text(self.key)
        if text is None:
            return 0, None
        try:
            doc = json.loads(text)
            art = Artifact.model_validate(doc["checkpoint"])
            step = int(doc["step"])
        except (ValueError, KeyError, pydantic.ValidationError):
            log(f"ignoring an unreadable resume pointer {self.key}; training from the start")
            return 0, None
        if not self.store.verify(art):
            log(f"the checkpoint of {self.key} (step {step}) is missing or corrupt; training from the start")
            return 0, None
        self.current, self.curve = art, [list(p) for p in doc.get("curve", [])]
        return step, self.store.fetch(art)

    def save(self, step: int, path: Path) -> None:
        art = self.store.put_file(path, suffix=".pt")
        doc = {"step": step, "checkpoint": art.model_dump(), "curve": self.curve, "at": time.time()}
        self.store.write_text(self.key, json.dumps(doc))
        previous, self.current = self.current, art
        if previous is not None and previous.key != art.key:
            self.store.remove(previous.key)  # superseded; nothing else names an in-progress checkpoint

    def clear(self, keep: Artifact) -> None:
        """The stage completed: drop the pointer and the in-progress checkpoint (unless it is `keep`)."""
        self.store.remove(self.key)
        if self.current is not None and self.current.key != keep.key:
            self.store.remove(self.current.key)


# ----------------------------------------------------------------------- progress reporting
def run_logger():
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # outside a run
        import logging

        return logging.getLogger("talkflow.train")


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes)."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


class ProgressArtifact:
    """A Prefect progress artifact, updated as training goes; failures never stop training."""

    def __init__(self, description: str, start: float):
        self.id = None
        try:
            from prefect.artifacts import create_progress_artifact

            self.id = create_progress_artifact(progress=start, description=description)
        except Exception as exc:  # no API reachable: train anyway
            run_logger().warning(f"no progress artifact: {exc}")

    def update(self, percent: float) -> None:
        if self.id is None:
            return
        try:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self.id, progress=min(100.0, percent))
        except Exception:
            self.id = None


def _fmt(value: float | None, digits: int = 5) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _publish(namespace: str, stage_name: str, meta: dict) -> None:
    """The loss curve (table) and the validation metrics (markdown) as Prefect artifacts.

    Prefect image artifacts only link to a URL, so no preview image is published."""
    try:
        from prefect.artifacts import create_markdown_artifact, create_table_artifact

        ns = namespace or "any"
        curve = [{"step": int(s), "loss": round(v, 6)} for s, v in meta["curve"]]
        if curve:
            create_table_artifact(curve, key=artifact_key(ns, stage_name, "loss"),
                                  description=f"{stage_name} loss curve of {ns}")
        val = meta["val"]
        rows = "\n".join(f"| {k} | {_fmt(v, 4)} |" for k, v in val.items())
        md = (f"## {stage_name} of {ns}\n\n{meta['steps']} steps ({meta['steps_computed']} computed now, resumed "
              f"from step {meta['resumed_from_step']}), final loss {_fmt(meta['final_loss'])}, "
              f"{_fmt(meta['steps_per_s'], 2)} steps/s on {meta['device']}.\n\n"
              f"Held-out frames: {meta['val_frames']} at 1/{meta['val_downscale']} resolution.\n\n"
              f"| metric | value |\n|---|---|\n{rows}\n")
        create_markdown_artifact(md, key=artifact_key(ns, stage_name, "validation"),
                                 description=f"{stage_name} validation of {ns}")
    except Exception as exc:
        run_logger().warning(f"could not publish the {stage_name} artifacts: {exc}")


# ---------------------------------------------------------------------------------- metrics
def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 5)


def _lpips(trainer: Trainer, val: ERNeRFDataset, n: int, path: Path) -> float | None:
    """LPIPS (AlexNet, weights at `path`) of the rendered held-out frames."""
    import torch

    from models.ernerf.losses import make_patch_loss

    _, metric = make_patch_loss(path, trainer.device)
    torso = trainer.cfg.stage == "torso"
    bgs = val.background if torso else torch.stack([val.torso_over_background(k) for k in range(n)])
    frames = trainer.model.render_frames(
        val.audio, val.poses[:n], focal=val.focal, cx=val.cx, cy=val.cy, height=val.height, width=val.width,
        background=bgs, aud_index=val.aud_ids[:n], eye=val.eye[:n], with_torso=torso, mixed_precision=trainer.mp)
    pred = torch.from_numpy(frames).permute(0, 3, 1, 2).float().to(trainer.device) / 255
    gt = val.images[:n].permute(0, 3, 1, 2).float().to(trainer.device) / 255
    with torch.no_grad():
        return float(metric(pred, gt))


def _validate(trainer: Trainer, val: ERNeRFDataset, config: TrainStageConfig,
              lpips: Path | None) -> dict[str, float | None]:
    from models.eval.lipsync import REFERENCE_SIZE, face_landmarks

    small = downscale_split(val, config.val_downscale)
    n = len(small) if config.val_frames is None else min(config.val_frames, len(small))
    # dlib on frames upscaled to 512 px (it misses faces under ~80 px); LMD in px of a 512 px frame
    metrics = trainer.evaluate(small, max_frames=n, landmarker=face_landmarks)
    metrics["lmd"] = metrics["lmd"] * REFERENCE_SIZE / small.width
    out = {k: _finite(v) for k, v in metrics.items()}
    out["lpips"] = _finite(_lpips(trainer, small, n, lpips)) if lpips is not None else None
    return out


# ----------------------------------------------------------------------------- stage body
def _train_stage(stage_name: str, inputs: dict[str, Any], make_model: Callable[[ERNeRFDataset], ERNeRF],
                 extra_meta: dict[str, Any]) -> StageResult:
    """Materialize the dataset, build the model, train (resuming), validate, store the checkpoint."""
    short = stage_name.removeprefix("train_")
    dataset: StageResult = inputs["dataset"]
    config: TrainStageConfig = inputs["config"]
    namespace = inputs.get("namespace")
    lpips: Path | None = inputs.get("lpips")  # only the lips stage gets it: its patch loss and metric
    tcfg = config.train_config(short)
    log = run_logger()
    store = get_store()
    slot = ResumeSlot(store, resume_key(stage_name, inputs))
    t0 = time.perf_counter()
    with scratch(stage_name) as work:
        root = materialize_dataset(dataset, work / "dataset")
        info = check_dataset(root)
        train, val = load_split(root, "train", info=info), load_split(root, "val", info=info)
        model = make_model(train)
        with gpu_slot():
            trainer = Trainer(model, train, tcfg, device=get_settings().torch_device(),
                              checkpoint_dir=work / "checkpoints", on_checkpoint=slot.save, lpips=lpips)
            resumed, path = slot.load(log.warning)
            if path is not None:
                trainer.load(path)
                log.info(f"{stage_name}: resuming from step {resumed} of {tcfg.steps} ({slot.key})")
            every = config.log_every or max(1, tcfg.steps // 100)
            progress = ProgressArtifact(f"{stage_name} of {namespace or 'any'}: {tcfg.steps} steps",
                                        100.0 * resumed / tcfg.steps)
            window: list[float] = []
            computed = 0

            def on_step(step: int, logs: dict) -> None:
                nonlocal computed
                computed += 1
                window.append(logs["loss"])
                if step % every == 0 or step == tcfg.steps:
                    slot.curve.append([step, float(np.mean(window))])
                    window.clear()
                    progress.update(100.0 * step / tcfg.steps)

            t_train = time.perf_counter()
            trainer.train(progress=on_step)
            train_s = time.perf_counter() - t_train
            val_metrics = _validate(trainer, val, config, lpips)
            attention = attention_profile(model.audio, train.audio, train.aud_ids)
        final = store.put_file(trainer.save(work / f"{short}.pt"), suffix=".pt")
    slot.clear(keep=final)
    curve = slot.curve
    meta = {
        "steps": tcfg.steps, "resumed_from_step": resumed, "steps_computed": computed,
        "first_loss": curve[0][1] if curve else None, "final_loss": curve[-1][1] if curve else None,
        "val": val_metrics, "val_frames": min(config.val_frames or len(val), len(val)),
        "val_downscale": config.val_downscale, "seconds": round(time.perf_counter() - t0, 2),
        "steps_per_s": round(computed / train_s, 3) if computed and train_s > 0 else None,
        "device": str(trainer.device), "rays_per_batch": tcfg.rays_per_batch,
        "features": dataset.meta.get("features"), "curve": curve,
        "patch_loss": trainer.patch_loss_kind, "attention": attention, **extra_meta,
    }
    _publish(namespace, stage_name, meta)
    return StageResult(artifacts={"checkpoint": final}, meta=meta)


def _previous_model(previous: StageResult, allowed: tuple[str, ...], what: str) -> Callable[[ERNeRFDataset], ERNeRF]:
    if previous.stage not in allowed or "checkpoint" not in previous.artifacts:
        raise InputError(f"the {what} stage starts from a {' or '.join(allowed)} result, got "
                         f"{previous.stage or 'a result without a stage'}; train the earlier stage first")
    return lambda _train: load_model(local_file(previous["checkpoint"]), device="cpu")


@stage(STAGE_NAMES["head"], VERSION, timeout_s=TRAIN_TIMEOUT_S)
def train_head(dataset: StageResult, config: TrainStageConfig, model: ModelPreset = "reference",
               namespace: str | None = None) -> StageResult:
    """Head stage: the audio-conditioned head field over the GT torso (random rays)."""
    inputs = {"dataset": dataset, "config": config, "model": model, "namespace": namespace}
    features = dataset.meta.get("features") or {}

    def make(train: ERNeRFDataset) -> ERNeRF:
        import torch

        with torch.random.fork_rng(devices=[]):  # the same inputs give the same initial model
            torch.manual_seed(config.seed)
            return ERNeRF(model_config(model, train.audio_dim, len(train)))

    return _train_stage(STAGE_NAMES["head"], inputs, make, {"model": model, "from": None,
                                                            "audio_kind": features.get("kind")})


@stage(STAGE_NAMES["lips"], VERSION, timeout_s=TRAIN_TIMEOUT_S)
def train_lips(dataset: StageResult, head: StageResult, config: TrainStageConfig, lpips: Path | None = None,
               namespace: str | None = None) -> StageResult:
    """Lips fine-tune of the head (patch loss on the mouth every other step): LPIPS-Alex with the
    `lpips` weights (alex.pth; their content is in the cache key), else the structural substitute."""
    make = _previous_model(head, (STAGE_NAMES["head"],), "lips")
    inputs = {"dataset": dataset, "head": head, "config": config, "namespace": namespace}
    if lpips is not None:  # absent from the resume key when unused, as before
        inputs["lpips"] = lpips
    return _train_stage(STAGE_NAMES["lips"], inputs, make, {"model": head.meta.get("model"), "from": head.stage})


@stage(STAGE_NAMES["torso"], VERSION, timeout_s=TRAIN_TIMEOUT_S)
def train_torso(dataset: StageResult, lips: StageResult, config: TrainStageConfig,
                namespace: str | None = None) -> StageResult:
    """Torso field (head frozen), from the lips (or head) checkpoint."""
    make = _previous_model(lips, (STAGE_NAMES["lips"], STAGE_NAMES["head"]), "torso")
    inputs = {"dataset": dataset, "lips": lips, "config": config, "namespace": namespace}
    return _train_stage(STAGE_NAMES["torso"], inputs, make, {"model": lips.meta.get("model"), "from": lips.stage})


# --------------------------------------------------------------------------------- registry
class AvatarRecord(BaseModel):
    """`avatars/<person>.json`: what rendering needs to find a trained person by name."""

    person: str = Field(description="The person's name.")
    dataset: StageResult = Field(description="The dataset it was trained on.")
    head: StageResult = Field(description="The head stage's checkpoint.")
    lips: StageResult | None = Field(None, description="The lips stage's checkpoint, if trained.")
    torso: StageResult | None = Field(None, description="The torso stage's checkpoint, if trained.")
    updated: datetime = Field(default_factory=lambda: datetime.now(UTC), description="When it was registered.")

    def latest(self, with_torso: bool) -> StageResult:
        """The checkpoint to render: torso when asked for (and trained), else lips, else head."""
        if with_torso:
            if self.torso is None:
                raise InputError(f"the avatar {self.person!r} has no torso stage; train it (stage 'auto' or "
                                 "'torso') or render with with_torso=False")
            return self.torso
        return self.lips or self.head

    @property
    def features(self) -> dict:
        return self.dataset.meta.get("features") or {}


def avatar_key(person: str) -> str:
    return f"{AVATARS_DIR}/{validate_name(person, 'person')}.json"


def known_avatars() -> list[str]:
    return [Path(k).stem for k in get_store().list_keys(AVATARS_DIR) if k.endswith(".json")]


def write_avatar(record: AvatarRecord) -> None:
    """Written last, after every stage result it names is stored (one atomic write)."""
    get_store().write_text(avatar_key(record.person), record.model_dump_json())


def read_avatar(person: str) -> AvatarRecord:
    """The registered avatar; InputError naming the known ones when there is none."""
    store = get_store()
    text = store.read_text(avatar_key(person))
    if text is None:
        known = known_avatars()
        raise InputError(f"no avatar named {person!r}; known avatars: "
                         f"{', '.join(known) if known else 'none yet'} (train one with train_avatar)")
    try:
        record = AvatarRecord.model_validate_json(text)
    except pydantic.ValidationError as exc:
        raise InputError(f"the registry entry of {person!r} is unreadable ({exc.error_count()} errors); "
                         "train the avatar again") from exc
    for name in STAGES:
        result = getattr(record, name)
        if result is not None and not store.verify(result["checkpoint"]):
            raise InputError(f"the {name} checkpoint of avatar {person!r} is missing or corrupt (pruned?); "
                             "train the avatar again")
    return record


__all__ = [
    "AvatarRecord", "ModelPreset", "ResumeSlot", "STAGES", "TrainAvatarConfig", "TrainStageConfig",
    "artifact_key", "known_avatars", "model_config", "read_avatar", "resume_key", "train_head", "train_lips",
    "train_torso", "write_avatar",
]
