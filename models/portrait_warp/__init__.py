"""One-shot portraits without a generator: the portrait's fitted 3DMM drives a dense warp of the
portrait itself, with a synthesised mouth interior. Pure PyTorch / numpy; no downloaded weights.

    fit = fit_portrait(image, model)                              # models.nerffacespeech.face_fit
    rig = build_rig(image, fit.landmarks, fit.coeffs, model)      # once per character (cached)
    exp = PhoneticAudioToExpression(model.exp_names).predict(samples, sr) + fit.coeffs["exp"].numpy()
    frames = render_warp(rig, model, exp)                         # (T, S, S, 3) uint8, S >= 512
"""

from models.portrait_warp.render import WarpRenderConfig, render_warp
from models.portrait_warp.rig import WarpRig, WarpRigConfig, build_rig, load_rig

__all__ = ["WarpRenderConfig", "WarpRig", "WarpRigConfig", "build_rig", "load_rig", "render_warp"]
