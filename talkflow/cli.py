"""talkflow: talking-head videos from a video of a person (ER-NeRF) or one portrait
(NeRFFaceSpeech) and any audio or text; every stage is cached."""

# With talkflow/api.py, the only modules of the core that import flows (inside commands only:
# names, paths and kinds are checked before Prefect is imported).

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pydantic
import typer
from rich.console import Console
from rich.table import Table

from talkflow.contract import TEXT_KINDS, kinds_text
from talkflow.errors import InputError, TalkflowError
from talkflow.settings import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
cache_app = typer.Typer(no_args_is_help=True, help="See and manage the stage cache.")
media_app = typer.Typer(no_args_is_help=True, help="Media helpers.")
assets_app = typer.Typer(no_args_is_help=True, help="Pretrained weights you supply.")
server_app = typer.Typer(no_args_is_help=True, help="The data root's background Prefect server (embedded mode).")
app.add_typer(cache_app, name="cache")
app.add_typer(server_app, name="server")
app.add_typer(media_app, name="media")
app.add_typer(assets_app, name="assets")
console = Console()
errors = Console(stderr=True, soft_wrap=True, highlight=False)  # one message, one line

SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise InputError(f"cannot read size {text!r}; write e.g. 500M or 10G")
    return int(float(m.group(1)) * SIZE_UNITS[m.group(2)])


def parse_age(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if not m:
        raise InputError(f"cannot read age {text!r}; write e.g. 30m, 12h or 7d")
    return float(m.group(1)) * AGE_UNITS[m.group(2)]


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def run_call(tf, method: str, *args, status: str, **kwargs):
    """Call talkflow.api.Talkflow().<method> with a spinner, then print its stages' warnings."""
    try:
        with console.status(status):
            return getattr(tf, method)(*args, **kwargs)
    finally:
        report_warnings(tf.warnings)


def report_warnings(warnings: list[str]) -> None:
    for text in warnings:
        errors.print(f"[yellow]warning:[/] {text}")


def start_server() -> None:
    """Input checked: start (or find) the background Prefect server now, so that it boots while the
    command imports its flows (a no-op with PREFECT_API_URL set)."""
    from talkflow.runtime import start_background_server

    start_background_server()


# -- doctor --------------------------------------------------------------------------------
@app.command()
def doctor() -> None:
    """What is installed, which mode Prefect runs in, the store, and which assets are present."""
    from talkflow import assets

    s = get_settings()
    t = Table("check", "status", "detail", title="talkflow doctor")

    def row(name: str, ok: bool | None, detail: str) -> None:
        mark = {True: "[green]ok[/]", False: "[red]missing[/]", None: "[yellow]off[/]"}[ok]
        t.add_row(name, mark, detail)

    for tool in ("ffmpeg", "ffprobe", "espeak-ng"):
        path = shutil.which(tool)
        version = ""
        if path:
            out = subprocess.run([path, "-version" if tool != "espeak-ng" else "--version"],
                                 capture_output=True, text=True).stdout
            version = out.splitlines()[0] if out else ""
        row(tool, bool(path), version or "install it (Debian: apt-get install ffmpeg espeak-ng)")
    try:
        import torch

        cuda = torch.cuda.is_available()
        row("torch", True, f"{torch.__version__}; device {s.torch_device()}"
            + (f" ({torch.cuda.get_device_name(0)})" if cuda else " (no CUDA GPU)"))
    except Exception as exc:  # noqa: BLE001 - report, don't crash
        row("torch", False, str(exc))
    try:
        import pytorch3d

        row("pytorch3d", True, pytorch3d.__version__)
    except Exception as exc:  # noqa: BLE001
        row("pytorch3d", False, f"{exc}; photometric 3DMM refinement is off")
    row("prefect", True, _prefect_mode())
    row("store", _store_ok(), s.store)
    if s.redis_url:
        row("locks", _redis_ok(s.redis_url), f"Redis {s.redis_url}")
    else:
        row("locks", True, f"file locks in {s.locks_dir} (one host)")
    for spec in assets.KNOWN.values():
        path = assets.locate(spec.name)
        row(f"asset {spec.name}", True if path else None,
            str(path) if path else f"{spec.file} not registered -> {spec.fallback}"
            + (f". {spec.how}" if spec.how else ""))
    for net in assets.SHIPPED.values():  # shipped in a package, installed by scripts/setup.sh
        ok = (assets.shipped_dir() / net.file).is_file()
        row(f"network {net.name}", ok, f"{net.file}: {net.what}" if ok else
            f"{net.file} missing from {assets.shipped_dir()}: run `bash scripts/setup.sh` ({net.what})")
    from flows import renderers

    auto = renderers.choose(renderers.AUTO)
    for r in renderers.RENDERERS.values():
        ok = r.available()
        row(f"renderer {r.name}", ok if ok or r.needs_asset else None,
            r.description + ("; auto picks it" if r is auto else "") if ok else f"off: {r.description}")
    console.print(t)


def _prefect_mode() -> str:
    """Which Prefect server the commands report to."""
    import os

    from talkflow import runtime, server

    s = get_settings()
    if not runtime.embedded():
        return f"server {os.environ['PREFECT_API_URL']} (PREFECT_API_URL)"
    if s.embedded_server == "ephemeral":
        return f"embedded: a temporary Prefect server per command (PREFECT_HOME={s.prefect_home})"
    state = server.current(s)
    if state is None:
        return (f"embedded: background server not running; the next command starts one on 127.0.0.1 "
                f"(PREFECT_HOME={s.prefect_home})")
    up = _duration(time.time() - state.started_at)
    return (f"embedded: background server {state.ui_url} (pid {state.pid}, up {up}, stops after "
            f"{_duration(state.idle_s)} unused or on `talkflow server stop`; PREFECT_HOME={s.prefect_home})")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def _store_ok() -> bool:
    from talkflow.store import get_store

    try:
        store = get_store()
        store.fs.makedirs(store.root, exist_ok=True)
        art = store.put_bytes(b"talkflow doctor\n", suffix=".txt")
        return store.verify(art)
    except Exception:  # noqa: BLE001
        return False


def _redis_ok(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except Exception:  # noqa: BLE001
        return False


# -- media ---------------------------------------------------------------------------------
@media_app.command("probe")
def media_probe(file: Path) -> None:
    """Streams, duration, fps, size and audio of FILE (no Prefect, nothing cached)."""
    from talkflow import media

    info = media.probe(file)
    t = Table("field", "value", title=str(file))
    for k, v in info.model_dump(exclude={"path"}).items():
        t.add_row(k, str(v))
    console.print(t)


# -- sample clip and demo ------------------------------------------------------------------
SAMPLE_TEXT = "Hello! This short clip was made from one photo and a synthetic voice."


@app.command("sample-clip")
def sample_clip(
    out: Path,
    text: str = typer.Option(SAMPLE_TEXT, help="What the portrait says."),
    seed: int = typer.Option(0, help="Head-motion seed; the same seed gives the same clip."),
    size: int = typer.Option(512, help="Frame side in pixels."),
) -> None:
    """Make a short talking clip (TTS + the astronaut photo, 25 fps, with audio) at OUT."""
    if not text.strip():
        raise InputError("--text is empty; give at least one word")
    start_server()
    from talkflow.api import Talkflow
    from tasks.sample_clip import SampleClipConfig

    result = run_call(Talkflow(), "sample_clip", text, SampleClipConfig(seed=seed, size=size), output_path=out,
                      status="making the sample clip")
    console.print(f"sample clip: {out.expanduser().resolve()} ({result.meta['duration_s']:.2f} s)")


@app.command()
def demo(
    text: str = typer.Option(None, help="What the sample portrait says (the training clip)."),
    new_text: str = typer.Option(None, help="A new sentence for the trained avatar."),
    out: Path = typer.Option(None, help="Folder of the three mp4s (default: <data_root>/outputs/demo)."),
) -> None:
    """Sample clip -> media stage -> preprocess -> small ER-NeRF training -> a NEW sentence rendered.

    A second run is all cache hits.
    """
    from talkflow.api import Talkflow

    tf = Talkflow()
    d = run_call(tf, "demo", text, new_text, output_dir=out,
                 status="running the demo (minutes on a CPU the first time)")
    r = d.result
    val = r.avatar.head.meta["val"]
    console.print(f"sample clip  : {d.sample_clip}")
    console.print(f"media stage  : {d.talking} ({r.media.video.meta['duration_s']:.2f} s, "
                  f"{r.media.frames.meta['n_frames']} frames at {r.media.normalized.meta['fps']} fps)")
    console.print(f"dataset      : {r.dataset.meta['n_frames']} frames, focal {r.dataset.meta['focal']:.1f} px")
    console.print(f"held-out PSNR: {val['psnr']:.2f} dB (SSIM {val['ssim']:.3f}) after "
                  f"{r.avatar.head.meta['steps']} head steps")
    console.print(f"new sentence : {d.avatar_new_sentence} ({r.rendered.video.meta['duration_s']:.2f} s)")
    att = r.avatar.head.meta.get("attention") or {}
    if att:
        console.print(f"audio attn.  : largest weight on one neighbouring frame {att['max']:.2f} "
                      f"({'collapsed' if att['max'] > 0.5 else 'spread'})")
    ls = r.lip_sync.meta
    console.print(f"lip sync     : opening corr {ls['opening_corr']:.2f}, width corr {ls['width_corr']:.2f}, "
                  f"/p b m/ closed {ls['bilabial_closure']:.0%} of {ls['bilabials']}, offset {ls['offset']} frames, "
                  f"{ls['frames_without_face']} of {ls['frames']} frames without a face")


# -- ER-NeRF -------------------------------------------------------------------------------
FEATURE_KINDS = kinds_text()  # talkflow.contract.FEATURES (docs/media-contract.md)


@app.command()
def preprocess(
    video: Path,
    person: str = typer.Option(..., help="Avatar name (letters, digits, '_' or '-')."),
    size: int = typer.Option(512, help="Side of the square training frames, px."),
    features: str = typer.Option("logmel", help=f"Audio features: {FEATURE_KINDS}."),
    deepspeech: Path = typer.Option(None, help="Precomputed DeepSpeech features (.npy)."),
    photometric: bool = typer.Option(True, help="Photometric refinement of the 3DMM tracking."),
    out: Path = typer.Option(None, help="The dataset folder (copies; default: links under <data_root>/datasets/)."),
    transcript: str = typer.Option("", help=f"The words spoken in the video, if known: {' and '.join(TEXT_KINDS)} "
                                   "features align their phones to them."),
) -> None:
    """Turn a talking-head VIDEO into an ER-NeRF training dataset (every step cached)."""
    from talkflow import checks

    checks.validate_name(person, "person")
    checks.feature_kind(features, "--features")  # a missing model fails here, before any work
    checks.talking_video(video)  # too short, no sound, sound ending early: refused here
    if deepspeech is not None:
        checks.existing_file(deepspeech, "DeepSpeech features file")

    start_server()
    from flows.preprocess import PreprocessConfig
    from models.audio.config import AudioFeatureConfig
    from talkflow.api import Talkflow
    from tasks.media import NormalizeConfig
    from tasks.tracking import TrackingConfig

    config = PreprocessConfig(
        normalize=NormalizeConfig(size=size),
        audio=AudioFeatureConfig(kind=features),
        tracking=TrackingConfig(photometric=photometric),
        deepspeech_npy=deepspeech,
    )
    tf = Talkflow()
    d = run_call(tf, "preprocess", video, person, data_path=out, config=config, copy=out is not None,
                 transcript=transcript, status=f"preprocessing {video.name}")
    m = d.manifest.meta
    console.print(f"dataset for {person}: {m['n_frames']} frames ({m['n_train']} train, {m['n_val']} val) "
                  f"at {m['size']} px, focal {m['focal']:.1f} px, {m['features']['kind']} features "
                  f"(D={m['features']['dim']}), parsing: {m['parsing']}, 3DMM: {m['tracking']}")
    console.print(f"folder: {d.data_path}")


@app.command("import-dataset")
def import_dataset_cmd(
    folder: Path = typer.Argument(..., help="An ER-NeRF dataset folder, as the reference's data_utils/process.py "
                                            "writes it."),
    person: str = typer.Option(..., help="The avatar's name: letters, digits, '_' or '-'."),
) -> None:
    """Register an existing ER-NeRF dataset FOLDER as PERSON's dataset, so `talkflow train` trains on it."""
    from talkflow.api import Talkflow

    tf = Talkflow()
    dataset = run_call(tf, "import_dataset", folder, person, status=f"importing {folder.name}")
    m = dataset.meta
    console.print(f"dataset for {person}: {m['n_frames']} frames ({m['n_train']} train, {m['n_val']} val) at "
                  f"{m['size']} px, {m['features']['kind']} features (D={m['features']['dim']}); "
                  f"train it with `talkflow train --person {person}`")


@app.command()
def train(
    person: str = typer.Option(None, help="A person preprocessed with `talkflow preprocess` (their latest dataset)."),
    data: Path = typer.Option(None, help="Or a dataset folder written by `talkflow preprocess --out`."),
    out: Path = typer.Option(None, help="The model folder (default: <data_root>/models/<person>)."),
    stage: str = typer.Option("auto", help="auto (head -> lips -> torso), head, lips or torso."),
    preset: str = typer.Option("reference", help="Training preset: reference (the paper's schedule) or cpu-demo "
                               "(minutes on a CPU, a toy avatar); see tasks/presets.py."),
    gpu: int = typer.Option(None, help="Pin the run to this GPU index (CUDA_VISIBLE_DEVICES)."),
) -> None:
    """Train (or resume, or retrain) a person's ER-NeRF avatar (head -> lips -> torso)."""
    from talkflow import checks

    if (person is None) == (data is None):
        raise InputError("give --person NAME or --data DIR")
    if person is not None:
        checks.validate_name(person, "person")
    elif not data.is_dir():
        raise InputError(f"the dataset folder '{data}' does not exist")
    checks.choice(stage, checks.TrainStage, "--stage")
    from tasks import presets

    checks.choice(preset, presets.names("train"), "--preset")
    checks.gpu_index(gpu)

    start_server()
    from talkflow.api import Talkflow

    config = presets.build("train", preset)
    source = person if person is not None else data
    tf = Talkflow()
    m = run_call(tf, "train", source, out, gpu, stage, config=config, status=f"training ({stage})")
    for name in ("head", "lips", "torso"):
        res = getattr(m.avatar, name)
        if res is not None:
            val = res.meta.get("val", {})
            console.print(f"{name:<5}: {res.meta['steps']} steps, held-out PSNR {val.get('psnr', float('nan')):.2f} dB")
    console.print(f"model: {m.model_path}")


@app.command()
def render(
    person: str = typer.Option(None, help="A trained avatar (its latest training)."),
    model: Path = typer.Option(None, help="Or a model folder written by `talkflow train`."),
    audio: Path = typer.Option(None, help="Speech to render (any audio or video file)."),
    text: str = typer.Option(None, help="Or text to speak (offline TTS)."),
    torso: bool = typer.Option(True, help="Render the trained torso (else the original torso shows)."),
    out: Path = typer.Option(None, help="Where to write the mp4 (default: <data_root>/outputs/<person>/)."),
    gpu: int = typer.Option(None, help="Pin the run to this GPU index (CUDA_VISIBLE_DEVICES)."),
) -> None:
    """Render a trained avatar speaking new audio or text."""
    from talkflow import checks

    if (person is None) == (model is None):
        raise InputError("give --person NAME or --model DIR")
    if person is not None:
        checks.validate_name(person, "person")
    checks.audio_or_text(audio, text)
    checks.output_file(out, "--out")
    checks.gpu_index(gpu)

    from talkflow.api import Talkflow

    tf = Talkflow()
    v = run_call(tf, "render", person if person is not None else model, audio, text=text, output_path=out,
                 with_torso=torso, gpu_id=gpu, status="rendering")
    console.print(f"video: {v.video_path} ({v.duration_s:.2f} s)")


@app.command("features")
def features_cmd(
    audio: Path,
    kind: str = typer.Option("logmel", help=f"The avatar's feature kind: {FEATURE_KINDS}."),
    out: Path = typer.Option(None, help="The .npy to write (default: AUDIO without suffix + _<kind>.npy)."),
) -> None:
    """The (T, 16, D) audio features of AUDIO that an avatar trained on KIND reads (.npy)."""
    from talkflow import checks

    checks.feature_kind(kind, "--kind")  # a missing model fails here, before any work
    checks.speech_audio(audio)
    checks.output_file(out, "--out")

    start_server()
    import numpy as np

    from talkflow.api import Talkflow

    npy = run_call(Talkflow(), "extract_audio_features", audio, kind, out_path=out, status=f"{kind} features")
    console.print(f"features: {npy} {tuple(np.load(npy, mmap_mode='r').shape)}")


# -- one-shot portraits (NeRFFaceSpeech) ---------------------------------------------------
character_app = typer.Typer(no_args_is_help=True, help="One-shot portrait characters.")
app.add_typer(character_app, name="character")


@app.command()
def portrait(
    character: str = typer.Option(..., help="Character name (letters, digits, '_' or '-')."),
    image: Path = typer.Option(..., help="The portrait photo."),
    audio: Path = typer.Option(None, help="Speech to say (wav, mp3, ...)."),
    text: str = typer.Option(None, help="Or text to say (offline TTS)."),
    transcript: str = typer.Option(None, help="What --audio says, when known: its phones are aligned to the "
                                   "words (exact lip closures) instead of recognised."),
    renderer: str = typer.Option("auto", help="The renderer (flows/renderers): generator, warp or auto."),
    out: Path = typer.Option(None, help="Where to write the mp4 (default: <data_root>/outputs/portraits/)."),
) -> None:
    """A video of the portrait speaking; the character fit (3DMM + PTI or warp rig) is cached per
    character and image."""
    from flows import renderers
    from talkflow import checks

    chosen = renderers.choose(renderer)  # a missing asset fails here, before any work
    checks.validate_name(character, "character")
    checks.portrait_image(image)  # missing, unreadable or too small: refused here
    checks.audio_or_text(audio, text)
    checks.output_file(out, "--out")
    start_server()
    from talkflow.api import Talkflow

    drawer = renderers.load(chosen.name)
    console.print(f"renderer: {chosen.name}" + (" (auto)" if renderer == renderers.AUTO else ""))
    v = run_call(Talkflow(), "portrait", image, audio, text=text, character=character, output_path=out,
                 transcript=transcript, renderer=chosen.name, status=f"portrait of {character}, {chosen.name} "
                 f"renderer (the first video of an image runs the {drawer.prepare_label})")
    console.print(f"video: {v.video_path} ({v.duration_s:.2f} s); {v.result.renderer} renderer, "
                  f"{drawer.summary(v.result.prepared)}")


@character_app.command("rm")
def character_rm(name: str) -> None:
    """Free a character's (or person's) cached fits and outputs."""
    from talkflow.cache_admin import free_namespace
    from talkflow.checks import validate_name
    from talkflow.store import get_store

    entries, freed = free_namespace(get_store(), validate_name(name, "character"))
    console.print(f"{name}: {entries} entries removed, {human(freed)} freed")


# -- cache ---------------------------------------------------------------------------------
@cache_app.command("ls")
def cache_ls(character: str = typer.Option(None, "--character", help="Only this namespace.")):
    """Cached stage results: key, stage, namespace, created, size."""
    from talkflow.cache_admin import list_entries
    from talkflow.store import get_store

    t = Table("stage", "namespace", "created", "size", "versions", "image", "key")
    for e in list_entries(get_store(), character):
        created = e.created.strftime("%Y-%m-%d %H:%M:%S") if e.created else "unreadable"
        versions = ", ".join(f"{k} {v}" for k, v in (e.result.versions.items() if e.result else ()))
        image = (e.result.meta.get("image_sha256") or "")[:12] if e.result else ""
        t.add_row(f"{e.stage} v{e.version}", e.namespace, created, human(e.size), versions, image, e.key)
    console.print(t)


@cache_app.command("du")
def cache_du() -> None:
    """Bytes stored, referenced by cache entries, and unreferenced (freed by prune)."""
    from talkflow.cache_admin import disk_usage
    from talkflow.store import get_store

    usage = disk_usage(get_store())
    console.print(f"store       : {get_settings().store}")
    console.print(f"entries     : {usage['entries']}")
    for name in ("stored_bytes", "referenced_bytes", "unreferenced_bytes"):
        console.print(f"{name.removesuffix('_bytes'):<12}: {human(usage[name])}")


@cache_app.command("verify")
def cache_verify(
    repair: bool = typer.Option(False, help="Remove the bad entries (they recompute on next run)."),
) -> None:
    """Check every entry's artifacts against their checksums; exit 1 if any is bad."""
    from talkflow.cache_admin import list_entries, remove_entries, verify_entries
    from talkflow.store import get_store

    store = get_store()
    entries = list_entries(store)
    bad = verify_entries(store, entries)
    for e in bad:
        console.print(f"[red]bad[/] {e.key}")
    if bad and repair:
        remove_entries(store, bad)
        console.print(f"removed {len(bad)} bad entries")
    console.print(f"{len(entries) - len(bad)} of {len(entries)} entries verified")
    if bad and not repair:
        raise typer.Exit(1)


@cache_app.command("prune")
def cache_prune(
    older_than: str = typer.Option(None, help="Drop entries older than this, e.g. 7d, 12h."),
    max_size: str = typer.Option(None, help="Drop the oldest entries until the rest fit, e.g. 10G."),
    character: str = typer.Option(None, "--character", help="Drop this namespace's entries."),
    dry_run: bool = typer.Option(False, help="Only say what would go."),
) -> None:
    """Remove entries, then delete payloads nothing references any more."""
    from talkflow.cache_admin import list_entries, remove_entries, select_for_prune, sweep
    from talkflow.checks import validate_name
    from talkflow.store import get_store

    if older_than is None and max_size is None and character is None:
        raise InputError("say what to prune: --older-than, --max-size and/or --character")
    store = get_store()
    drop = select_for_prune(
        list_entries(store),
        older_than_s=parse_age(older_than) if older_than else None,
        max_size=parse_size(max_size) if max_size else None,
        namespace=validate_name(character, "character") if character else None,
    )
    for e in drop:
        console.print(f"{'would drop' if dry_run else 'drop'} {e.key} ({human(e.size)})")
    if not dry_run:
        remove_entries(store, drop)
    freed = sweep(store, dry_run=dry_run)
    console.print(f"{len(drop)} entries, {human(freed)} of payloads "
                  f"{'would be ' if dry_run else ''}freed")


# -- assets --------------------------------------------------------------------------------
@assets_app.command("ls")
def assets_ls() -> None:
    """Known assets, where each is registered, and what runs without it."""
    from talkflow import assets

    t = Table("asset", "file", "registered", "without it", "how to prepare it")
    for spec in assets.KNOWN.values():
        path = assets.locate(spec.name)
        t.add_row(spec.name, spec.file, str(path) if path else "-", spec.fallback, spec.how or "-")
    console.print(t)


@assets_app.command("add")
def assets_add(name: str, path: Path) -> None:
    """Register the file or folder PATH as asset NAME (bfm, bisenet, hubert, ...)."""
    from talkflow import assets

    console.print(f"{name} -> {assets.register(name, path)}")


# -- the background server -----------------------------------------------------------------
@server_app.command("start")
def server_start() -> None:
    """Start the background server now (any command that runs a flow starts it anyway) and the warm
    process beside it, and print the server's UI address."""
    from talkflow import runtime, server

    if not runtime.embedded():
        raise InputError("PREFECT_API_URL is set: commands report to that server, not to a background one; "
                         "unset it to use the background server")
    if get_settings().embedded_server != "background":
        errors.print("[yellow]warning:[/] TALKFLOW_EMBEDDED_SERVER=ephemeral: commands will not use this server")
    with console.status("starting the background Prefect server"):
        state = server.ensure()
    console.print(f"background server: {state.ui_url} (API {state.url}, pid {state.pid}); it stops after "
                  f"{_duration(state.idle_s)} unused, or on `talkflow server stop`")
    from talkflow import warm

    warm.leave_warm_process()  # ready in a few seconds: later commands skip their imports


@server_app.command("status")
def server_status() -> None:
    """Whether the data root's background server runs, where, and since when; exit 1 if none runs."""
    from talkflow import server

    state = server.current()
    if state is None:
        console.print(f"no background server for {get_settings().root}; the next command starts one")
        raise typer.Exit(1)
    busy = "in use" if server.in_use() else "idle"
    console.print(f"background server: {state.ui_url} (API {state.url}, pid {state.pid}), up "
                  f"{_duration(time.time() - state.started_at)}, {busy}; stops after {_duration(state.idle_s)} unused")
    console.print(f"log: {server.paths().log}")
    from talkflow import warm

    home = server.paths().home
    w = warm.status(home)
    console.print(f"warm process: pid {w['pid']}, up {_duration(time.time() - w['started_at'])}; "
                  f"log {home / warm.LOG_NAME}" if w else "warm process: none (the next command that runs a flow "
                  "leaves one)")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the data root's background server (a command running meanwhile loses its API)."""
    from talkflow import server

    busy = server.in_use()
    state = server.stop()
    if state is None:
        console.print(f"no background server was running for {get_settings().root}")
        return
    console.print(f"stopped the background server {state.ui_url} (pid {state.pid})"
                  + (" while a command was using it" if busy else ""))


def fresh_consoles() -> None:
    """New consoles for this process's stdout and stderr (a warm child: they were made for the warm
    process's log, without the command's terminal and width)."""
    global console, errors
    console = Console()
    errors = Console(stderr=True, soft_wrap=True, highlight=False)


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except TalkflowError as exc:
        fail(str(exc))
    except pydantic.ValidationError as exc:  # a bad option value reaching a typed config
        first = exc.errors()[0]
        fail(f"{'.'.join(map(str, first['loc']))}: {first['msg']}")
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


def fail(message: str) -> None:
    """A user error: one line on stderr, exit code 2."""
    errors.print(f"[red]error:[/] {' '.join(message.split())}")
    sys.exit(2)


if __name__ == "__main__":
    main()
