"""Make the README's pictures: frames of the demo's avatar and of a one-shot portrait, tiled by ffmpeg.

    python scripts/readme_figure.py [--out docs/img] [--frames 6] [--tile 160]

Runs the demo (all cache hits when it ran before in the same data root) and a portrait video of
the astronaut photo through talkflow.api.Talkflow, then writes
  demo.jpg      top row: the sample clip the avatar trained on; bottom row: the avatar saying a new sentence
  portrait.jpg  the one-shot portrait (warp renderer unless a generator is registered) saying a sentence
Each picture is a row of evenly spaced frames, `--tile` px square each; rerun it to refresh them.
The last line printed is one JSON object: the pictures, their sizes in bytes, the videos they came from.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PORTRAIT_TEXT = "Hello! I was made from a single photo."
MAX_BYTES = 300_000  # the README's pictures stay small


def frame_count(video: Path) -> int:
    from talkflow import media

    info = media.probe(video)
    if not info.n_frames:
        raise SystemExit(f"error: {video} reports no frame count")
    return info.n_frames


def row(video: Path, dst: Path, frames: int, tile: int) -> Path:
    """One row of `frames` evenly spaced frames of `video`, each `tile` px square."""
    n = frame_count(video)
    step = max(1, n // frames)
    picks = "+".join(f"eq(n\\,{min(n - 1, step // 2 + i * step)})" for i in range(frames))
    vf = f"select='{picks}',scale={tile}:{tile}:flags=lanczos,tile={frames}x1"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-vf", vf, "-frames:v", "1",
                    "-fps_mode", "passthrough", str(dst)], check=True)
    return dst


def stack(rows: list[Path], dst: Path, quality: int) -> Path:
    """Rows one above the other as a JPEG (`quality`: ffmpeg's -q:v, 2 best .. 31 worst)."""
    inputs = [a for r in rows for a in ("-i", str(r))]
    graph = ["-filter_complex", f"vstack=inputs={len(rows)}"] if len(rows) > 1 else []
    subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, *graph, "-q:v", str(quality), str(dst)], check=True)
    if dst.stat().st_size > MAX_BYTES:
        raise SystemExit(f"error: {dst} is {dst.stat().st_size} bytes (over {MAX_BYTES}); use fewer or smaller tiles")
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder of the pictures")
    parser.add_argument("--frames", type=int, default=6, help="frames per row")
    parser.add_argument("--tile", type=int, default=160, help="side of one frame in the picture, px")
    parser.add_argument("--quality", type=int, default=5, help="JPEG quality as ffmpeg's -q:v (2 best .. 31)")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.tile < 16:
        parser.error("--frames must be >= 1 and --tile >= 16")

    from models.synth.talking_photo import sample_portrait
    from talkflow.api import Talkflow

    args.out.mkdir(parents=True, exist_ok=True)
    tf = Talkflow()
    demo = tf.demo()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photo = work / "astronaut.png"
        from PIL import Image

        Image.fromarray(sample_portrait(512)).save(photo)
        portrait = tf.portrait(photo, text=PORTRAIT_TEXT, character="readme-astronaut",
                               output_path=work / "portrait.mp4")
        demo_jpg = stack([row(demo.sample_clip, work / "clip.png", args.frames, args.tile),
                          row(demo.avatar_new_sentence, work / "avatar.png", args.frames, args.tile)],
                         args.out / "demo.jpg", args.quality)
        portrait_jpg = stack([row(portrait.video_path, work / "portrait.png", args.frames, args.tile)],
                             args.out / "portrait.jpg", args.quality)
        renderer = portrait.result.renderer
    print(json.dumps({"demo_jpg": str(demo_jpg), "demo_bytes": demo_jpg.stat().st_size,
                      "portrait_jpg": str(portrait_jpg), "portrait_bytes": portrait_jpg.stat().st_size,
                      "demo_videos": [str(demo.sample_clip), str(demo.avatar_new_sentence)],
                      "portrait_renderer": renderer}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
