"""The presets: named settings for a config, in one registry.

A preset is a name, what it is for (the text the forms and `--help` show), and either the config's
arguments (`values`, nested as the config is; what they leave out keeps its default) or the
config's own classmethod that builds it (`factory`, for shapes a model defines for notebook use
too). Importing this module imports neither torch nor Prefect; `build` imports the config when
asked. The flows' own configs (preprocess, render) are passed in as `cls` by the flows: this
module names no flow.

    build("train", "cpu-demo")            # a TrainAvatarConfig
    ernerf_model("small", audio_dim=80, n_train=300)
    names("pti") -> ("reference", "fallback", "tiny")

Adding a preset is one entry in PRESETS.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from talkflow.errors import InputError


@dataclass(frozen=True)
class Preset:
    kind: str  # what it configures: a key of CONFIGS
    name: str
    description: str
    values: Mapping[str, Any] = field(default_factory=dict)  # set on top of the config's defaults
    factory: str | None = None  # "module:Class.method" building the config instead


# kind -> the config class it builds ("module:Class"); the flows' kinds get theirs from the caller
CONFIGS: dict[str, str | None] = {
    "train": "tasks.train_config:TrainAvatarConfig",
    "ernerf_model": "models.ernerf.model:ModelConfig",
    "pti": "models.nerffacespeech.config:PTIConfig",
    "generator": "models.nerffacespeech.config:GeneratorConfig",
    "preprocess": None,  # flows.preprocess.PreprocessConfig
    "render": None,  # flows.render.RenderVideoConfig
}

# the cpu-demo training: MLPs at 5x the reference's rate, the audio attention at the reference's own
# 5e-3 (at 5x that it collapses onto one neighbouring frame)
_QUICK = {"rays_per_batch": 1024, "lr_net": 5e-3, "checkpoint_every": 100, "val_downscale": 2,
          "overrides": {"attention_lr_mult": 1.0}}
_SMALL_GRID = {"num_levels": 6, "features_per_level": 2, "base_resolution": 8, "desired_resolution": 96,
               "log2_hashmap_size": 11}

PRESETS: tuple[Preset, ...] = (
    Preset("train", "reference", "ER-NeRF's model sizes and schedule (head 100k, lips 25k, torso 200k steps; "
           "hours on a GPU)."),
    Preset("train", "cpu-demo", "The demo's small model and short schedule: minutes on 2 CPU cores for a 256 px "
           "clip of a few seconds (a toy avatar).",
           {"model": "small", "head": {"steps": 300, **_QUICK},
            "lips": {**_QUICK, "steps": 30, "rays_per_batch": 512, "lr_net": None, "overrides": {}},
            "torso": {"steps": 600, **_QUICK}}),
    Preset("ernerf_model", "reference", "ER-NeRF's sizes (a 12-level head hash grid up to 512, 64-wide MLPs)."),
    Preset("ernerf_model", "small", "A CPU-sized model: 6-level head grid up to 96, 32-wide MLPs, 24 samples "
           "per ray.",
           {"audio": {"code_dim": 16},
            "head": {"grid": _SMALL_GRID, "geo_feat_dim": 15, "sigma_hidden": 32, "color_hidden": 32,
                     "audio_att_hidden": 32},
            "torso": {"grid": {"num_levels": 4, "features_per_level": 2, "base_resolution": 8,
                               "desired_resolution": 64, "log2_hashmap_size": 10, "grid_type": "tiled"}},
            "render": {"step_size": 0.04, "max_samples": 24}, "occupancy": {"resolution": 32}}),
    Preset("preprocess", "reference", "ER-NeRF's preprocessing: 512 px frames, photometric 3DMM refinement."),
    Preset("preprocess", "cpu-demo", "The demo's: 256 px frames (dlib needs faces of about 80 px), landmark-only "
           "3DMM tracking.", {"normalize": {"size": 256}, "tracking": {"photometric": False}}),
    Preset("render", "reference", "Full resolution, the trained torso."),
    Preset("render", "preview", "Half resolution upscaled, the original torso frames (fast previews; the demo's).",
           {"render": {"downscale": 2, "with_torso": False}}),
    Preset("pti", "reference", "PTI's own settings (450 inversion + 350 tuning steps), for a pretrained generator."),
    Preset("pti", "fallback", "For the small randomly initialised generator: 100 inversion steps, a 10x tuning "
           "rate (about 100 s on one CPU core).", factory="models.nerffacespeech.config:PTIConfig.fallback"),
    Preset("pti", "tiny", "A few seconds on a CPU with a tiny generator (tests).",
           factory="models.nerffacespeech.config:PTIConfig.tiny"),
    Preset("generator", "eg3d-ffhq512", "EG3D's FFHQ 512 checkpoint shape (ffhqrebalanced512-128.pkl)."),
    Preset("generator", "small", "The CPU-sized fallback: 64 px images from a 32 px rendering, about 0.3 M "
           "parameters.", factory="models.nerffacespeech.config:GeneratorConfig.small"),
)

TrainPreset = Literal["reference", "cpu-demo"]  # names("train"); a test keeps the two equal
ModelPreset = Literal["reference", "small"]  # names("ernerf_model")


def names(kind: str) -> tuple[str, ...]:
    found = tuple(p.name for p in PRESETS if p.kind == kind)
    if not found:
        raise InputError(f"no presets of kind {kind!r}; kinds are {', '.join(CONFIGS)}")
    return found


def get(kind: str, name: str) -> Preset:
    for p in PRESETS:
        if p.kind == kind and p.name == name:
            return p
    raise InputError(f"unknown {kind} preset {name!r}; use one of {', '.join(names(kind))}")


def describe(kind: str) -> str:
    """'name: what it is for; ...' of every preset of `kind` (help texts and form descriptions)."""
    return "; ".join(f"{p.name}: {p.description.rstrip('.')}" for p in PRESETS if p.kind == kind) + "."


def _load(ref: str) -> Any:
    module, _, path = ref.partition(":")
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `top` written over it, nested mappings merged key by key."""
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def build(kind: str, name: str, *, cls: type | None = None, **values: Any) -> Any:
    """The preset's config, with `values` (nested) on top. `cls`: the config class of a flow's kind."""
    preset = get(kind, name)
    if preset.factory is not None:
        config = _load(preset.factory)()
        return type(config).model_validate(merge(config.model_dump(), values)) if values else config
    if cls is None:
        if CONFIGS[kind] is None:
            raise TypeError(f"{kind} presets configure a flow's config: pass it as cls")
        cls = _load(CONFIGS[kind])
    return cls.model_validate(merge(preset.values, values))


_UNSET = object()


def changed_fields(config: Any) -> dict[str, Any]:
    """The fields of a pydantic `config` that were given and differ from its class's defaults
    (nested). A field left out is never a change: `{"head": {"steps": 100}}` changes head.steps
    alone, though head's other fields then hold their class defaults (empty), which differ from
    the config's default head (the reference's values written out)."""

    def diff(value: Any, default: Any) -> Any:
        if isinstance(value, dict) and isinstance(default, dict):
            out = {k: diff(v, default.get(k, _UNSET)) for k, v in value.items()}
            return {k: v for k, v in out.items() if v is not _UNSET}
        return _UNSET if value == default else value

    out = diff(config.model_dump(exclude_unset=True), type(config)().model_dump())
    return {} if out is _UNSET else out


def on_preset(config: Any, kind: str, name: str) -> Any:
    """The preset `name`, with every field of `config` that differs from the default applied on top
    (a form sends the whole config: its untouched fields give way to the preset's)."""
    preset = get(kind, name)
    if not preset.values and preset.factory is None:
        return config  # a preset of the defaults: the config as given
    return build(kind, name, cls=type(config), **changed_fields(config))


def ernerf_model(name: str, audio_dim: int, n_train: int) -> Any:
    """The ER-NeRF model config of a size preset for a dataset: its feature width and frame count."""
    codes = max(10_000, n_train)  # reference ind_num; must cover the training frames
    return build("ernerf_model", name, audio={"in_dim": audio_dim}, num_appearance_codes=codes)


__all__ = ["CONFIGS", "ModelPreset", "PRESETS", "Preset", "TrainPreset", "build", "changed_fields", "describe",
           "ernerf_model", "get", "merge", "names", "on_preset"]
