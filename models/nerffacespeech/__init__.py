"""NeRFFaceSpeech (Kim et al. 2024) for one-shot portraits: an EG3D-style 3D-aware generator,
PTI of the portrait, a 3DMM fit, audio -> expressions and 3DMM-driven ray deformation.

Modules: camera (EG3D cameras, labels, rays), stylegan (mapping, modulated convolutions,
synthesis), triplane (plane lookup, decoder), volume (ray sampling and compositing), superres
(2D super-resolution), generator (the assembled generator, checkpoints), convert_eg3d
(one-time conversion of EG3D pickles), pti (pivotal tuning inversion), face_fit (single-image
3DMM fit), audio2exp (audio -> expression coefficients), deform (expression ray deformation),
render (frames), config (the stages' configs and the EG3D camera constants, torch-free). Pure
PyTorch; never imports Prefect.

    G = default_generator(checkpoint)                # a converted checkpoint, else small_generator(0)
    fit = fit_portrait(image)                        # fitted_coeffs, reprojection error (px)
    cam = portrait_camera(fit.coeffs, G.cfg.focal, G.cfg.camera_radius, G.cfg.camera_pivot)
    rig = FaceRig.from_fit(fit.coeffs, default_model(bfm_mat), cam)
    depth = rig.depth_map(cam, G.cfg.neural_rendering_resolution)     # geometry prior, fallback G only
    pti = run_pti(G, image, cam, PTIConfig.fallback(), face_depth=depth)  # w_PTI, G_PTI, bg_PTI
                                                     # (PTIConfig() and no depth for a pretrained G)
    exp = PhoneticAudioToExpression().predict(samples, sr)            # (T, K_exp)
    frames = render_frames(pti.generator(), pti.w_pivot, fit.coeffs, exp, cam, background=pti.background)
"""

# Imported on first use (PEP 562): the configs (models.nerffacespeech.config) import without torch.
from models.lazy import lazy_exports

_EXPORTS = {
    "AudioToExpression": "models.nerffacespeech.audio2exp",
    "MelToExpression": "models.nerffacespeech.audio2exp",
    "PhoneticAudioToExpression": "models.nerffacespeech.audio2exp",
    "load_audio2exp": "models.nerffacespeech.audio2exp",
    "save_audio2exp": "models.nerffacespeech.audio2exp",
    "EG3D_FOV_DEG": "models.nerffacespeech.camera",
    "Camera": "models.nerffacespeech.camera",
    "camera_rays": "models.nerffacespeech.camera",
    "fov_to_focal": "models.nerffacespeech.camera",
    "look_at": "models.nerffacespeech.camera",
    "EG3D_FOCAL": "models.nerffacespeech.config",
    "DeformConfig": "models.nerffacespeech.config",
    "FaceFitConfig": "models.nerffacespeech.config",
    "GeneratorConfig": "models.nerffacespeech.config",
    "PTIConfig": "models.nerffacespeech.config",
    "PhoneticDriverConfig": "models.nerffacespeech.config",
    "RenderConfig": "models.nerffacespeech.config",
    "ExpressionWarp": "models.nerffacespeech.deform",
    "FaceRig": "models.nerffacespeech.deform",
    "FaceFit": "models.nerffacespeech.face_fit",
    "crop_portrait": "models.nerffacespeech.face_fit",
    "fit_portrait": "models.nerffacespeech.face_fit",
    "load_portrait": "models.nerffacespeech.face_fit",
    "portrait_camera": "models.nerffacespeech.face_fit",
    "GeneratorOutput": "models.nerffacespeech.generator",
    "TriplaneGenerator": "models.nerffacespeech.generator",
    "default_generator": "models.nerffacespeech.generator",
    "load_generator": "models.nerffacespeech.generator",
    "save_generator": "models.nerffacespeech.generator",
    "small_generator": "models.nerffacespeech.generator",
    "PTIResult": "models.nerffacespeech.pti",
    "load_pti": "models.nerffacespeech.pti",
    "run_pti": "models.nerffacespeech.pti",
    "render_frames": "models.nerffacespeech.render",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
