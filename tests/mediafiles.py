"""Small real media files made with ffmpeg's lavfi sources, for tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def ffmpeg_run(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True
    )


def make_clip(
    path: Path,
    *,
    duration: float = 2.0,
    fps: int = 30,
    size: str = "320x240",
    audio: bool = True,
    audio_s: float | None = None,
) -> Path:
    """A test-pattern video with a 440 Hz tone; `audio_s`: a tone that ends then (else with the picture)."""
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={duration}"]
    if audio:
        args += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate=44100:duration={duration if audio_s is None else audio_s}",
        ]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    args += (["-c:a", "aac"] + (["-shortest"] if audio_s is None else [])) if audio else ["-an"]
    ffmpeg_run(*args, str(path))
    return path
