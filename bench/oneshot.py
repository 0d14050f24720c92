"""One-shot portrait, per renderer: cold and warm seconds, output resolution, lip sync.

For each renderer (warp always; generator when --generator CHECKPOINT is given, registered in the
benchmark's own data root):
- cold: a fresh data root, the character's first video (3DMM fit + warp rig or PTI + render),
  a sentence spoken by the default TTS voice;
- warm: a NEW process, the same character and image, a NEW sentence in a DIFFERENT voice
  (espeak-ng): the fit stages are cache hits.
Each phase is timed around the flow call only (Prefect start-up excluded). The warm video is
scored: mouth opening |lm66 - lm62| / |lm54 - lm48| on dlib's 68 points of every rendered frame,
Pearson-correlated with the RMS of the video's audio per 40 ms frame (one video frame at 25 fps).
Prints one JSON object as its last line, per renderer: cold_s, warm_s, size, warm_overhead_s
(warm_s minus the warm run's own stages: tts, audio2exp, render, mux), mouth_env_corr, and the
targets (warp on 2 CPU cores: warm overhead <= 2 s, cold < 60 s, corr >= 0.6).
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
TEXTS = ("Good morning, and welcome to the show.",
         "Here is a brand new sentence, spoken in another voice for the same face.")
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
            "renderer": result.renderer}


def mouth_envelope_correlation(video: Path) -> tuple[float, tuple[int, int], float]:
    """(Pearson r of mouth opening vs RMS per video frame, (width, height), mouth-opening std)."""
    sys.path.insert(0, str(ROOT))
    from models.face.landmarks import largest_face_landmarks
    from talkflow import media

    info = media.probe(video)
    w, h = info.width, info.height
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "a.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-ac", "1", "-ar", "16000", str(wav)], check=True)
        samples, sr = media.read_wav(wav)
    x = samples.astype(np.float64) / (32768.0 if samples.dtype == np.int16 else 1.0)
    hop = sr * 40 // 1000
    opening, rms = [], []
    for i, frame in enumerate(frames):
        chunk = x[i * hop:(i + 1) * hop]
        if len(chunk) == 0:
            break
        try:
            lm = largest_face_landmarks(frame)
        except Exception:  # noqa: BLE001 - a frame without a detected face scores as closed
            opening.append(0.0)
        else:
            opening.append(float(np.hypot(*(lm[66] - lm[62])) / max(np.hypot(*(lm[54] - lm[48])), 1e-6)))
        rms.append(float(np.sqrt(np.mean(chunk ** 2))))
    o, r = np.asarray(opening), np.asarray(rms)
    corr = float(np.corrcoef(o, r)[0, 1]) if o.std() > 0 and r.std() > 0 else 0.0
    return corr, (w, h), float(o.std())


def bench_renderer(renderer: str, image: Path, generator: Path | None) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"talkflow-bench-{renderer}-"))
    if generator is not None:
        (root / "assets.json").write_text(json.dumps({"generator": str(generator.resolve())}))
    cold, warm = phase("cold", root, renderer, image), phase("warm", root, renderer, image)
    refit = {"portrait_fit", "pti", "warp_rig"} & set(warm["stages"])
    if refit:
        sys.exit(f"the warm run recomputed the character fit: {sorted(refit)}")
    corr, size, std = mouth_envelope_correlation(Path(warm["video"]))
    own = sum(warm["stages"].get(s, 0.0) for s in OWN_WORK)
    return {
        "cold_s": round(cold["seconds"], 2),
        "warm_s": round(warm["seconds"], 2),
        "warm_overhead_s": round(warm["seconds"] - own, 2),
        "size": list(size),
        "mouth_env_corr": round(corr, 3),
        "mouth_opening_std": round(std, 4),
        "cold_stages_s": {k: round(v, 2) for k, v in cold["stages"].items()},
        "warm_stages_s": {k: round(v, 2) for k, v in warm["stages"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase")
    parser.add_argument("--renderer", choices=("warp", "generator"), default="warp")
    parser.add_argument("--image", type=Path, help="A portrait (default: the astronaut photo at 512 px).")
    parser.add_argument("--generator", type=Path, help="A generator checkpoint: also bench the generator path.")
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
    results = {"warp": bench_renderer("warp", image, None)}
    if args.generator is not None:
        results["generator"] = bench_renderer("generator", image, args.generator)
    else:
        results["generator"] = {"skipped": "no --generator checkpoint given"}
    print(json.dumps({"bench": "oneshot", "cpu_threads": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                      **results, "targets": {"warp_warm_overhead_s": 2.0, "warp_cold_s": 60.0, "corr": 0.6}}))


if __name__ == "__main__":
    main()
