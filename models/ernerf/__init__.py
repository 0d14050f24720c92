"""ER-NeRF (Li et al., ICCV 2023) in pure PyTorch: audio-driven talking-portrait NeRF with a
tri-plane hash encoding, region-aware attention and a separate torso field.

Modules: encodings (hash grids), audio (audio/eye conditioning), fields (head, torso), occupancy
(empty-space skipping), rendering (rays, sampling, volume rendering), losses (+ metrics), dataset
(docs/dataset.md layout), model (the assembled module) and trainer (stages, checkpoints).
"""

from models.ernerf.audio import AudioConfig
from models.ernerf.dataset import ERNeRFDataset, check_dataset, downscale_split, load_split
from models.ernerf.encodings import HashGridConfig
from models.ernerf.fields import HeadFieldConfig, TorsoFieldConfig
from models.ernerf.model import ERNeRF, ModelConfig
from models.ernerf.occupancy import OccupancyConfig
from models.ernerf.rendering import RenderConfig
from models.ernerf.trainer import (
    HeadTrainConfig,
    LipsTrainConfig,
    TorsoTrainConfig,
    TrainConfig,
    Trainer,
    load_model,
    stage_config,
)

__all__ = [
    "AudioConfig", "ERNeRF", "ERNeRFDataset", "HashGridConfig", "HeadFieldConfig", "HeadTrainConfig",
    "LipsTrainConfig", "ModelConfig", "OccupancyConfig", "RenderConfig", "TorsoFieldConfig",
    "TorsoTrainConfig", "TrainConfig", "Trainer", "check_dataset", "downscale_split", "load_model", "load_split",
    "stage_config",
]
