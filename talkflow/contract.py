"""The media contract and the audio feature kinds: the one table the rest of talkflow derives from.

Frame rate, sample rate, the frame-count rule, per-frame RMS, the limits that refuse an input,
and every audio feature kind (its width, what computes it, the asset it needs, the file name
ER-NeRF's loader reads). The models, the stage configs (so the Prefect forms), the CLI's checks
and docs/media-contract.md (written by `python -m talkflow.contract`) all read them from here:
adding a feature kind is one row below plus its computing function.

Importing this module imports neither torch nor Prefect nor numpy (numpy only inside `frame_rms`).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# -- the media contract ------------------------------------------------------------------------
VIDEO_FPS = 25  # video frames per second: what ER-NeRF trains on, and every rendered video
SAMPLE_RATE = 16_000  # Hz of the mono audio that features, phone decoding and speech models read
FEATURE_FPS = 50  # audio feature rows per second (a hop of 320 samples at 16 kHz)
WINDOW = 16  # feature rows per video frame (0.32 s centred on the frame)

# -- what an input must be (checked before any work: docs/media-contract.md) ---------------------
MIN_CLIP_S = 1.0  # shortest talking video preprocessing accepts, s
MIN_PORTRAIT_PX = 128  # smallest portrait side the one-shot fit accepts, px
MAX_SPEECH_S = 600.0  # longest speech rendered in one call, s (split longer audio)
MAX_AUDIO_GAP_S = 0.5  # the picture may outlast its sound by this much: trimmed to the sound, with a warning
AUDIO_SLACK_S = 1.0 / VIDEO_FPS  # a shortfall of up to one frame is encoder slack: nothing to do


def frame_count(n_samples: int, sample_rate: int = SAMPLE_RATE, fps: float = VIDEO_FPS) -> int:
    """Video frames of a clip of `n_samples` audio samples: ceil(duration * fps), so every sample is
    shown (the last frame may be partly silent); a float error of 1e-9 frame does not add a frame."""
    if sample_rate <= 0 or fps <= 0:
        raise ValueError(f"bad rates: sample_rate={sample_rate}, fps={fps}")
    return max(math.ceil(n_samples * fps / sample_rate - 1e-9), 0)


def frame_rms(samples, sample_rate: int, fps: float = VIDEO_FPS, n_frames: int | None = None):
    """RMS per video frame (T,) float64 of mono samples (N,) (or (N, C), channels averaged):
    frame t covers samples [round(t sr / fps), round((t+1) sr / fps)); T defaults to `frame_count`;
    frames past the audio's end are 0."""
    import numpy as np

    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples (N,), got shape {x.shape}")
    t = frame_count(x.size, sample_rate, fps) if n_frames is None else int(n_frames)
    bounds = np.minimum(np.round(np.arange(t + 1) * sample_rate / fps).astype(np.int64), x.size)  # (T+1,)
    sq = np.concatenate([[0.0], np.cumsum(x * x)])  # (N+1,)
    counts = np.maximum(bounds[1:] - bounds[:-1], 1)
    return np.sqrt((sq[bounds[1:]] - sq[bounds[:-1]]) / counts)


# -- the audio feature kinds -------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSpec:
    """One audio feature kind: (T, WINDOW, width) windows per video frame."""

    name: str
    width: int  # D: feature values per 50 Hz row (of the reference model, for a kind read from an asset)
    summary: str  # what the features are, in one line
    computes: str | None  # "module:function" that computes the 50 Hz rows from 16 kHz audio; None: supplied
    reference_file: str  # the file name ER-NeRF's loader reads in a dataset folder
    asset: str | None = None  # the registered asset (talkflow.assets) it needs, if any
    asset_file: str | None = None  # the file or folder the asset is known by
    reads_text: bool = False  # its phones are aligned to the spoken words when they are known

    @property
    def computed(self) -> bool:
        return self.computes is not None


FEATURES: dict[str, FeatureSpec] = {s.name: s for s in [  # the reference's default first
    FeatureSpec("deepspeech", 29, "DeepSpeech logits written by ER-NeRF's own extractor (a supplied .npy)",
                None, "aud_ds.npy"),
    FeatureSpec("logmel", 80, "80-band log-mel spectrogram, each band standardised over the clip",
                "models.audio.features:logmel_rows", "aud.npy"),
    FeatureSpec("phonemes", 40, "share of each of 39 phones + silence, decoded by pocketsphinx's bundled en-us model",
                "models.audio.features:phoneme_rows", "aud.npy"),
    FeatureSpec("visemes", 4, "the mouth targets (opening, width, rounding, closure) of the speech's phones "
                "(aligned to its words when they are known, else recognised by pocketsphinx) through the viseme "
                "model", "models.audio.features:viseme_rows", "aud.npy", reads_text=True),
    FeatureSpec("hubert", 1024, "last hidden state of HuBERT large (ER-NeRF's hubert-large-ls960-ft)",
                "models.audio.features:hubert_rows", "aud_hu.npy", "hubert", "hubert-large-ls960-ft/"),
    FeatureSpec("wav2vec2", 44, "CTC logits of wav2vec2 (ER-NeRF's wav2vec2-large-xlsr-53-esperanto)",
                "models.audio.features:wav2vec2_rows", "aud_eo.npy", "wav2vec2", "wav2vec2-large-xlsr-53-esperanto/"),
]}
DEFAULT_FEATURES = "logmel"
COMPUTED_KINDS: tuple[str, ...] = tuple(k for k, s in FEATURES.items() if s.computed)
ASSET_KINDS: tuple[str, ...] = tuple(k for k, s in FEATURES.items() if s.asset)  # need a registered model
TEXT_KINDS: tuple[str, ...] = tuple(k for k, s in FEATURES.items() if s.reads_text)  # align to the words spoken
FEATURE_DIMS: dict[str, int] = {k: s.width for k, s in FEATURES.items()}

# The kinds as types: pydantic and the Prefect forms offer them as choices.
FeatureKind = Literal[COMPUTED_KINDS]  # type: ignore[valid-type]  # kinds talkflow computes from audio
AnyFeatureKind = Literal[tuple(FEATURES)]  # type: ignore[valid-type]  # any kind a dataset may hold


def feature_spec(kind: str) -> FeatureSpec:
    """The table's row of `kind`; ValueError listing the kinds when it has none."""
    try:
        return FEATURES[kind]
    except KeyError:
        raise ValueError(f"unknown audio feature kind {kind!r}; kinds: {', '.join(FEATURES)}") from None


def words_read(kind: str, text: str | None) -> str | None:
    """The spoken words a `kind` gets: `text` (stripped) when the kind aligns its phones to them,
    else None (so that words never change the cache key of features that do not read them)."""
    text = (text or "").strip()
    return text if text and FEATURES[kind].reads_text else None


def kinds_text(kinds: tuple[str, ...] = COMPUTED_KINDS) -> str:
    """'logmel, phonemes, hubert or wav2vec2'."""
    return ", ".join(kinds[:-1]) + f" or {kinds[-1]}" if len(kinds) > 1 else "".join(kinds)


# -- the documentation page --------------------------------------------------------------------
DOC_PATH = Path("docs") / "media-contract.md"


def markdown() -> str:
    """docs/media-contract.md, generated from this module (a test checks the page against it)."""
    rows = "\n".join(
        f"| `{s.name}` | {s.width} | {s.summary} | "
        f"{f'`{s.computes}`' if s.computes else 'not computed: supplied to `preprocess --deepspeech`'} | "
        f"{f'`{s.asset}` (`{s.asset_file}`)' if s.asset else '-'} | `{s.reference_file}` |"
        for s in FEATURES.values())
    return f"""# The media contract and the audio feature kinds

Generated from `talkflow/contract.py` by `python -m talkflow.contract`; edit the module, not this
page (a test checks that they agree).

## Media

| what | value |
|---|---|
| video frame rate | {VIDEO_FPS} fps (every training clip is resampled to it; every video is rendered at it) |
| audio | mono, {SAMPLE_RATE} Hz, 16-bit PCM wav |
| audio feature rows | {FEATURE_FPS} per second; {WINDOW} rows ({WINDOW / FEATURE_FPS:.2f} s) per video frame, centred |
| frames of an audio clip | ceil(duration x {VIDEO_FPS}): every sample is shown; the last frame may be partly silent |
| per-frame loudness | RMS of the samples of [t / {VIDEO_FPS}, (t + 1) / {VIDEO_FPS}) s; 0 past the audio's end |

## What an input must be

Checked when the command starts, before Prefect or any model is loaded (one line on stderr,
exit code 2, in well under 2 s), and again by the stages themselves (the Prefect UI and
schedules start flows without the CLI):

- a talking video has a picture and a sound track, and lasts at least {MIN_CLIP_S:g} s;
- its sound must last as long as its picture. A picture that outlasts the sound by more than
  {MAX_AUDIO_GAP_S:g} s is refused (its last frames would have no sound to learn from); by more than
  one frame ({AUDIO_SLACK_S:.2f} s) and at most {MAX_AUDIO_GAP_S:g} s, the video is trimmed to the end of
  its sound, with a warning; within one frame, nothing is done (encoder slack);
- speech to render or to compute features from has a sound track of at most {MAX_SPEECH_S:g} s;
- a portrait is a readable image of at least {MIN_PORTRAIT_PX} x {MIN_PORTRAIT_PX} px.

## Audio feature kinds

`talkflow features AUDIO --kind K`, `talkflow preprocess --features K`. Every kind is windowed
the same way: (T, {WINDOW}, D) float32, written as `aud_feats.npy` with `aud_feats.json`, and
in a dataset folder also under the reference's file name. A kind that needs an asset fails,
before any work, with the command that registers it (`talkflow assets add NAME PATH`). The
width of a kind read from an asset is the reference model's; another model of the same kind
gives its own width.

| kind | width D | what it is | computed by | asset | reference file |
|---|---|---|---|---|---|
{rows}
"""


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / DOC_PATH
    out.write_text(markdown())
    print(out)
