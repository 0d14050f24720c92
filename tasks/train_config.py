"""The settings of ER-NeRF training, as the train flow's form shows them: the model size and each
stage's steps, rays and rates. Named presets of them (reference, cpu-demo) are in tasks.presets."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import BaseModel, Field

from models.ernerf.train_config import TrainConfig, stage_config
from talkflow.errors import InputError
from talkflow.forms import PLAIN_OPTIONALS
from tasks.presets import ModelPreset, describe
from tasks.registry import STAGE_NAMES, TRAIN_STAGES

STAGES = TRAIN_STAGES
OWN_FIELDS = ("stage", "checkpoint_every", "seed")  # set by the stage config itself, never by overrides
# the trainer settings `overrides` may set: every TrainConfig field the stage config does not own
TrainOption = Literal[tuple(f for f in TrainConfig.model_fields if f not in OWN_FIELDS)]  # type: ignore[valid-type]


class TrainStageConfig(BaseModel):
    """One training stage. Empty fields take the reference's value for that stage
    (models.ernerf.trainer.stage_config: head 100k steps, lips 25k, torso 200k; 65536 rays)."""

    model_config = PLAIN_OPTIONALS

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
    overrides: dict[TrainOption, Any] = Field(
        default_factory=dict, description="Other trainer settings by name, e.g. {\"lambda_entropy\": 0}: any field of "
        "models.ernerf.trainer.TrainConfig (each described there) but stage, seed and checkpoint_every.")

    @classmethod
    def reference(cls, stage_name: str) -> TrainStageConfig:
        """The stage's reference steps, rays and learning rates written out (a form shows them)."""
        ref = stage_config(stage_name)
        return cls(steps=ref.steps, rays_per_batch=ref.rays_per_batch, lr=ref.lr, lr_net=ref.lr_net)

    def train_config(self, stage_name: str) -> TrainConfig:
        """The trainer's config: the stage's reference defaults, then the set fields, then overrides."""
        fields = {k: v for k, v in (("steps", self.steps), ("rays_per_batch", self.rays_per_batch),
                                    ("lr", self.lr), ("lr_net", self.lr_net)) if v is not None}
        try:
            return stage_config(stage_name, **fields, **self.overrides, seed=self.seed,
                                checkpoint_every=self.checkpoint_every)
        except pydantic.ValidationError as exc:
            errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise InputError(f"bad {stage_name} training config: {errors}") from exc


class TrainAvatarConfig(BaseModel):
    """The three stages and the model size. Defaults are the reference schedule (hours on a GPU)."""

    model: ModelPreset = Field("reference", description="The model's size: " + describe("ernerf_model"))
    head: TrainStageConfig = Field(default_factory=lambda: TrainStageConfig.reference("head"),
                                   description="Stage 1: the head on the whole frame.")
    lips: TrainStageConfig = Field(default_factory=lambda: TrainStageConfig.reference("lips"),
                                   description="Stage 2: the head fine-tuned on the lips (patch loss).")
    torso: TrainStageConfig = Field(default_factory=lambda: TrainStageConfig.reference("torso"),
                                    description="Stage 3: the torso, with the head frozen.")

    def validate_stages(self) -> None:
        """Raise InputError for a bad override before any work starts."""
        for name in STAGES:
            getattr(self, name).train_config(name)


__all__ = ["STAGES", "STAGE_NAMES", "TrainAvatarConfig", "TrainOption", "TrainStageConfig"]
