"""ER-NeRF training as cached, resumable stages: head -> lips -> torso.

Each stage is a `talkflow.cache.stage` task. Its cache key is the content of its arguments: the
dataset manifest, the stage config, and (lips, torso) the previous stage's result, whose
checkpoint sha256 enters the key, so a retrained head retrains what follows it. A stage resumes
from its latest checkpoint after a crash or a retry (tasks.resume). Settings: tasks.train_config
and tasks.presets; held-out figures: tasks.evaluation; progress and reports: tasks.outputs; the
avatar registry: tasks.registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from talkflow.cache import stage
from talkflow.errors import InputError
from talkflow.gpu import gpu_slot
from talkflow.settings import get_settings
from talkflow.store import StageResult, get_store
from tasks.dataset import materialize_dataset
from tasks.evaluation import validation_metrics
from tasks.inputs import local_file, scratch
from tasks.outputs import ProgressArtifact, publish_training, run_logger
from tasks.presets import ModelPreset, ernerf_model
from tasks.resume import ResumeSlot, resume_key
from tasks.train_config import STAGE_NAMES, TrainStageConfig

if TYPE_CHECKING:
    from models.ernerf.dataset import ERNeRFDataset
    from models.ernerf.model import ERNeRF

VERSION = "1"
TRAIN_TIMEOUT_S = 48 * 3600  # the reference schedule takes hours on one GPU


def _train_stage(stage_name: str, inputs: dict[str, Any], make_model: Callable[[ERNeRFDataset], ERNeRF],
                 extra_meta: dict[str, Any]) -> StageResult:
    """Materialize the dataset, build the model, train (resuming), validate, store the checkpoint."""
    import numpy as np  # the model's libraries load when a stage trains, not when a cached run reads it

    from models.ernerf.audio import attention_profile
    from models.ernerf.dataset import check_dataset, load_split
    from models.ernerf.trainer import Trainer

    short = stage_name.removeprefix("train_")
    dataset: StageResult = inputs["dataset"]
    config: TrainStageConfig = inputs["config"]
    namespace = inputs.get("namespace")
    lpips: Path | None = inputs.get("lpips")  # only the lips stage gets it: its patch loss and metric
    tcfg = config.train_config(short)
    log = run_logger()
    store = get_store()
    slot = ResumeSlot(store, resume_key(stage_name, VERSION, inputs))
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
            val_metrics = validation_metrics(trainer, val, frames=config.val_frames,
                                             downscale=config.val_downscale, lpips=lpips)
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
    publish_training(namespace, stage_name, meta)
    return StageResult(artifacts={"checkpoint": final}, meta=meta)


def _previous_model(previous: StageResult, allowed: tuple[str, ...], what: str) -> Callable[[ERNeRFDataset], ERNeRF]:
    if previous.stage not in allowed or "checkpoint" not in previous.artifacts:
        raise InputError(f"the {what} stage starts from a {' or '.join(allowed)} result, got "
                         f"{previous.stage or 'a result without a stage'}; train the earlier stage first")

    def make(_train: ERNeRFDataset) -> ERNeRF:
        from models.ernerf.trainer import load_model

        return load_model(local_file(previous["checkpoint"]), device="cpu")

    return make


@stage(STAGE_NAMES["head"], VERSION, timeout_s=TRAIN_TIMEOUT_S)
def train_head(dataset: StageResult, config: TrainStageConfig, model: ModelPreset = "reference",
               namespace: str | None = None) -> StageResult:
    """Head stage: the audio-conditioned head field over the GT torso (random rays)."""
    inputs = {"dataset": dataset, "config": config, "model": model, "namespace": namespace}
    features = dataset.meta.get("features") or {}

    def make(train: ERNeRFDataset) -> ERNeRF:
        import torch

        from models.ernerf.model import ERNeRF

        with torch.random.fork_rng(devices=[]):  # the same inputs give the same initial model
            torch.manual_seed(config.seed)
            return ERNeRF(ernerf_model(model, train.audio_dim, len(train)))

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


__all__ = ["TRAIN_TIMEOUT_S", "VERSION", "train_head", "train_lips", "train_torso"]
