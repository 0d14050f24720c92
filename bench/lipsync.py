"""Lip sync you can measure: an avatar trained on one voice, scored on held-out frames and on a
new sentence in another voice.

1. A sample clip of about --seconds of one voice (piper) animating the sample portrait
   (flows.sample_clip); its last 10 % is held out (TrackingConfig.val_fraction).
2. preprocess_video with --features (and the clip's transcript unless --no-words: features that
   read words align their phones to it), then train_avatar up to the lips stage (--preset small: a
   CPU-sized model and step budget; --preset reference: ER-NeRF's model, --head-steps on a GPU;
   --mouth-weight counts the lips box's squared error N times; --attention-warmup conditions the
   head's first N steps on each frame's own audio code, before the attention smooths).
3. Held-out frames rendered over their ground-truth torso: PSNR, SSIM, LMD (mouth landmarks, px at
   512) and the Pearson correlation of the rendered mouth opening |lm66-lm62|/|lm54-lm48| with the
   ground truth's (dlib's 68 points on both; frames where either has no face are left out), and the
   largest audio-attention weight on any neighbouring frame (near 1: the attention collapsed).
4. A NEW sentence in a DIFFERENT voice (espeak-ng, models.eval.lipsync.SCORING_SENTENCE) rendered by
   render (from its text, or from its audio alone with --no-words) and scored by the phonetic
   measure (models.eval.lipsync.lip_sync_report): the rendered mouth on every frame (a frame
   without a face is a counted gap) against the visemes of the sentence's forced alignment:
   opening and width correlation, the share of /p b m/ whose middle frame shows closed lips, the
   offset; the old loudness correlation as a secondary figure; and the head's opacity on its
   first three frames against later ones (ghosting: a see-through head).

--seed takes several seeds: the clip and preprocessing are shared, training and scoring run per
seed. Prints one JSON object as its last line. Run twice with the same --root to compare feature
kinds: the clip and every preprocessing step but the audio features are cache hits the second time.

Targets, CPU, --preset small, within 20 min per seed on 2 cores: new voice opening correlation
>= 0.6, width correlation >= 0.4, bilabial closure >= 70 %, |offset| <= 1 frame.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from talkflow.contract import FEATURES  # noqa: E402 (torch-free: the table of feature kinds)

PERSON = "lipsync"
BUILT_IN_KINDS = [k for k, s in FEATURES.items() if s.computed and not s.asset]  # need no registered model
PASSAGE = (
    "The morning light fell softly across the quiet harbour. ",
    "Fishermen pulled their boats onto the shore and mended the nets. ",
    "A small dog barked at the gulls, which laughed and flew away. ",
    "Nobody in the village remembered a calmer summer than this one. ",
    "By noon the market was full of voices, colours and the smell of bread. ",
    "Children ran between the stalls, looking for apples and sweets. ",
)
SENTENCE_S = 3.0  # piper speaks each PASSAGE sentence in 3.2-3.6 s: a lower bound


def passage(seconds: float) -> str:
    """Enough PASSAGE sentences (cycled) for at least ``seconds`` of piper speech."""
    return "".join(PASSAGE[i % len(PASSAGE)] for i in range(max(1, math.ceil(seconds / SENTENCE_S))))


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", choices=BUILT_IN_KINDS, default=BUILT_IN_KINDS[0])
    p.add_argument("--preset", choices=["small", "reference"], default="small")
    p.add_argument("--seconds", type=float, default=60.0, help="approximate length of the sample clip")
    p.add_argument("--size", type=int, default=256, help="frame side, px (LMD is reported at 512)")
    p.add_argument("--head-steps", type=int, default=None, help="default: 2000 small, 5000 reference")
    p.add_argument("--lips-steps", type=int, default=None, help="default: head-steps / 10")
    p.add_argument("--rays", type=int, default=None, help="rays per step; default 2048 small, 65536 reference")
    p.add_argument("--mouth-weight", type=float, default=1.0,
                   help="head and lips stages: squared errors in the lips box count this many times (1: reference)")
    p.add_argument("--attention-warmup", type=int, default=0,
                   help="head stage: the first N steps use each frame's own audio code, the attention skipped")
    p.add_argument("--seed", type=int, nargs="+", default=[0, 1],
                   help="seeds of the training's ray sampling (run-to-run spread); one training per seed")
    p.add_argument("--photometric", action=argparse.BooleanOptionalAction, default=True,
                   help="photometric refinement of the 3DMM tracking")
    p.add_argument("--max-offset", type=int, default=5, help="audio-video offsets searched, frames")
    p.add_argument("--words", action=argparse.BooleanOptionalAction, default=True,
                   help="give the features the words spoken (the clip's transcript, the new sentence's text): "
                        "visemes align their phones to them; --no-words: recognised phones only")
    p.add_argument("--root", type=Path, default=None, help="data root (reuse it to share the cache); default: new")
    return p.parse_args()


def _train_config(args: argparse.Namespace, seed: int):
    from tasks.train_config import TrainAvatarConfig, TrainStageConfig

    head = args.head_steps or (2000 if args.preset == "small" else 5000)
    lips = args.lips_steps or max(head // 10, 1)
    mouth = {"mouth_weight": args.mouth_weight} if args.mouth_weight != 1.0 else {}
    warmup = {"attention_warmup_steps": args.attention_warmup} if args.attention_warmup else {}
    if args.preset == "reference":
        rays = args.rays or 65536
        return TrainAvatarConfig(head=TrainStageConfig(steps=head, rays_per_batch=rays, seed=seed,
                                                       overrides={**mouth, **warmup}),
                                 lips=TrainStageConfig(steps=lips, rays_per_batch=rays, seed=seed, overrides=mouth))
    rays = args.rays or 2048
    quick = {"rays_per_batch": rays, "checkpoint_every": 500, "val_frames": 4, "val_downscale": 2, "seed": seed}
    # MLPs at 5x the reference rate; the audio attention at the reference's own (faster, it collapses)
    return TrainAvatarConfig(model="small", head=TrainStageConfig(steps=head, lr_net=5e-3, overrides={
        "attention_lr_mult": 1.0, **mouth, **warmup}, **quick),
        lips=TrainStageConfig(steps=lips, overrides=mouth, **quick))


def _held_out(dataset, checkpoint: Path, work: Path) -> dict:
    """Render the validation frames over their gt torso and score them against gt_imgs."""
    import numpy as np
    import torch

    from models.ernerf.audio import attention_profile
    from models.ernerf.dataset import load_split
    from models.ernerf.trainer import load_model
    from models.eval import lipsync as ls
    from tasks.dataset import materialize_dataset

    val = load_split(materialize_dataset(dataset, work / "dataset"), "val")
    model = load_model(checkpoint)
    bgs = torch.stack([val.torso_over_background(k) for k in range(len(val))])
    t0 = time.perf_counter()
    with torch.no_grad():
        pred = model.render_frames(val.audio, val.poses, focal=val.focal, cx=val.cx, cy=val.cy, height=val.height,
                                   width=val.width, background=bgs, aud_index=val.aud_ids, eye=val.eye,
                                   with_torso=False, mixed_precision=False)
    render_s = time.perf_counter() - t0
    gt = val.images.numpy()
    scores = ls.image_scores(pred, gt)
    p_lm, g_lm = ls.landmarks_per_frame(pred), ls.landmarks_per_frame(gt)
    both = [k for k in range(len(val)) if p_lm[k] is not None and g_lm[k] is not None]
    out = {"frames": len(val), "frames_with_faces": len(both), "render_fps": round(len(val) / render_s, 2),
           "psnr": round(scores["psnr"], 3), "ssim": round(scores["ssim"], 4),
           "attention_max": attention_profile(model.audio, val.audio, val.aud_ids)["max"]}
    if both:
        pl, gl = np.stack([p_lm[k] for k in both]), np.stack([g_lm[k] for k in both])
        po, go = ls.mouth_opening(pl), ls.mouth_opening(gl)
        out.update(lmd_512=round(ls.lmd_at(pl, gl, val.width), 3),
                   mouth_corr=round(ls.pearson(po, go), 4),
                   mouth_std=round(float(po.std()), 4), gt_mouth_std=round(float(go.std()), 4))
    return out


def _edge_opacity(dataset, checkpoint: Path, features, work: Path) -> dict:
    """Ghosting at the start of a render: the head's opacity on the new sentence's frames 0-2
    against frames in its middle, all at one training pose. Each frame is rendered over black and
    over white: opacity = 1 - (white - black); averaged over the pixels the later frames hold
    opaque (> 0.5)."""
    import numpy as np
    import torch

    from models.ernerf.dataset import load_split
    from models.ernerf.trainer import load_model
    from tasks.dataset import materialize_dataset
    from tasks.inputs import local_file

    train = load_split(materialize_dataset(dataset, work / "dataset-train"), "train")
    model = load_model(checkpoint)
    feats = torch.from_numpy(np.load(local_file(features["feats"])).astype(np.float32))
    mid = feats.shape[0] // 2
    index = torch.tensor([0, 1, 2, mid, mid + 1, mid + 2])
    poses = train.poses[:1].expand(len(index), 4, 4)
    over = {}
    with torch.no_grad():
        for name, value in (("black", 0.0), ("white", 1.0)):
            bg = torch.full((train.height, train.width, 3), value)
            over[name] = model.render_frames(feats, poses, focal=train.focal, cx=train.cx, cy=train.cy,
                                             height=train.height, width=train.width, background=bg, aud_index=index,
                                             with_torso=False, mixed_precision=False).astype(np.float32) / 255
    opacity = 1.0 - (over["white"] - over["black"]).mean(-1)  # (6, H, W)
    head = opacity[3:].mean(0) > 0.5
    first, later = opacity[:3, head].mean(1), float(opacity[3:, head].mean())
    return {"first_frames": [round(float(v), 4) for v in first], "later": round(later, 4),
            "worst_ratio": round(float(first.min() / later), 4)}


def _new_voice(dataset, checkpoint: Path, work: Path, words: bool) -> dict:
    """Render SCORING_SENTENCE spoken by espeak-ng (from its text when `words`, so that features
    that read words align to it; else from the audio alone); score it with the phonetic measure."""
    import numpy as np
    from PIL import Image

    from flows.render import RenderVideoConfig, render
    from models.audio.tts import synthesize
    from models.eval import lipsync as ls
    from talkflow import media
    from talkflow.store import get_store
    from tasks.inputs import local_file
    from tasks.render import RenderConfig
    from tasks.speech import SpeechConfig

    config = RenderVideoConfig(render=RenderConfig(with_torso=False), speech=SpeechConfig(engine="espeak"))
    t0 = time.perf_counter()
    if words:
        result = render(PERSON, text=ls.SCORING_SENTENCE, config=config)
    else:
        samples, rate = synthesize(ls.SCORING_SENTENCE, engine="espeak")
        wav = work / "new_voice.wav"
        media.write_wav(wav, samples, rate)
        result = render(PERSON, audio=wav, config=config)
    render_s = time.perf_counter() - t0
    folder = get_store().fetch(result.frames["frames"])  # a directory artifact
    n = result.frames.meta["n_frames"]
    frames = np.stack([np.asarray(Image.open(Path(folder) / f"{i}.jpg").convert("RGB")) for i in range(n)])
    audio, arate = media.read_wav(local_file(result.audio["audio"]))
    return {"voice": "espeak-ng", "seconds": round(render_s, 1),
            **ls.lip_sync_report(frames, audio, arate, ls.SCORING_SENTENCE),
            "head_opacity": _edge_opacity(dataset, checkpoint, result.features, work)}


def main() -> None:
    args = _args()
    os.environ["TALKFLOW_DATA_ROOT"] = str(args.root or tempfile.mkdtemp(prefix="talkflow-lipsync-"))
    os.environ.pop("PREFECT_API_URL", None)
    sys.path.insert(0, str(ROOT))

    import talkflow  # noqa: F401  (embedded Prefect settings)
    from flows.preprocess import PreprocessConfig, preprocess_video
    from flows.sample_clip import SampleClipConfig, make_sample_clip
    from flows.train import train_avatar
    from models.audio.features import AudioFeatureConfig
    from talkflow.store import get_store
    from tasks.inputs import local_file
    from tasks.media import NormalizeConfig
    from tasks.speech import SpeechConfig
    from tasks.tracking import TrackingConfig

    times = {}
    t0 = time.perf_counter()
    transcript = passage(args.seconds)
    sample = make_sample_clip(transcript, SampleClipConfig(size=args.size), SpeechConfig(engine="piper"))
    clip = get_store().fetch(sample["video"])
    times["clip_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    config = PreprocessConfig(normalize=NormalizeConfig(size=args.size), audio=AudioFeatureConfig(kind=args.features),
                              tracking=TrackingConfig(photometric=args.photometric, val_fraction=0.1))
    dataset = preprocess_video(clip, PERSON, config, transcript=transcript if args.words else "")
    times["preprocess_s"] = round(time.perf_counter() - t0, 1)

    per_seed = {}
    for seed in args.seed:
        t0 = time.perf_counter()
        avatar = train_avatar(PERSON, _train_config(args, seed), stage="lips")  # the dataset preprocess registered
        train_s = round(time.perf_counter() - t0, 1)
        with tempfile.TemporaryDirectory(prefix="lipsync-") as tmp:
            work = Path(tmp)
            t0 = time.perf_counter()
            held = _held_out(dataset, local_file(avatar.lips["checkpoint"]), work)
            held_s = round(time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            new = _new_voice(dataset, local_file(avatar.lips["checkpoint"]), work, args.words)
        per_seed[str(seed)] = {"held_out": held, "new_voice": new, "head_steps": avatar.head.meta["steps"],
                               "lips_steps": avatar.lips.meta["steps"],
                               "times": {"train_s": train_s, "held_out_s": held_s,
                                         "new_voice_s": round(time.perf_counter() - t0, 1)}}
        print(json.dumps({"seed": seed, **per_seed[str(seed)]}), flush=True)

    print(json.dumps({
        "bench": "lipsync", "features": args.features, "words": args.words, "mouth_weight": args.mouth_weight,
        "attention_warmup": args.attention_warmup,
        "preset": args.preset, "size": args.size,
        "seeds": args.seed,
        "clip_s": round(sample.meta["duration_s"], 2), "frames": dataset.meta["n_frames"],
        "n_train": dataset.meta["n_train"], "n_val": dataset.meta["n_val"], "times": times, "runs": per_seed,
    }))


if __name__ == "__main__":
    main()
