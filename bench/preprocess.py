"""ER-NeRF preprocessing speed on the sample clip (512x512 by default), step by step.

Makes a talking clip of about --seconds seconds (TTS + the sample portrait), preprocesses it
cold on a fresh data root, and reads each step's compute time from the journal. Then compares
the batched landmark fit of the tracker with a per-frame Python loop of the same fit.
Prints one JSON object as its last line:
  steps.<name>.fps       frames per second of each step (frames / its compute seconds)
  total_s, total_fps     the whole preprocessing (Prefect start-up excluded)
  projected_60s_clip_s   total_s scaled to a 60 s clip (the steps are linear in frames)
  fit_fps_batched / fit_fps_per_frame / fit_speedup   the landmark-fitting phase of tracking
Targets (CPU here): fit_fps_batched >= 10; a 60 s clip in under 600 s with the fallbacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it rests in the warm sun. "


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0, help="approximate clip length")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--loop-frames", type=int, default=25, help="frames for the per-frame baseline")
    args = parser.parse_args()
    os.environ["TALKFLOW_DATA_ROOT"] = tempfile.mkdtemp(prefix="talkflow-bench-")
    os.environ.pop("PREFECT_API_URL", None)
    sys.path.insert(0, str(ROOT))

    import torch

    from talkflow.runtime import configure_prefect_env

    configure_prefect_env()  # embedded Prefect settings, before prefect is imported
    from flows.preprocess import PreprocessConfig, preprocess_video
    from flows.sample_clip import SampleClipConfig, make_sample_clip
    from models.face3d.fit import fit_landmarks, fit_landmarks_per_frame
    from talkflow.cache import computed_stages
    from talkflow.store import get_store
    from tasks.media import NormalizeConfig
    from tasks.tracking import morphable_model

    text = SENTENCE * max(1, round(args.seconds / 5.0))  # about 5 s of speech per sentence
    clip = make_sample_clip(text, SampleClipConfig(size=args.size))
    n0 = len(computed_stages())
    t0 = time.perf_counter()
    dataset = preprocess_video(get_store().fetch(clip["video"]), "bench",
                               PreprocessConfig(normalize=NormalizeConfig(size=args.size)))
    total = time.perf_counter() - t0
    n = dataset.meta["n_frames"]
    steps = {e["stage"]: {"seconds": round(e["seconds"], 3), "fps": round(n / max(e["seconds"], 1e-6), 2)}
             for e in computed_stages()[n0:]}

    import numpy as np

    lms = torch.from_numpy(np.load(get_store().fetch(dataset["lms"]))).float()
    model, focal = morphable_model(None), dataset.meta["focal"]
    t0 = time.perf_counter()
    fit_landmarks(lms, args.size, model, focal=focal)
    batched = n / (time.perf_counter() - t0)
    k = min(args.loop_frames, n)
    t0 = time.perf_counter()
    fit_landmarks_per_frame(lms[:k], args.size, model, focal=focal)
    per_frame = k / (time.perf_counter() - t0)
    print(json.dumps({
        "bench": "preprocess",
        "size": args.size,
        "frames": n,
        "clip_s": round(n / 25, 2),
        "steps": steps,
        "total_s": round(total, 2),
        "total_fps": round(n / total, 2),
        "projected_60s_clip_s": round(total * 1500 / n, 1),
        "fit_fps_batched": round(batched, 1),
        "fit_fps_per_frame": round(per_frame, 2),
        "fit_speedup": round(batched / per_frame, 1),
        "targets": {"fit_fps_batched": 10, "projected_60s_clip_s": 600},
    }))


if __name__ == "__main__":
    main()
