"""NeRFFaceSpeech (Kim et al. 2024) for one-shot portraits: an EG3D-style 3D-aware generator,
PTI of the portrait, a 3DMM fit, audio -> expressions and 3DMM-driven ray deformation.

Modules: camera (EG3D cameras, labels, rays), stylegan (mapping, modulated convolutions,
synthesis), triplane (plane lookup, decoder), volume (ray sampling and compositing), superres
(2D super-resolution), generator (configs, the assembled generator, checkpoints), convert_eg3d
(one-time conversion of EG3D pickles), pti (pivotal tuning inversion), face_fit (single-image
3DMM fit), audio2exp (audio -> expression coefficients), deform (expression ray deformation),
render (frames). Pure PyTorch; never imports Prefect.

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

from models.nerffacespeech.audio2exp import (
    AudioToExpression,
    MelToExpression,
    PhoneticAudioToExpression,
    PhoneticDriverConfig,
    load_audio2exp,
    save_audio2exp,
)
from models.nerffacespeech.camera import EG3D_FOCAL, EG3D_FOV_DEG, Camera, camera_rays, fov_to_focal, look_at
from models.nerffacespeech.deform import DeformConfig, ExpressionWarp, FaceRig
from models.nerffacespeech.face_fit import (
    FaceFit,
    FaceFitConfig,
    crop_portrait,
    fit_portrait,
    load_portrait,
    portrait_camera,
)
from models.nerffacespeech.generator import (
    GeneratorConfig,
    GeneratorOutput,
    TriplaneGenerator,
    default_generator,
    load_generator,
    save_generator,
    small_generator,
)
from models.nerffacespeech.pti import PTIConfig, PTIResult, load_pti, run_pti
from models.nerffacespeech.render import RenderConfig, render_frames

__all__ = [
    "EG3D_FOCAL", "EG3D_FOV_DEG", "AudioToExpression", "Camera", "DeformConfig", "ExpressionWarp", "FaceFit",
    "FaceFitConfig", "FaceRig", "GeneratorConfig", "GeneratorOutput", "PhoneticAudioToExpression",
    "PhoneticDriverConfig",
    "MelToExpression", "PTIConfig", "PTIResult", "RenderConfig", "TriplaneGenerator", "camera_rays", "crop_portrait",
    "default_generator", "fit_portrait", "fov_to_focal", "load_audio2exp", "load_generator", "load_portrait",
    "load_pti", "look_at", "portrait_camera", "render_frames", "run_pti", "save_audio2exp", "save_generator",
    "small_generator",
]
