"""Audio features as a cached stage: speech -> the (T, 16, D) windows an ER-NeRF avatar reads,
one per video frame. Preprocessing computes them for the training clip, rendering for new
speech, and the features flow on its own: the same stage, so the same audio hits the same entry."""

from __future__ import annotations

from pathlib import Path

from models.audio.config import AudioFeatureConfig, FeatureInfo
from talkflow import media
from talkflow.cache import stage
from talkflow.settings import get_settings
from talkflow.store import Artifact, StageResult, get_store
from tasks.inputs import local_file, scratch


@stage("audio_features", "2")
def audio_features(
    audio: Artifact,
    n_frames: int,
    config: AudioFeatureConfig,
    model_dir: Path | None = None,
    deepspeech: Path | None = None,
    namespace: str | None = None,
    text: str | None = None,
) -> StageResult:
    """(T,16,D) features per video frame: log-mel by default, HuBERT/wav2vec2 from a local model
    folder, or a supplied DeepSpeech .npy. `text`: the words spoken, for a
    kind that reads them (talkflow.contract.words_read)."""
    from models.audio.features import extract_features, load_deepspeech_npy, save_features

    with scratch("audio") as work:
        if deepspeech is not None:
            feats = load_deepspeech_npy(local_file(deepspeech), n_frames)
            info = FeatureInfo(kind="deepspeech", dim=int(feats.shape[-1]))
        else:
            samples, rate = media.read_wav(local_file(audio))
            feats, info = extract_features(samples, rate, n_frames, model_dir=model_dir,
                                           device=get_settings().torch_device(), config=config, text=text)
        npy, meta = save_features(work, feats, info)
        store = get_store()
        recorded = {} if deepspeech is not None else {"config": config.model_dump(mode="json")}
        return StageResult(artifacts={"feats": store.put_file(npy), "info": store.put_file(meta)},
                           meta=info.model_dump() | recorded)


__all__ = ["audio_features"]
