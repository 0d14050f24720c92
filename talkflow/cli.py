"""The `talkflow` command line. The only module of the core that may import flows."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pydantic
import typer
from rich.console import Console
from rich.table import Table

from talkflow.errors import InputError, TalkflowError
from talkflow.settings import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
cache_app = typer.Typer(no_args_is_help=True, help="See and manage the stage cache.")
media_app = typer.Typer(no_args_is_help=True, help="Media helpers.")
assets_app = typer.Typer(no_args_is_help=True, help="Pretrained weights you supply.")
app.add_typer(cache_app, name="cache")
app.add_typer(media_app, name="media")
app.add_typer(assets_app, name="assets")
console = Console()

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


def run_flow(flow, *args, status: str):
    """Run a flow in this process (embedded, or reporting to PREFECT_API_URL) with a spinner."""
    from talkflow.runtime import ensure_result_storage

    with console.status(status):
        ensure_result_storage()
        return flow(*args)


def export(artifact, dest: Path) -> Path:
    """Copy a stored artifact to a user-visible path."""
    from talkflow.store import get_store

    dest = Path(dest).expanduser().resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(get_store().fetch(artifact), dest)
    return dest


# -- doctor --------------------------------------------------------------------------------
@app.command()
def doctor() -> None:
    """What is installed, which mode Prefect runs in, the store, and which assets are present."""
    from talkflow import assets, runtime

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
    mode = "embedded (ephemeral Prefect, PREFECT_HOME=" + str(s.prefect_home) + ")"
    if not runtime.embedded():
        import os

        mode = f"server {os.environ['PREFECT_API_URL']}"
    row("prefect", True, mode)
    row("store", _store_ok(), s.store)
    if s.redis_url:
        row("locks", _redis_ok(s.redis_url), f"Redis {s.redis_url}")
    else:
        row("locks", True, f"file locks in {s.locks_dir} (one host)")
    for spec in assets.KNOWN.values():
        path = assets.locate(spec.name)
        row(f"asset {spec.name}", True if path else None,
            str(path) if path else f"{spec.file} not registered -> {spec.fallback}")
    console.print(t)


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
DEFAULT_TEXT = "Hello! This short clip was made from one photo and a synthetic voice."


@app.command("sample-clip")
def sample_clip(
    out: Path,
    text: str = typer.Option(DEFAULT_TEXT, help="What the portrait says."),
    seed: int = typer.Option(0, help="Head-motion seed; the same seed gives the same clip."),
    size: int = typer.Option(512, help="Frame side in pixels."),
) -> None:
    """Make a short talking clip (TTS + the astronaut photo, 25 fps, with audio) at OUT."""
    from flows.sample_clip import SampleClipConfig, make_sample_clip

    result = run_flow(make_sample_clip, text, SampleClipConfig(seed=seed, size=size),
                      status="making the sample clip")
    dest = export(result["video"], out)
    console.print(f"sample clip: {dest} ({result.meta['duration_s']:.2f} s)")


DEMO_NEW_TEXT = "And this sentence was never in the training video."


@app.command()
def demo(
    text: str = typer.Option(DEFAULT_TEXT, help="What the sample portrait says (the training clip)."),
    new_text: str = typer.Option(DEMO_NEW_TEXT, help="A new sentence for the trained avatar."),
) -> None:
    """Sample clip -> media stage -> preprocess -> small ER-NeRF training -> a NEW sentence rendered.

    Outputs go to <data_root>/outputs/demo; a second run is all cache hits.
    """
    from flows.demo import demo as demo_flow

    result = run_flow(demo_flow, text, new_text, status="running the demo (minutes on a CPU the first time)")
    out_dir = get_settings().outputs_dir / "demo"
    sample = export(result.sample["video"], out_dir / "sample_clip.mp4")
    final = export(result.media.video["video"], out_dir / "talking.mp4")
    rendered = export(result.rendered.video["video"], out_dir / "avatar_new_sentence.mp4")
    val = result.avatar.head.meta["val"]
    console.print(f"sample clip  : {sample}")
    console.print(f"media stage  : {final} ({result.media.video.meta['duration_s']:.2f} s, "
                  f"{result.media.frames.meta['n_frames']} frames at {result.media.normalized.meta['fps']} fps)")
    console.print(f"dataset      : {result.dataset.meta['n_frames']} frames, focal "
                  f"{result.dataset.meta['focal']:.1f} px")
    console.print(f"held-out PSNR: {val['psnr']:.2f} dB (SSIM {val['ssim']:.3f}) after "
                  f"{result.avatar.head.meta['steps']} head steps")
    console.print(f"new sentence : {rendered} ({result.rendered.video.meta['duration_s']:.2f} s)")


# -- ER-NeRF -------------------------------------------------------------------------------
@app.command()
def preprocess(
    video: Path,
    person: str = typer.Option(..., help="Avatar name (letters, digits, '_' or '-')."),
    size: int = typer.Option(512, help="Side of the square training frames, px."),
    features: str = typer.Option("logmel", help="Audio features: logmel, phonemes, hubert or wav2vec2."),
    deepspeech: Path = typer.Option(None, help="Precomputed DeepSpeech features (.npy)."),
    photometric: bool = typer.Option(True, help="Photometric refinement of the 3DMM tracking."),
    out: Path = typer.Option(None, help="Also write the dataset folder here (copies)."),
) -> None:
    """Turn a talking-head VIDEO into an ER-NeRF training dataset (every step cached)."""
    from flows.preprocess import PreprocessConfig, preprocess_video
    from models.audio.features import AudioFeatureConfig
    from tasks.dataset import materialize_dataset
    from tasks.media import NormalizeConfig
    from tasks.tracking import TrackingConfig

    config = PreprocessConfig(
        normalize=NormalizeConfig(size=size),
        audio=AudioFeatureConfig(kind=features),
        tracking=TrackingConfig(photometric=photometric),
        deepspeech_npy=deepspeech,
    )
    dataset = run_flow(preprocess_video, video, person, config, status=f"preprocessing {video.name}")
    m = dataset.meta
    console.print(f"dataset for {person}: {m['n_frames']} frames ({m['n_train']} train, {m['n_val']} val) "
                  f"at {m['size']} px, focal {m['focal']:.1f} px, {m['features']['kind']} features "
                  f"(D={m['features']['dim']}), parsing: {m['parsing']}, 3DMM: {m['tracking']}")
    if out is not None:
        console.print(f"written to {materialize_dataset(dataset, out, copy=True)}")


@app.command()
def train(
    person: str = typer.Option(..., help="The person preprocessed with `talkflow preprocess`."),
    stage: str = typer.Option("auto", help="auto (head -> lips -> torso), head, lips or torso."),
    preset: str = typer.Option("reference", help="reference (the paper's schedule) or cpu-demo (minutes)."),
) -> None:
    """Train (or resume, or retrain) a person's ER-NeRF avatar from its registered dataset."""
    from flows.train import train_avatar
    from tasks.train import TrainAvatarConfig

    config = TrainAvatarConfig.cpu_demo() if preset == "cpu-demo" else TrainAvatarConfig()
    record = run_flow(train_avatar, None, person, config, stage, status=f"training {person} ({stage})")
    for name in ("head", "lips", "torso"):
        res = getattr(record, name)
        if res is not None:
            val = res.meta.get("val", {})
            console.print(f"{name:<5}: {res.meta['steps']} steps, held-out PSNR {val.get('psnr', float('nan')):.2f} dB")


@app.command()
def render(
    person: str = typer.Option(..., help="A trained avatar."),
    audio: Path = typer.Option(None, help="Speech to render (any audio or video file)."),
    text: str = typer.Option(None, help="Or text to speak (offline TTS)."),
    torso: bool = typer.Option(True, help="Render the trained torso (else the original torso shows)."),
    out: Path = typer.Option(None, help="Where to write the mp4 (default: <data_root>/outputs/<person>/)."),
) -> None:
    """Render a trained avatar speaking new audio or text."""
    from flows.render import RenderVideoConfig, render_video
    from tasks.render import RenderConfig

    result = run_flow(render_video, person, audio, text,
                      RenderVideoConfig(render=RenderConfig(with_torso=torso)), status=f"rendering {person}")
    dest = out or get_settings().outputs_dir / person / f"{result.video['video'].sha256[:8]}.mp4"
    console.print(f"video: {export(result.video['video'], dest)} ({result.video.meta['duration_s']:.2f} s)")


# -- one-shot portraits (NeRFFaceSpeech) ---------------------------------------------------
character_app = typer.Typer(no_args_is_help=True, help="One-shot portrait characters.")
app.add_typer(character_app, name="character")


@app.command()
def portrait(
    character: str = typer.Option(..., help="Character name (letters, digits, '_' or '-')."),
    image: Path = typer.Option(..., help="The portrait photo."),
    audio: Path = typer.Option(None, help="Speech to say (wav, mp3, ...)."),
    text: str = typer.Option(None, help="Or text to say (offline TTS)."),
    out: Path = typer.Option(None, help="Where to write the mp4 (default: <data_root>/outputs/portraits/)."),
) -> None:
    """A video of the portrait speaking; the fit (3DMM + PTI) is cached per character and image."""
    from flows.portrait import generate_from_portrait

    result = run_flow(generate_from_portrait, character, image, audio, text,
                      status=f"portrait of {character} (the first video of an image runs PTI)")
    dest = out or get_settings().outputs_dir / "portraits" / f"{character}-{result.video['video'].sha256[:8]}.mp4"
    dest = export(result.video["video"], dest)
    console.print(f"video: {dest} ({result.video.meta['duration_s']:.2f} s); PTI error "
                  f"{result.pti.meta['error_initial']:.3f} -> {result.pti.meta['error_final']:.3f}")


@character_app.command("rm")
def character_rm(name: str) -> None:
    """Free a character's (or person's) cached fits and outputs."""
    from talkflow.cache import validate_name
    from talkflow.cache_admin import free_namespace
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
    from talkflow.cache import validate_name
    from talkflow.cache_admin import list_entries, remove_entries, select_for_prune, sweep
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

    t = Table("asset", "file", "registered", "without it")
    for spec in assets.KNOWN.values():
        path = assets.locate(spec.name)
        t.add_row(spec.name, spec.file, str(path) if path else "-", spec.fallback)
    console.print(t)


@assets_app.command("add")
def assets_add(name: str, path: Path) -> None:
    """Register the file or folder PATH as asset NAME (bfm, bisenet, hubert, ...)."""
    from talkflow import assets

    console.print(f"{name} -> {assets.register(name, path)}")


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except TalkflowError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except pydantic.ValidationError as exc:  # a bad option value reaching a typed config
        first = exc.errors()[0]
        console.print(f"[red]error:[/] {'.'.join(map(str, first['loc']))}: {first['msg']}", highlight=False)
        sys.exit(2)
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


if __name__ == "__main__":
    main()
