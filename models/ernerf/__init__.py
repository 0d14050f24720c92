"""ER-NeRF (Li et al., ICCV 2023) in pure PyTorch: audio-driven talking-portrait NeRF with a
tri-plane hash encoding, region-aware attention and a separate torso field.

Modules: encodings (hash grids), audio (audio/eye conditioning), fields (head, torso), occupancy
(empty-space skipping), rendering (rays, sampling, volume rendering), losses (+ metrics), dataset
(docs/dataset.md layout), model (the assembled module) and trainer (stages, checkpoints).
"""

# Imported on first use (PEP 562): importing one submodule (e.g. a torch-free config) does not
# import the others.
from models.lazy import lazy_exports

_EXPORTS = {
    "AudioConfig": "models.ernerf.audio",
    "ERNeRFDataset": "models.ernerf.dataset",
    "check_dataset": "models.ernerf.dataset",
    "downscale_split": "models.ernerf.dataset",
    "load_split": "models.ernerf.dataset",
    "HashGridConfig": "models.ernerf.encodings",
    "HeadFieldConfig": "models.ernerf.fields",
    "TorsoFieldConfig": "models.ernerf.fields",
    "ERNeRF": "models.ernerf.model",
    "ModelConfig": "models.ernerf.model",
    "OccupancyConfig": "models.ernerf.occupancy",
    "RenderConfig": "models.ernerf.rendering",
    "HeadTrainConfig": "models.ernerf.train_config",
    "LipsTrainConfig": "models.ernerf.train_config",
    "TorsoTrainConfig": "models.ernerf.train_config",
    "TrainConfig": "models.ernerf.train_config",
    "Trainer": "models.ernerf.trainer",
    "load_model": "models.ernerf.trainer",
    "stage_config": "models.ernerf.train_config",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
