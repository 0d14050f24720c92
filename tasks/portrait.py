"""One-shot portraits (NeRFFaceSpeech): the character fit (3DMM, then PTI of a generator or the
warp rig of the portrait itself), cached per character and image content, then audio ->
expressions -> rendered frames (the tuned generator's, or the warped portrait's).

The fit stages take the image as a Path (its sha256 enters the key), the generator checkpoint
as a Path (its sha256 too) and the character as the namespace: a new image under an old
character name is a new key, and one character's entries can be listed and freed alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from models.nerffacespeech.config import FaceFitConfig, GeneratorConfig, PhoneticDriverConfig, PTIConfig, RenderConfig
from models.portrait_warp.config import WarpRenderConfig, WarpRigConfig
from talkflow import media
from talkflow.cache import stage
from talkflow.contract import VIDEO_FPS
from talkflow.hashing import sha256_file
from talkflow.store import StageResult, get_store
from tasks.inputs import local_file, morphable_model, scratch

if TYPE_CHECKING:  # the models import torch: each stage imports them when it computes
    import torch

    from models.nerffacespeech.generator import TriplaneGenerator


class GeneratorChoice(BaseModel):
    """The fallback generator used while no checkpoint is registered (`talkflow assets add generator`)."""

    seed: int = Field(0, description="Seed of the randomly initialised small generator.")
    config: GeneratorConfig = Field(
        default_factory=GeneratorConfig.small,
        description="Shape of the fallback generator (the small CPU-sized one by default).")


def load_coeffs(fit: StageResult) -> dict[str, torch.Tensor]:
    import torch

    return torch.load(local_file(fit["coeffs"]), weights_only=True)


def load_fitted_portrait(fit: StageResult) -> np.ndarray:
    with Image.open(local_file(fit["portrait"])) as im:
        return np.asarray(im.convert("RGB"))


def build_generator(checkpoint: Path | None, choice: GeneratorChoice) -> TriplaneGenerator:
    from models.nerffacespeech.generator import load_generator, small_generator

    return load_generator(checkpoint) if checkpoint is not None else small_generator(choice.seed, choice.config)


@stage("portrait_fit", "2")
def fit_character_face(image: Path, config: FaceFitConfig, bfm: Path | None = None,
                       namespace: str | None = None) -> StageResult:
    """Square face-centred crop of the portrait, its 68 landmarks and its 3DMM fit (fitted_coeffs)."""
    import torch

    from models.nerffacespeech.face_fit import crop_portrait, fit_portrait, load_portrait

    img = load_portrait(local_file(image), config.min_size, square=False)
    if img.shape[0] != img.shape[1]:
        img = crop_portrait(img)
    fit = fit_portrait(img, morphable_model(bfm), config)
    with scratch("portrait") as work:
        Image.fromarray(img).save(work / "portrait.png")
        torch.save(fit.coeffs, work / "coeffs.pt")
        np.save(work / "landmarks.npy", np.asarray(fit.landmarks, np.float32))
        store = get_store()
        artifacts = {name: store.put_file(work / file) for name, file in
                     (("portrait", "portrait.png"), ("coeffs", "coeffs.pt"), ("landmarks", "landmarks.npy"))}
    return StageResult(artifacts=artifacts, meta={
        "image_sha256": sha256_file(local_file(image)), "size": int(img.shape[0]),
        "reprojection_error_px": round(fit.reprojection_error_px, 3), "model": fit.model_name,
        "seconds": fit.seconds})


@stage("pti", "1")
def invert_portrait(fit: StageResult, config: PTIConfig, generator: Path | None = None,
                    fallback: GeneratorChoice = GeneratorChoice(), bfm: Path | None = None,
                    lpips: Path | None = None, namespace: str | None = None) -> StageResult:
    """Pivotal Tuning Inversion of the portrait: G_PTI, w_PTI and bg_PTI in one file.

    generator: a converted checkpoint (else the small fallback, whose geometry is pulled onto the
    face fitted with `bfm`); lpips: LPIPS-Alex weights for the perceptual loss (else the
    substitute). Each file's content is in the cache key."""
    from models.nerffacespeech.deform import FaceRig
    from models.nerffacespeech.face_fit import portrait_camera
    from models.nerffacespeech.pti import run_pti

    g = build_generator(generator, fallback)
    coeffs = load_coeffs(fit)
    camera = portrait_camera(coeffs, g.cfg.focal, g.cfg.camera_radius, g.cfg.camera_pivot)
    target = load_fitted_portrait(fit)
    face_depth = None
    if generator is None:  # the fallback has no face prior: pull its geometry onto the fitted face
        rig = FaceRig.from_fit(coeffs, morphable_model(bfm), camera)
        face_depth = rig.depth_map(camera, g.cfg.neural_rendering_resolution)
    result = run_pti(g, target, camera, config, face_depth=face_depth, lpips=lpips)
    with scratch("pti") as work:
        result.save(work / "pti.pt")
        art = get_store().put_file(work / "pti.pt")
    return StageResult(artifacts={"pti": art}, meta={
        "error_initial": result.error_initial, "error_pivot": result.error_pivot,
        "error_final": result.error_final, "loss": result.loss_kind, "seconds": result.seconds,
        "generator": "registered" if generator is not None else f"small (seed {fallback.seed})"})


@stage("audio2exp", "3")
def audio_to_expressions(audio: StageResult, fit: StageResult, fps: int = VIDEO_FPS, weights: Path | None = None,
                         bfm: Path | None = None, driver: PhoneticDriverConfig = PhoneticDriverConfig(),
                         text: str | None = None, namespace: str | None = None) -> StageResult:
    """Per-frame expression coefficients (T, K) from speech, around the portrait's own expression:
    the one driver of both renderers. Without network weights, the phonetic driver (`driver`): the
    phones aligned to `text` (what is said, when known) or recognised, with the lip closure of
    /p b m/ kept beside the coefficients (``closure``) and the phone timeline (``phones``)."""
    from models.nerffacespeech.audio2exp import PhoneticAudioToExpression, load_audio2exp

    samples, rate = media.read_wav(local_file(audio["audio"]))
    model = morphable_model(bfm)
    meta = {"fps": fps, "predictor": "network" if weights else "phonetic"}
    with scratch("a2e") as work:
        files = {}
        if weights is not None:
            delta = load_audio2exp(weights).predict(samples, rate, fps=fps, text=text)
        else:
            predictor = PhoneticAudioToExpression(model.exp_names, driver)
            curves = predictor.curves(samples, rate, fps=fps, text=text)
            delta = predictor.expressions(curves)
            np.save(work / "closure.npy", curves["closure"])
            files["closure"] = work / "closure.npy"
            if curves["timeline"] is not None:
                (work / "phones.json").write_text(curves["timeline"].to_json())
                files["phones"] = work / "phones.json"
                meta["phones"] = curves["timeline"].source
        exp = delta + load_coeffs(fit)["exp"].reshape(1, -1).numpy()
        np.save(work / "exp.npy", exp.astype(np.float32))
        files["exp"] = work / "exp.npy"
        store = get_store()
        artifacts = {name: store.put_file(path) for name, path in files.items()}
    return StageResult(artifacts=artifacts, meta={"n_frames": int(exp.shape[0]), **meta})


@stage("portrait_render", "1")
def render_portrait(pti: StageResult, fit: StageResult, expressions: StageResult, config: RenderConfig,
                    bfm: Path | None = None, namespace: str | None = None) -> StageResult:
    """Frames of the tuned generator, its rays deformed by the expression sequence."""
    from models.nerffacespeech.face_fit import portrait_camera
    from models.nerffacespeech.pti import load_pti
    from models.nerffacespeech.render import render_frames

    result = load_pti(local_file(pti["pti"]))
    g = result.generator()
    coeffs = load_coeffs(fit)
    camera = portrait_camera(coeffs, g.cfg.focal, g.cfg.camera_radius, g.cfg.camera_pivot)
    exp = np.load(local_file(expressions["exp"]))
    frames = render_frames(g, result.w_pivot, coeffs, exp, camera, model=morphable_model(bfm),
                           background=result.background, config=config)
    with scratch("portrait-frames") as work:
        media.write_frames(frames, work / "frames", ext="png")
        art = get_store().put_dir(work / "frames")
    return StageResult(artifacts={"frames": art},
                       meta={"n_frames": len(frames), "ext": "png", "size": int(frames.shape[1])})


@stage("warp_rig", "1")
def rig_portrait(fit: StageResult, config: WarpRigConfig, bfm: Path | None = None,
                 namespace: str | None = None) -> StageResult:
    """The warp renderer's per-character rig: the portrait bound to its fitted mesh, face mask,
    lip lines and mouth-interior colours (the generator path's PTI, for the warp path)."""
    from models.portrait_warp.rig import build_rig

    rig = build_rig(load_fitted_portrait(fit), np.load(local_file(fit["landmarks"])), load_coeffs(fit),
                    morphable_model(bfm), config)
    with scratch("warp-rig") as work:
        art = get_store().put_file(rig.save(work / "rig.pt"))
    return StageResult(artifacts={"rig": art}, meta={"size": rig.size, "moving_pixels": int(rig.pix.numel()),
                                                     "teeth_strength": round(float(rig.teeth_strength), 3)})


@stage("warp_render", "2")
def render_warped_portrait(rig: StageResult, expressions: StageResult, config: WarpRenderConfig,
                           bfm: Path | None = None, namespace: str | None = None) -> StageResult:
    """Frames of the portrait itself, warped by the expression sequence (JPEG, the portrait's size)."""
    from models.portrait_warp.render import render_warp
    from models.portrait_warp.rig import load_rig

    warp_rig = load_rig(local_file(rig["rig"]))
    closure = np.load(local_file(expressions["closure"])) if "closure" in expressions.artifacts else None
    frames = render_warp(warp_rig, morphable_model(bfm), np.load(local_file(expressions["exp"])), config,
                         closure=closure)
    with scratch("warp-frames") as work:
        media.write_frames(frames, work / "frames", ext="jpg")
        art = get_store().put_dir(work / "frames")
    return StageResult(artifacts={"frames": art},
                       meta={"n_frames": len(frames), "ext": "jpg", "size": warp_rig.size})
