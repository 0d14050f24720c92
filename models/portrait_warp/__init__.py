"""One-shot portraits without a generator: the portrait's fitted 3DMM drives a dense warp of the
portrait itself, with a synthesised mouth interior. Pure PyTorch / numpy; no downloaded weights.

    fit = fit_portrait(image, model)                              # models.nerffacespeech.face_fit
    rig = build_rig(image, fit.landmarks, fit.coeffs, model)      # once per character (cached)
    exp = PhoneticAudioToExpression(model.exp_names).predict(samples, sr) + fit.coeffs["exp"].numpy()
    frames = render_warp(rig, model, exp)                         # (T, S, S, 3) uint8, S >= 512

The configs live in models.portrait_warp.config (torch-free).
"""

# Imported on first use (PEP 562): the configs import without torch.
from models.lazy import lazy_exports

_EXPORTS = {
    "WarpRenderConfig": "models.portrait_warp.config",
    "WarpRigConfig": "models.portrait_warp.config",
    "render_warp": "models.portrait_warp.render",
    "WarpRig": "models.portrait_warp.rig",
    "build_rig": "models.portrait_warp.rig",
    "load_rig": "models.portrait_warp.rig",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
