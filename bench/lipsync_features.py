"""How well each audio feature kind carries the mouth to a new voice, without training a NeRF
(minutes on a CPU where bench/lipsync.py takes hours): a linear probe.

The sample clip's mouth follows its speech envelope by construction (models.synth.talking_photo).
For each kind, a ridge regression from the (T, 16, D) windows of --seconds of piper speech to that
envelope is fitted on the first 90 % and scored by Pearson correlation on the held-out last 10 %;
then it predicts the mouth for bench/lipsync.py's new sentence in espeak-ng's voice, scored
against that speech's RMS per 40 ms frame, at offset 0 and at the best offset (+-5 frames).
A kind whose features depend on the voice gives the probe inputs it never saw there.
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


def main() -> None:
    from lipsync import NEW_SENTENCE, passage

    from models.audio.features import extract_features, to_mono_16k
    from models.audio.tts import synthesize
    from models.eval import lipsync as ls
    from models.synth.talking_photo import speech_envelope

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--kinds", default="logmel,phonemes")
    p.add_argument("--lam", type=float, default=100.0, help="ridge penalty on standardised features")
    args = p.parse_args()

    train_x, rate = synthesize(passage(args.seconds), engine="piper")
    train_x = to_mono_16k(train_x, rate)
    target = speech_envelope(train_x, 16_000, fps=25)  # the sample clip's mouth signal
    new_x, rate = synthesize(NEW_SENTENCE, engine="espeak")
    new_x = to_mono_16k(new_x, rate)
    n_new = int(round(new_x.size / 16_000 * 25))
    new_rms = ls.speech_rms(new_x, 16_000, 25, n_frames=n_new)
    cut = int(len(target) * 0.9)

    out = {"bench": "lipsync_features", "train_s": round(train_x.size / 16_000, 2),
           "new_s": round(new_x.size / 16_000, 2), "kinds": {}}
    for kind in args.kinds.split(","):
        t0 = time.perf_counter()
        feats, _ = extract_features(train_x, 16_000, len(target), kind=kind)
        new_feats, _ = extract_features(new_x, 16_000, n_new, kind=kind)
        x, xn = feats.reshape(len(feats), -1), new_feats.reshape(n_new, -1)
        model = _ridge(x[:cut], target[:cut], args.lam)
        held = ls.pearson(_predict(model, x[cut:]), target[cut:])
        pred = _predict(model, xn)
        offset, best = ls.best_offset(pred, new_rms, 5)
        out["kinds"][kind] = {"dim": int(feats.shape[-1]), "held_out_corr": round(held, 4),
                              "new_voice_corr": round(ls.pearson(pred, new_rms), 4),
                              "new_voice_best_offset": offset, "new_voice_best_corr": round(best, 4),
                              "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
