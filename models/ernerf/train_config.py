"""The trainer's configs (one per stage): torch-free, so that the train flow's parameters import
without the model (models.ernerf.trainer keeps them importable under their old names)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from talkflow.errors import InputError


class TrainConfig(BaseModel):
    """Shared training settings; defaults follow ER-NeRF's main.py / utils.py (head stage)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: Literal["head", "lips", "torso"] = Field("head",
        description="Which stage: head, lips (fine-tune with a patch loss) or torso (head frozen).")
    steps: int = Field(100_000, ge=1, description="Optimisation steps.")
    rays_per_batch: int = Field(4096 * 16, ge=1, description="Rays per step (reference num_rays).")
    lr: float = Field(1e-2, description="Learning rate of the hash tables.")
    lr_net: float = Field(1e-3, description="Learning rate of the MLPs, audio nets and latent codes.")
    lr_final_ratio: float = Field(0.5, description="lr(t) = lr * ratio ** (t / steps).")
    betas: tuple[float, float] = Field((0.0, 0.99), description="Adam betas.")
    eps: float = Field(1e-8, description="Adam epsilon.")
    table_weight_decay: float = Field(1e-2,
        description="Weight decay of the hash tables (AdamW's default, which the reference leaves on).")
    attention_lr_mult: float = Field(5.0,
        description="The audio attention net learns at lr_net times this (weight decay attention_weight_decay).")
    attention_weight_decay: float = Field(1e-4, description="Weight decay of the audio attention net.")
    attention_warmup_steps: int = Field(0, ge=0,
        description="The first N steps of a stage condition each frame on its own audio code, the attention "
                    "skipped (AD-NeRF's warm-up before smoothing; 0: the reference, attention from the start).")
    uncertainty_loss: bool = Field(True, description="Weight the photometric loss by the predicted uncertainty.")
    lambda_entropy: float = Field(1e-4,
        description="Weight of the binary entropy of the opacity (head) or torso alpha.")
    lambda_ambient: float = Field(1e-4,
        description="Weight of the region-attention regularisers (ramped in with the step).")
    lambda_smooth: float = Field(1e-5,
        description="Weight of the smoothness of attention and uncertainty under 1e-3 jitter.")
    smooth_every: int = Field(16, description="Steps between smoothness-loss evaluations.")
    eye_noise: float = Field(0.1, description="Training eye closure += U(-eye_noise/2, eye_noise/2).")
    mouth_weight: float = Field(1.0, ge=1.0,
        description="Head and lips stages: the squared error of a ray inside the lips box counts this many times "
                    "(1: the reference; the mouth is about 2 % of a frame's pixels).")
    patch_weight: float = Field(0.01, description="Lips stage: weight of the lips patch loss (reference LPIPS weight).")
    min_patch: int = Field(32, description="Lips patches are padded to at least this side, px.")
    alternate_lips: bool = Field(True,
        description="Lips stage: the lips patch on even steps, random patches on odd ones.")
    random_patch_size: int = Field(32, ge=0, description="Lips stage odd steps: patches of this side (0: random rays).")
    random_patch_weight: float = Field(0.1, description="Patch loss weight of the random patches.")
    ema_decay: float = Field(0.95, ge=0, lt=1, description="EMA decay of the trained weights (reference torch_ema).")
    ema_every: int = Field(1000, ge=0, description="Steps between EMA updates; 0: no EMA.")
    sync_every: int = Field(16, ge=1,
        description="train() reads the step losses back every N steps (fewer host syncs).")
    lambda_anchor: float = Field(1.0, description="Torso: weight keeping the anchors' homogeneous w near 1.")
    mixed_precision: bool = Field(True, description="fp16 autocast with gradient scaling (CUDA only).")
    checkpoint_every: int = Field(0, ge=0, description="Steps between checkpoints; 0: never.")
    seed: int = Field(0, description="Seed of the ray sampling and initialisation.")
    device_data_share: float = Field(
        0.5, ge=0, le=1,
        description="The training frames live in GPU memory when they fit in this share of the memory the "
                    "process may use (free plus PyTorch's cached-but-unused); otherwise they stay in pinned host "
                    "memory and each step uploads its frame asynchronously. 0: always on the host.")


class HeadTrainConfig(TrainConfig):
    stage: Literal["head"] = Field("head", description="The head stage.")


class LipsTrainConfig(TrainConfig):
    """The reference continues the head run (100k -> 125k) with decay 0.05 ** (t / 125k): it starts
    at 0.091x the base rates and ends at 0.05x; we start a fresh optimiser at those rates."""

    stage: Literal["lips"] = Field("lips", description="The lips stage.")
    steps: int = Field(25_000, description="Optimisation steps (the reference: 25k after the head's 100k).")
    lr: float = Field(1e-2 * 0.05 ** 0.8,
        description="Learning rate of the hash tables: the reference's rate at step 100k of its decay.")
    lr_net: float = Field(1e-3 * 0.05 ** 0.8,
        description="Learning rate of the MLPs: the reference's rate at step 100k of its decay.")
    lr_final_ratio: float = Field(0.05 ** 0.2,
        description="lr(t) = lr * ratio ** (t / steps): ends at the reference's 0.05x.")
    uncertainty_loss: bool = Field(False, description="Off while fine-tuning the lips, as the reference.")


class TorsoTrainConfig(TrainConfig):
    stage: Literal["torso"] = Field("torso", description="The torso stage.")
    steps: int = Field(200_000, description="Optimisation steps (the reference's 200k).")
    uncertainty_loss: bool = Field(False, description="Off for the torso, as the reference.")


def stage_config(stage: str, **overrides) -> TrainConfig:
    """The stage's config class with its defaults, overridden by ``overrides``."""
    classes = {"head": HeadTrainConfig, "lips": LipsTrainConfig, "torso": TorsoTrainConfig}
    if stage not in classes:
        raise InputError(f"unknown stage {stage!r}; use one of {sorted(classes)}")
    return classes[stage](**overrides)
