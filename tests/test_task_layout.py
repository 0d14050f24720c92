"""tasks/ is split by job, and its modules import one another only downwards, by an explicit
table of layers; moving a task between modules keeps its cache key (name + version + inputs)."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

ROOT = Path(__file__).resolve().parents[1]

# A tasks module may import tasks modules of LOWER layers only: none of its own layer (sideways)
# nor of a higher one (upwards). A new module gets a line here.
LAYERS: dict[str, int] = {
    # helpers every stage uses, and the presets (data only)
    "inputs": 0, "presets": 0,
    # what stages share: records by name, progress and outputs, resume slots
    "registry": 1, "outputs": 1, "resume": 1,
    # the stages, and the training settings
    "train_config": 2, "media": 2, "speech": 2, "features": 2, "preprocess": 2, "tracking": 2,
    "dataset": 2, "portrait": 2, "sample_clip": 2, "evaluation": 2,
    # stages built on other stages' helpers (the dataset folder, held-out figures)
    "train": 3, "render": 3,
}


def tasks_imports(path: Path) -> set[str]:
    """The tasks modules `path` imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "tasks":
                found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tasks.")}
    return found


def test_every_tasks_module_has_a_layer_and_imports_only_downwards():
    modules = {p.stem: p for p in (ROOT / "tasks").glob("*.py") if p.stem != "__init__"}
    assert set(modules) == set(LAYERS), "give each tasks module a layer in LAYERS"
    bad = [f"tasks.{name} (layer {LAYERS[name]}) imports tasks.{dep} (layer {LAYERS[dep]})"
           for name, path in sorted(modules.items()) for dep in sorted(tasks_imports(path))
           if LAYERS[dep] >= LAYERS[name]]
    assert bad == []


def test_rendering_never_imports_training_and_tasks_never_import_flows():
    for path in (ROOT / "tasks").glob("*.py"):
        tree = ast.parse(path.read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(m.split(".")[0] == "flows" for m in modules), path.name
    assert "train" not in tasks_imports(ROOT / "tasks" / "render.py")
    assert "train" not in tasks_imports(ROOT / "tasks" / "render.py") | tasks_imports(ROOT / "flows" / "render.py")


def test_the_layer_check_sees_a_sideways_import(tmp_path):
    bad = tmp_path / "render.py"
    bad.write_text("def f():\n    from tasks.train import train_head\n")
    assert tasks_imports(bad) == {"train"} and LAYERS["train"] >= LAYERS["render"]


def test_moved_tasks_keep_their_cache_keys():
    """Keys computed before the split (when audio_features was in tasks.preprocess and the training
    configs in tasks.train): the stage name, version and config class names are unchanged, so an
    earlier run's entries are hits."""
    from models.audio.features import AudioFeatureConfig
    from talkflow.cache import cache_key
    from talkflow.store import Artifact, StageResult
    from tasks import presets
    from tasks.features import audio_features
    from tasks.render import RenderConfig, render_frames_stage
    from tasks.train import train_head, train_lips
    from tasks.train_config import TrainAvatarConfig

    wav = Artifact(key="objects/aa/a.wav", sha256="a" * 64, size=10)
    ds = StageResult(stage="dataset", version="1", namespace="ana", artifacts={"x": wav}, meta={"n": 1},
                     created=datetime(2026, 1, 1, tzinfo=UTC))

    def key(t, inputs):
        return cache_key(t.name, t.version, inputs).rsplit(".", 1)[-1][:16]

    assert key(audio_features, {"audio": wav, "n_frames": 10, "config": AudioFeatureConfig(), "model_dir": None,
                                "deepspeech": None, "namespace": "ana"}) == "c92a2a097bc275e8"
    demo = presets.build("train", "cpu-demo")
    assert key(train_head, {"dataset": ds, "config": demo.head, "model": "small", "namespace": "ana"}) \
        == "92d61d7e9d1eb800"
    assert key(train_lips, {"dataset": ds, "head": ds, "config": TrainAvatarConfig().lips, "lpips": None,
                            "namespace": "ana"}) == "f86dd4613e6b5ca3"
    assert key(render_frames_stage, {"avatar": ds, "dataset": ds, "features": ds, "config": RenderConfig(),
                                     "namespace": "ana"}) == "2db08865f0d9564e"


def test_presets_are_one_registry_that_the_literals_and_forms_follow():
    from pydantic import BaseModel

    from tasks import presets
    from tasks.train_config import TrainAvatarConfig

    assert get_args(presets.TrainPreset) == presets.names("train")
    assert get_args(presets.ModelPreset) == presets.names("ernerf_model")
    for p in presets.PRESETS:
        assert p.description and (not p.values or p.factory is None), p
        if presets.CONFIGS[p.kind] is not None:
            assert isinstance(presets.build(p.kind, p.name), BaseModel)
    assert presets.build("train", "reference") == TrainAvatarConfig()
    small = presets.ernerf_model("small", audio_dim=29, n_train=12_000)
    assert small.audio.in_dim == 29 and small.num_appearance_codes == 12_000 and small.head.grid.num_levels == 6
    assert presets.ernerf_model("reference", 80, 10).head.grid.num_levels == 12
    assert presets.build("pti", "fallback").tuning_lr == 3e-3
    assert "cpu-demo: " in presets.describe("train")
    import pytest

    from talkflow.errors import InputError

    with pytest.raises(InputError, match="unknown train preset 'fast'; use one of reference, cpu-demo"):
        presets.build("train", "fast")
