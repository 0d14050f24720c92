"""How well each audio feature kind carries the mouth to a new voice, without training a NeRF
(minutes on a CPU where bench/lipsync.py takes hours): a linear probe.

The sample clip's mouth follows the visemes of its speech's aligned phones (opening and width;
models.audio.visemes, loudness as intensity). For each kind (a "+" joins kinds: their windows
concatenated), a ridge regression from the (T, 16, D) windows of --seconds of piper speech to the
opening and to the width is fitted on the first 90 % and scored by Pearson correlation on the
held-out last 10 %; then it predicts the mouth for the scoring sentence
(models.eval.lipsync.SCORING_SENTENCE) in espeak-ng's voice, scored against the visemes of that
sentence's forced alignment (loudness ignored), as the phonetic measure does. A kind whose
features depend on the voice gives the probe inputs it never saw there.
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from talkflow.contract import FEATURES, SAMPLE_RATE, VIDEO_FPS  # noqa: E402


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights of a ridge regression on standardised inputs: (mean, std, w with bias last)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = np.concatenate([(x - mu) / sd, np.ones((len(x), 1))], 1)
    reg = lam * np.eye(z.shape[1])
    reg[-1, -1] = 0.0
    return mu, sd, np.linalg.solve(z.T @ z + reg, z.T @ y)


def _predict(model, x: np.ndarray) -> np.ndarray:
    mu, sd, w = model
    return np.concatenate([(x - mu) / sd, np.ones((len(x), 1))], 1) @ w


def _windows(samples: np.ndarray, n: int, kinds: str) -> np.ndarray:
    """(n, 16 * sum D) flattened windows of one kind or several joined by '+'."""
    from models.audio.features import extract_features

    return np.concatenate([extract_features(samples, SAMPLE_RATE, n, kind=k)[0].reshape(n, -1)
                           for k in kinds.split("+")], 1)


def _mouth(samples: np.ndarray, text: str, loudness: bool) -> dict:
    from models.audio.alignment import align_phones
    from models.audio.visemes import VisemeConfig, viseme_tracks
    from models.synth.talking_photo import speech_envelope

    env = speech_envelope(samples, SAMPLE_RATE, fps=VIDEO_FPS)
    config = VisemeConfig() if loudness else VisemeConfig(loudness_weight=0.0)
    return viseme_tracks(align_phones(samples, SAMPLE_RATE, text), len(env), VIDEO_FPS, loudness=env, config=config)


def main() -> None:
    from lipsync import passage

    from models.audio.features import to_mono_16k
    from models.audio.tts import synthesize
    from models.eval import lipsync as ls

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    built_in = [k for k, s in FEATURES.items() if s.computed and not s.asset]  # no registered model needed
    p.add_argument("--kinds", default=",".join([*built_in, "+".join(built_in)]))
    p.add_argument("--lam", type=float, default=100.0, help="ridge penalty on standardised features")
    args = p.parse_args()

    text = passage(args.seconds)
    train_x, rate = synthesize(text, engine="piper")
    train_x = to_mono_16k(train_x, rate)
    target = _mouth(train_x, text, loudness=True)  # what the sample clip draws
    new_x, rate = synthesize(ls.SCORING_SENTENCE, engine="espeak")
    new_x = to_mono_16k(new_x, rate)
    new_target = _mouth(new_x, ls.SCORING_SENTENCE, loudness=False)  # what the measure scores against
    n, n_new = len(target["opening"]), len(new_target["opening"])
    cut = int(n * 0.9)

    out = {"bench": "lipsync_features", "train_s": round(train_x.size / SAMPLE_RATE, 2),
           "new_s": round(new_x.size / SAMPLE_RATE, 2), "kinds": {}}
    for kinds in args.kinds.split(","):
        t0 = time.perf_counter()
        x, xn = _windows(train_x, n, kinds), _windows(new_x, n_new, kinds)
        row = {"dim": int(x.shape[1] // 16)}
        for channel in ("opening", "width"):
            model = _ridge(x[:cut], target[channel][:cut], args.lam)
            row[f"held_out_{channel}_corr"] = round(ls.pearson(_predict(model, x[cut:]), target[channel][cut:]), 4)
            row[f"new_voice_{channel}_corr"] = round(ls.pearson(_predict(model, xn), new_target[channel]), 4)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        out["kinds"][kinds] = row
    print(json.dumps(out))


if __name__ == "__main__":
    main()
