"""One-shot portrait, per renderer: cold and warm seconds, output resolution, lip sync.

For each renderer of the registry (flows/renderers): those that need no asset always; one that
needs an asset when it is given (--generator CHECKPOINT, or --asset NAME=PATH), registered in the
benchmark's own data root:
- cold: a fresh data root, the character's first video (3DMM fit + warp rig or PTI + render),
  a sentence spoken by the default TTS voice;
- warm: a NEW process, the same character and image, a NEW sentence in a DIFFERENT voice
  (espeak-ng): the fit stages are cache hits.
Each phase is timed around the flow call only (Prefect start-up excluded). The warm video is
scored by the phonetic lip-sync measure (models.eval.lipsync.lip_sync_report: dlib's 68 points on
every frame against the visemes of the sentence's forced alignment: opening and width
correlation, bilabial closure, offset; the old loudness correlation as a secondary figure), and so
are two controls drawn on the same portrait with the same speech, which should fail: a mouth that
opens with the loudness alone, and a frozen mouth.
Prints one JSON object as its last line, per renderer: cold_s, warm_s, size, warm_overhead_s
(warm_s minus the warm run's own stages: tts, audio2exp, render, mux), lip_sync, controls, and the
targets (warp on 2 CPU cores: warm overhead <= 2 s, cold < 60 s, opening corr >= 0.7, bilabial
closure >= 0.8; loudness-only control closure <= 0.4).
--image uses another portrait (default: the astronaut photo at 512 px).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from models.eval.lipsync import SCORING_SENTENCE  # noqa: E402
from talkflow.contract import SAMPLE_RATE, VIDEO_FPS  # noqa: E402

TEXTS = ("Good morning, and welcome to the show.", SCORING_SENTENCE)
OWN_WORK = ("tts", "prepare_audio", "audio2exp", "warp_render", "portrait_render", "mux")


def phase(name: str, root: Path, renderer: str, image: Path) -> dict:
    env = {**os.environ, "TALKFLOW_DATA_ROOT": str(root)}
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run([sys.executable, __file__, "--phase", name, "--renderer", renderer, "--image", str(image)],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"phase {name} ({renderer}) failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_phase(name: str, renderer: str, image: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    # Prefect's embedded environment first, before prefect is imported
    from talkflow.runtime import configure_prefect_env  # noqa: I001

    configure_prefect_env()
    from prefect import flow

    from flows.portrait import PortraitConfig, generate_from_portrait
    from talkflow.cache import computed_stages
    from talkflow.store import get_store
    from tasks.speech import SpeechConfig

    @flow(name="warm-up")
    def warm_up() -> None:
        """Starts the embedded Prefect server before the timed call."""

    config = PortraitConfig(renderer=renderer, speech=SpeechConfig(engine="auto" if name == "cold" else "espeak"))
    warm_up()
    n0 = len(computed_stages())
    t0 = time.perf_counter()
    result = generate_from_portrait("bench", image, text=TEXTS[0 if name == "cold" else 1], config=config)
    seconds = time.perf_counter() - t0
    stages = {e["stage"]: e["seconds"] for e in computed_stages()[n0:]}
    return {"seconds": seconds, "stages": stages, "video": str(get_store().fetch(result.video["video"])),
            "renderer": result.renderer, "prepared_stage": result.prepared.stage}


def read_video(video: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(frames (T, H, W, 3) uint8, mono samples at SAMPLE_RATE, SAMPLE_RATE) of an mp4."""
    sys.path.insert(0, str(ROOT))
    from talkflow import media

    info = media.probe(video)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width, 3)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "a.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-ac", "1", "-ar", str(SAMPLE_RATE), str(wav)],
                       check=True)
        samples, sr = media.read_wav(wav)
    return frames, samples, sr


def controls(image: Path, samples: np.ndarray, sr: int, n_frames: int) -> dict:
    """The measure on two mouths that should fail it, drawn on the same portrait with the same speech:
    one that opens with the loudness alone, and a frozen one."""
    from PIL import Image

    from models.eval.lipsync import lip_sync_report
    from models.face.landmarks import largest_face_landmarks
    from models.synth.talking_photo import animate_portrait, speech_envelope

    img = np.asarray(Image.open(image).convert("RGB"))
    lm = largest_face_landmarks(img)
    env = speech_envelope(samples, sr, VIDEO_FPS)[:n_frames]
    out = {}
    for name, opening in (("loudness_only", env), ("frozen", np.zeros_like(env))):
        frames = animate_portrait(img, lm, opening, head_motion_px=0.0, head_rotation_deg=0.0)
        out[name] = lip_sync_report(frames, samples, sr, TEXTS[1])
    return out


def bench_renderer(renderer: str, image: Path, assets: dict[str, Path]) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"talkflow-bench-{renderer}-"))
    if assets:
        (root / "assets.json").write_text(json.dumps({k: str(v.resolve()) for k, v in assets.items()}))
    cold, warm = phase("cold", root, renderer, image), phase("warm", root, renderer, image)
    refit = {"portrait_fit", cold["prepared_stage"]} & set(warm["stages"])
    if refit:
        sys.exit(f"the warm run recomputed the character fit: {sorted(refit)}")
    from models.eval.lipsync import lip_sync_report

    frames, samples, sr = read_video(Path(warm["video"]))
    own = sum(warm["stages"].get(s, 0.0) for s in OWN_WORK)
    return {
        "cold_s": round(cold["seconds"], 2),
        "warm_s": round(warm["seconds"], 2),
        "warm_overhead_s": round(warm["seconds"] - own, 2),
        "size": [int(frames.shape[2]), int(frames.shape[1])],
        "lip_sync": lip_sync_report(frames, samples, sr, TEXTS[1]),
        "controls": controls(image, samples, sr, len(frames)),
        "cold_stages_s": {k: round(v, 2) for k, v in cold["stages"].items()},
        "warm_stages_s": {k: round(v, 2) for k, v in warm["stages"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase")
    sys.path.insert(0, str(ROOT))
    from flows import renderers

    parser.add_argument("--renderer", choices=renderers.names(), default="warp")
    parser.add_argument("--image", type=Path, help="A portrait (default: the astronaut photo at 512 px).")
    parser.add_argument("--generator", type=Path, help="A generator checkpoint: also bench the generator path.")
    parser.add_argument("--asset", action="append", default=[], help="NAME=PATH: an asset a renderer needs.")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.renderer, args.image)))
        return
    image = args.image
    if image is None:
        sys.path.insert(0, str(ROOT))
        from PIL import Image

        from models.synth.talking_photo import sample_portrait

        image = Path(tempfile.mkdtemp(prefix="talkflow-bench-")) / "portrait.png"
        Image.fromarray(sample_portrait(512)).save(image)
    given = dict(a.split("=", 1) for a in args.asset) | ({"generator": args.generator} if args.generator else {})
    given = {k: Path(v) for k, v in given.items()}
    results = {}
    for r in renderers.RENDERERS.values():
        if r.needs_asset and r.asset not in given:
            results[r.name] = {"skipped": f"no {r.asset} given (--asset {r.asset}=PATH)"}
        else:
            results[r.name] = bench_renderer(r.name, image, {k: v for k, v in given.items() if k == r.asset})
    print(json.dumps({"bench": "oneshot", "cpu_threads": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                      **results, "targets": {"warp_warm_overhead_s": 2.0, "warp_cold_s": 60.0, "opening_corr": 0.7,
                                                  "bilabial_closure": 0.8, "control_closure_max": 0.4}}))


if __name__ == "__main__":
    main()
