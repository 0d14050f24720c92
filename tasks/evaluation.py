"""Quality figures of a rendered video, as a cached task: the phonetic lip-sync measure."""

from __future__ import annotations

from talkflow import media
from talkflow.cache import stage
from talkflow.contract import SAMPLE_RATE
from talkflow.store import Artifact, StageResult
from tasks.inputs import local_file, scratch


@stage("lip_sync", "1")
def score_lip_sync(video: Artifact, text: str | None = None, namespace: str | None = None) -> StageResult:
    """models.eval.lipsync.lip_sync_report of an mp4 (frames and speech) against the phones of its
    speech (aligned to `text` when given, else recognised): opening and width correlation, bilabial
    closure, offset, frames without a face, and the loudness correlation as a secondary figure."""
    import numpy as np
    from PIL import Image

    from models.eval.lipsync import lip_sync_report

    path = local_file(video)
    info = media.probe(path)
    with scratch("lipsync") as work:
        media.extract_audio(path, work / "audio.wav", sample_rate=SAMPLE_RATE)
        samples, rate = media.read_wav(work / "audio.wav")
        n = media.extract_frames(path, work / "frames", ext="png")
        frames = np.stack([np.asarray(Image.open(work / "frames" / f"{i}.png").convert("RGB")) for i in range(n)])
    report = lip_sync_report(frames, samples, rate, text, fps=info.fps)
    return StageResult(artifacts={}, meta=report)
