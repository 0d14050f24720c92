"""The media contract and the feature-kind table (talkflow/contract.py): the one place they are written,
what derives from it, and every kind end to end through `talkflow features`."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import numpy as np
import pytest

from talkflow import contract
from talkflow.contract import COMPUTED_KINDS, FEATURES, SAMPLE_RATE, VIDEO_FPS, frame_count

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("talkflow", "tasks", "flows", "models", "pools", "bench", "scripts")
TABLE = ROOT / "talkflow" / "contract.py"


def source_files() -> list[Path]:
    return sorted(p for d in SOURCES for p in (ROOT / d).rglob("*.py") if p != TABLE)


def logical_lines(path: Path) -> list[tuple[int, list[tokenize.TokenInfo]]]:
    """(first line number, code tokens) of each logical line of a module: comments are dropped,
    strings stay whole (a docstring is one STRING token)."""
    lines, current = [], []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            if current:
                lines.append((current[0].start[0], current))
            current = []
        elif tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
            current.append(tok)
    return lines


def string_value(tok: tokenize.TokenInfo) -> str | None:
    try:
        value = ast.literal_eval(tok.string)
    except (ValueError, SyntaxError):  # f-strings
        return None
    return value if isinstance(value, str) else None


def test_the_table_is_the_only_list_of_feature_kinds():
    """No module outside talkflow/contract.py names two kinds in one statement (a tuple, Literal, dict,
    list of choices, or a help text listing them) or a kind inside a Literal: every such list derives
    from the table. Docstrings are prose and not checked."""
    found = []
    for path in source_files():
        for line, tokens in logical_lines(path):
            if len(tokens) == 1:  # a docstring
                continue
            strings = [t for t in tokens if t.type == tokenize.STRING]
            kinds = {w for t in strings for w in re.findall(r"[a-z0-9]+", t.string) if w in FEATURES}
            literal = any(t.string == "Literal" for t in tokens) and any(string_value(t) in FEATURES for t in strings)
            if len(kinds) >= 2 or literal:
                found.append(f"{path.relative_to(ROOT)}:{line} {sorted(kinds)}")
    assert found == []


def test_frame_and_sample_rates_are_written_only_in_the_table():
    """16 kHz as a number anywhere, or 25 on a line about frame rates, outside the table (comments
    and docstrings are prose, not checked)."""
    found = []
    for path in source_files():
        for line, tokens in logical_lines(path):
            numbers = {t.string.replace("_", "") for t in tokens if t.type == tokenize.NUMBER}
            about_fps = any("fps" in t.string.lower() or "frame_rate" in t.string.lower()
                            for t in tokens if t.type in (tokenize.NAME, tokenize.STRING) and len(t.string) < 40)
            if "16000" in numbers or (about_fps and numbers & {"25", "25.0"}):
                found.append(f"{path.relative_to(ROOT)}:{line}")
    assert found == []


def test_the_doc_page_is_the_table():
    page = ROOT / contract.DOC_PATH
    assert page.read_text() == contract.markdown(), "regenerate it: python -m talkflow.contract"
    for spec in FEATURES.values():
        assert f"| `{spec.name}` | {spec.width} |" in page.read_text()


def test_importing_the_table_loads_neither_torch_nor_prefect_nor_numpy():
    code = "import sys, talkflow.contract; print([m in sys.modules for m in ('torch', 'prefect', 'numpy')])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[False, False, False]"


def test_models_configs_assets_and_forms_derive_from_the_table():
    from typing import get_args

    from models.audio import features as af
    from models.ernerf.audio import FEATURE_DIMS
    from talkflow import assets
    from talkflow.checks import FeatureKind
    from tasks.dataset import REFERENCE_FEATURES

    assert FEATURE_DIMS == {k: s.width for k, s in FEATURES.items()} and FEATURE_DIMS["wav2vec2"] == 44
    assert get_args(FeatureKind) == COMPUTED_KINDS == ("logmel", "phonemes", "visemes", "hubert", "wav2vec2")
    schema = af.AudioFeatureConfig.model_json_schema()["properties"]["kind"]
    assert tuple(schema["enum"]) == COMPUTED_KINDS  # the Prefect form's choices
    assert all(s.name in schema["description"] for s in FEATURES.values() if s.computed)
    assert REFERENCE_FEATURES == {k: s.reference_file for k, s in FEATURES.items()}
    for spec in FEATURES.values():
        if spec.asset:
            assert assets.KNOWN[spec.asset].file == spec.asset_file
        if spec.computed:
            assert callable(af.feature_rows(spec.name))
    with pytest.raises(af.InputError, match="does not compute 'deepspeech'"):
        af.feature_rows("deepspeech")


@pytest.mark.parametrize("entrypoint, field", [("flows.features:extract_audio_features", "kind"),
                                                ("flows.preprocess:preprocess_video", "config.audio.kind")])
def test_forms_offer_the_tables_kinds(entrypoint, field):
    from tests.test_forms import form_fields, form_schema

    schema = form_schema(entrypoint)
    prop = form_fields(schema)[field]
    ref = next((c["$ref"].rsplit("/", 1)[-1] for c in [prop, *prop.get("allOf", [])] if "$ref" in c), None)
    enum = schema["definitions"][ref]["enum"] if ref else prop["enum"]
    assert enum == list(COMPUTED_KINDS)


@pytest.mark.parametrize("n_samples", [0, 1, 639, 640, 641, 16_000 * 3 + 17, 8_321])
def test_one_frame_count_rule(n_samples):
    """Every module counts a clip's frames the table's way: ceil(duration x fps)."""
    from models.audio.features import extract_features
    from models.eval.lipsync import speech_rms
    from models.nerffacespeech.audio2exp import n_video_frames
    from models.synth.talking_photo import speech_envelope

    x = np.random.default_rng(0).normal(scale=0.1, size=n_samples).astype(np.float32)
    want = -(-n_samples * VIDEO_FPS // SAMPLE_RATE)
    assert frame_count(n_samples) == want
    assert len(speech_rms(x, SAMPLE_RATE)) == len(speech_envelope(x, SAMPLE_RATE)) == want
    assert n_video_frames(n_samples, SAMPLE_RATE, VIDEO_FPS) == want
    if n_samples:
        assert extract_features(x, SAMPLE_RATE)[0].shape[0] == max(want, 1)


def test_frame_rms_is_the_loudness_of_each_frames_samples():
    per_frame = SAMPLE_RATE // VIDEO_FPS
    x = np.concatenate([np.full(per_frame, 0.5), np.zeros(per_frame), np.full(per_frame // 2, -0.25)])
    np.testing.assert_allclose(contract.frame_rms(x, SAMPLE_RATE), [0.5, 0.0, 0.25])
    np.testing.assert_allclose(contract.frame_rms(x, SAMPLE_RATE, n_frames=5), [0.5, 0.0, 0.25, 0.0, 0.0])


# -- every kind through the command line --------------------------------------------------------
def talkflow(*args: str, data_root: Path) -> subprocess.CompletedProcess:
    from tests.test_cli import talkflow as run

    return run(*args, data_root=data_root)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    from models.audio.tts import synthesize
    from talkflow import media

    samples, rate = synthesize("Say the kinds of features.", engine="espeak")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    media.write_wav(path, samples, rate)
    return path


ASSET_KINDS = [k for k, s in FEATURES.items() if s.computed and s.asset]
BUILT_IN = [k for k, s in FEATURES.items() if s.computed and not s.asset]
SUPPLIED = [k for k, s in FEATURES.items() if not s.computed]


@pytest.mark.parametrize("kind", ASSET_KINDS + SUPPLIED)
def test_a_kind_that_cannot_run_here_is_one_line_naming_what_to_do(kind, speech_wav, tmp_path):
    from tests.test_cli import one_line_error

    out = talkflow("features", str(speech_wav), "--kind", kind, data_root=tmp_path / "root")
    message = one_line_error(out)
    spec = FEATURES[kind]
    if spec.asset:
        assert f"talkflow assets add {spec.asset} " in message and spec.asset_file in message
    else:
        assert spec.reference_file in message and "--deepspeech" in message
    assert not (tmp_path / "root" / "prefect").exists()  # no Prefect server was started


@pytest.mark.slow
def test_every_built_in_kind_gives_features_of_the_tables_width(speech_wav, tmp_path):
    from talkflow import media

    root = tmp_path / "root"
    for kind in BUILT_IN:
        npy = tmp_path / f"speech_{kind}.npy"
        out = talkflow("features", str(speech_wav), "--kind", kind, "--out", str(npy), data_root=root)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
        feats = np.load(npy)
        assert feats.shape[1:] == (contract.WINDOW, FEATURES[kind].width) and feats.dtype == np.float32
        assert np.isfinite(feats).all()
        samples, rate = media.read_wav(speech_wav)
        assert feats.shape[0] == frame_count(samples.size, rate)
