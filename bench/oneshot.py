"""One-shot portrait: cold vs warm wall time for the same character and image with a NEW audio.

Cold: a fresh data root, the first video of the character (3DMM fit + PTI + render). Warm: a
NEW process, the same character and image, another sentence: the fit stages are cache hits.
Each phase is timed around the flow call only (Prefect start-up excluded).
Prints one JSON object as its last line: cold_s, warm_s, warm/cold ratio, fit_share_saved
(the share of the cold run the cache saved), and the warm run's overhead over its own render
(warm_s - render_s - tts_s - mux_s). Target: the warm run costs the render plus at most 2 s.
--pti fallback runs the default fallback PTI (about 100 s per character on one CPU core);
--pti tiny a few seconds (a quick check).
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

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ("Good morning, and welcome to the show.", "Here is a different sentence for the same face.")


def phase(name: str, root: Path, pti: str) -> dict:
    env = {**os.environ, "TALKFLOW_DATA_ROOT": str(root)}
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run([sys.executable, __file__, "--phase", name, "--pti", pti], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"phase {name} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_phase(name: str, pti: str) -> dict:
    sys.path.insert(0, str(ROOT))
    # Prefect's embedded environment first, before prefect is imported
    from talkflow.runtime import configure_prefect_env  # noqa: I001

    configure_prefect_env()
    from PIL import Image
    from prefect import flow

    from flows.portrait import PortraitConfig, generate_from_portrait
    from models.nerffacespeech.pti import PTIConfig
    from models.synth.talking_photo import sample_portrait
    from talkflow.cache import computed_stages
    from talkflow.settings import get_settings

    @flow(name="warm-up")
    def warm_up() -> None:
        """Starts the embedded Prefect server before the timed call."""

    image = get_settings().root / "portrait.png"
    if not image.exists():
        Image.fromarray(sample_portrait(256)).save(image)
    config = PortraitConfig(pti=PTIConfig.tiny() if pti == "tiny" else PTIConfig.fallback())
    warm_up()
    n0 = len(computed_stages())
    t0 = time.perf_counter()
    generate_from_portrait("bench", image, text=TEXTS[0 if name == "cold" else 1], config=config)
    seconds = time.perf_counter() - t0
    stages = {e["stage"]: e["seconds"] for e in computed_stages()[n0:]}
    return {"seconds": seconds, "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase")
    parser.add_argument("--pti", choices=("fallback", "tiny"), default="fallback")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.pti)))
        return
    root = Path(tempfile.mkdtemp(prefix="talkflow-bench-"))
    cold, warm = phase("cold", root, args.pti), phase("warm", root, args.pti)
    if {"portrait_fit", "pti"} & set(warm["stages"]):
        sys.exit(f"the warm run recomputed the fit: {warm['stages']}")
    own_work = sum(warm["stages"].get(s, 0.0) for s in ("portrait_render", "tts", "audio2exp", "mux"))
    print(json.dumps({
        "bench": "oneshot",
        "pti": args.pti,
        "cold_s": round(cold["seconds"], 2),
        "warm_s": round(warm["seconds"], 2),
        "warm_over_cold": round(warm["seconds"] / cold["seconds"], 3),
        "fit_share_saved": round(1 - warm["seconds"] / cold["seconds"], 3),
        "cold_stages_s": {k: round(v, 2) for k, v in cold["stages"].items()},
        "warm_stages_s": {k: round(v, 2) for k, v in warm["stages"].items()},
        "warm_overhead_s": round(warm["seconds"] - own_work, 2),
        "target_warm_overhead_s": 2.0,
    }))


if __name__ == "__main__":
    main()
