"""The deployments' run forms: every field says what it means, defaults show as values.

The Prefect UI draws a deployment's form from its parameter_openapi_schema, which `prefect deploy`
builds with prefect.utilities.callables.parameter_schema: the same schema is checked here for
every deployment of prefect.yaml (and, on a real server, in test_production).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


def form_schema(entrypoint: str) -> dict:
    from prefect.utilities.callables import parameter_schema

    module, _, fn = entrypoint.partition(":")
    return parameter_schema(getattr(importlib.import_module(module), fn)).model_dump_for_openapi()


def _ref(prop: dict) -> str | None:
    for candidate in [prop, *prop.get("anyOf", []), *prop.get("allOf", [])]:
        if "$ref" in candidate:
            return candidate["$ref"].rsplit("/", 1)[-1]
    return None


def form_fields(schema: dict) -> dict[str, dict]:
    """Every field of the form by dotted path: parameters, nested config objects and their leaves."""
    defs = schema.get("definitions", {})
    out: dict[str, dict] = {}

    def walk(props: dict, prefix: str, seen: frozenset) -> None:
        for name, prop in props.items():
            path = prefix + name
            out[path] = prop
            ref = _ref(prop)
            if ref and ref not in seen and "properties" in defs.get(ref, {}):
                walk(defs[ref]["properties"], path + ".", seen | {ref})

    walk(schema.get("properties", {}), "", frozenset())
    return out


def undescribed(schema: dict) -> list[str]:
    return [path for path, prop in form_fields(schema).items() if not prop.get("description")]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_every_form_field_has_help_text(deployment):
    schema = form_schema(deployment["entrypoint"])
    fields = form_fields(schema)
    assert len(fields) >= 2
    assert undescribed(schema) == []


def test_train_form_asks_for_a_name_and_shows_the_reference_numbers():
    schema = form_schema("flows.train:train_avatar")
    assert schema["required"] == ["person"] and "dataset" not in schema["properties"]
    assert "preprocess" in schema["properties"]["person"]["description"]
    config = schema["properties"]["config"]["default"]
    assert config["head"]["steps"] == 100_000 and config["lips"]["steps"] == 25_000
    assert config["torso"]["steps"] == 200_000 and config["head"]["rays_per_batch"] == 65_536
    assert all(config[s]["lr"] > 0 and config[s]["lr_net"] > 0 for s in ("head", "lips", "torso"))


def test_train_finds_the_dataset_by_name_and_says_when_there_is_none():
    from flows.train import train_avatar
    from talkflow.errors import InputError

    with pytest.raises(InputError, match="no dataset for 'nobody-yet': run preprocess"):
        train_avatar("nobody-yet")


@pytest.mark.parametrize("name", ["render", "infer", "portrait"])
def test_one_of_audio_or_text_is_stated_in_the_form(name):
    deployment = next(d for d in DEPLOYMENTS if d["name"] == name)
    schema = form_schema(deployment["entrypoint"])
    for param in ("audio", "text"):
        assert "exactly one of audio or text" in schema["properties"][param]["description"]
    assert "exactly one of audio or text" in deployment["description"]


def test_train_form_offers_the_cpu_demo_preset():
    from tasks import presets
    from tasks.train_config import TrainAvatarConfig, TrainStageConfig

    schema = form_schema("flows.train:train_avatar")
    prop = schema["properties"]["preset"]
    assert prop["default"] == "reference" and set(prop["enum"]) == set(presets.names("train"))
    assert "minutes" in prop["description"]
    # each preset's own text reaches the form: the model sizes, the trainer's settings by name
    model = schema["definitions"]["TrainAvatarConfig"]["properties"]["model"]
    assert set(model["enum"]) == set(presets.names("ernerf_model"))
    assert presets.get("ernerf_model", "small").description.rstrip(".") in model["description"]
    overrides = schema["definitions"]["TrainStageConfig"]["properties"]["overrides"]
    assert "lambda_entropy" in overrides["propertyNames"]["enum"] and "seed" not in overrides["propertyNames"]["enum"]
    # the form sends the whole config: untouched fields give way to the preset, changed ones win
    demo = presets.build("train", "cpu-demo")
    assert presets.on_preset(TrainAvatarConfig(), "train", "cpu-demo") == demo
    edited = TrainAvatarConfig(head=TrainStageConfig.reference("head").model_copy(update={"steps": 7}))
    on_demo = presets.on_preset(edited, "train", "cpu-demo")
    assert on_demo.head.steps == 7 and on_demo.head.rays_per_batch == demo.head.rays_per_batch
    assert on_demo.model == "small" and on_demo.torso == demo.torso
    assert presets.on_preset(edited, "train", "reference") == edited
    assert presets.on_preset(demo, "train", "reference") == demo
    # a config given in part (a deployment's parameters, a Python caller) changes only what it
    # names, also after the API has carried it to a worker; the preset keeps the rest
    from talkflow.api import _jsonable

    part = TrainAvatarConfig(head=TrainStageConfig(steps=100))
    for given in (part, TrainAvatarConfig.model_validate(_jsonable(part)),
                  TrainAvatarConfig.model_validate({"head": {"steps": 100}})):
        on_demo = presets.on_preset(given, "train", "cpu-demo")
        assert on_demo.head == demo.head.model_copy(update={"steps": 100}) and on_demo.lips == demo.lips


def test_ernerf_configs_describe_every_field():
    """ER-NeRF's model and training configs reach the forms (presets, overrides): each field says what it is."""
    from models.ernerf.model import ModelConfig
    from models.ernerf.trainer import HeadTrainConfig, LipsTrainConfig, TorsoTrainConfig, TrainConfig

    for cls in (ModelConfig, TrainConfig, HeadTrainConfig, LipsTrainConfig, TorsoTrainConfig):
        schema = cls.model_json_schema()
        models = [schema, *schema.get("$defs", {}).values()]
        assert len(models) >= (7 if cls is ModelConfig else 1)
        assert [f"{m['title']}.{k}" for m in models for k, v in m["properties"].items()
                if not v.get("description")] == []


# -- forms a person fills: no internal records, no null toggles, closed choices as drop-downs ----------
INTERNAL_TYPES = {"Artifact", "StageResult", "AvatarRecord", "SourceRecord"}
CHOICE_FIELDS = {"engine", "renderer", "preset", "kind", "model", "stage", "method", "mouth"}


def schema_nodes(node, path: str = ""):
    """Every dict of a JSON schema with its path."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from schema_nodes(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from schema_nodes(value, f"{path}/{i}")


def null_toggles(schema: dict) -> list[str]:
    """Where the UI would draw a "type None" toggle: an anyOf/oneOf with a null option."""
    return [path for path, node in schema_nodes(schema) for key in ("anyOf", "oneOf")
            if any(isinstance(o, dict) and o.get("type") == "null" for o in node.get(key, []))]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_forms_hold_no_internal_record_and_no_null_toggle(deployment):
    schema = form_schema(deployment["entrypoint"])
    internal = INTERNAL_TYPES | {name for name in schema.get("definitions", {}) if name.endswith("Result")}
    assert set(schema.get("definitions", {})) & internal == set()
    refs = {node["$ref"].rsplit("/", 1)[-1] for _, node in schema_nodes(schema) if "$ref" in node}
    assert refs & internal == set()
    assert null_toggles(schema) == []
    # a closed choice is a drop-down (enum), never free text checked by a pattern
    for path, prop in form_fields(schema).items():
        assert "|" not in prop.get("pattern", ""), f"{path}: a choice written as a pattern"
        if path.rsplit(".", 1)[-1] in CHOICE_FIELDS and prop.get("type") == "string":
            assert prop.get("enum"), f"{path} is a closed choice without a drop-down"


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_a_form_sent_with_its_defaults_passes_the_servers_check(deployment):
    """What the UI sends (every default filled in, empty optional values as null) is accepted by the
    server's own parameter check, and by the flow's."""
    from prefect.utilities.schema_tools.validation import validate

    schema = form_schema(deployment["entrypoint"])
    sent = {name: prop["default"] for name, prop in schema["properties"].items() if "default" in prop}
    sent.update({name: "x" for name in schema.get("required", [])})
    assert validate(sent, schema, raise_on_error=False) == []


def test_text_or_audio_is_one_plain_choice_and_python_callers_keep_paths_and_none(tmp_path):
    from flows.portrait import generate_from_portrait
    from flows.render import render

    schema = form_schema("flows.render:render")
    props = schema["properties"]
    assert props["text"] == {**props["text"], "type": "string", "default": ""}
    assert props["audio"]["type"] == "string" and props["audio"]["default"] == ""
    assert "avatar" not in props and "audio" not in schema["definitions"]["RenderVideoConfig"]["properties"]
    engine = schema["definitions"]["SpeechConfig"]["properties"]["engine"]
    assert engine["enum"] == ["auto", "piper", "espeak"] and engine["default"] == "auto"
    # Python callers: a Path, or None for the one not given
    wav = tmp_path / "a.wav"
    params = render.validate_parameters({"person": "ann", "audio": wav, "text": None})
    assert params["audio"] == str(wav) and params["text"] == ""
    params = generate_from_portrait.validate_parameters(
        {"character": "c", "image": tmp_path / "p.png", "text": "Hi.", "audio": None, "transcript": None})
    assert params["audio"] == "" and params["text"] == "Hi." and params["transcript"] == ""


def test_train_form_shows_reference_numbers_without_toggles():
    schema = form_schema("flows.train:train_avatar")
    steps = schema["definitions"]["TrainStageConfig"]["properties"]["steps"]
    assert steps["type"] == "integer" and "default" not in steps  # the config's default fills it in
    assert schema["properties"]["config"]["default"]["head"]["steps"] == 100_000
