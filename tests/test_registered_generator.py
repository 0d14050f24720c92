"""The registered-generator path as a user meets it: doctor and the assets table say what
load_generator accepts and how to convert EG3D's .pkl; a .pkl is refused with that command; a
registered generator gets PTI's own settings. And import-dataset's errors, before any work."""

from __future__ import annotations

from pathlib import Path

from flows.portrait import PortraitConfig
from flows.renderers.generator import pti_settings
from models.nerffacespeech.pti import PTIConfig
from tests.test_cli import talkflow


def test_doctor_and_assets_name_the_converted_checkpoint_and_the_converter(tmp_path):
    for args in (("doctor",), ("assets", "ls")):
        out = talkflow(*args, data_root=tmp_path, env={"COLUMNS": "400"})
        assert out.returncode == 0, out.stderr
        text = " ".join(out.stdout.split())
        assert "ffhq512.talkflow.pt" in text and "models.nerffacespeech.convert_eg3d" in text, text
        assert "ffhqrebalanced512-128.pkl" in text and "weights-only .pt" in text


def test_registering_an_eg3d_pickle_is_refused_with_the_conversion_command(tmp_path):
    pkl = tmp_path / "ffhqrebalanced512-128.pkl"
    pkl.write_bytes(b"\x80\x04not really")
    out = talkflow("assets", "add", "generator", str(pkl), data_root=tmp_path)
    assert out.returncode == 2 and "convert_eg3d" in out.stderr and "EG3D pickle" in out.stderr


def test_a_registered_generator_gets_ptis_own_settings():
    assert pti_settings(PortraitConfig(), Path("g.pt")) == PTIConfig()
    assert pti_settings(PortraitConfig(), None) == PTIConfig.fallback()
    tiny = PTIConfig.tiny()
    assert pti_settings(PortraitConfig(pti=tiny), Path("g.pt")) == tiny
    assert PTIConfig().tuning_lr == 3e-4 and PTIConfig.fallback().tuning_lr == 3e-3


def test_import_dataset_names_the_missing_parts(tmp_path):
    folder = tmp_path / "ref"
    (folder / "ori_imgs").mkdir(parents=True)
    (folder / "transforms_train.json").write_text("{}")
    home = tmp_path / "prefect-home"
    out = talkflow("import-dataset", str(folder), "--person", "someone", data_root=tmp_path / "root",
                   env={"PREFECT_HOME": str(home)})
    assert out.returncode == 2 and "missing transforms_val.json, parsing/, gt_imgs/" in " ".join(out.stderr.split())
    assert not (home / "prefect.db").exists()  # refused before any Prefect server started
