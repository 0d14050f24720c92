"""3DMM tracking for ER-NeRF preprocessing: morphable models, cameras, landmark and photometric fits.

Units and axes are stated once, in `models.face3d.camera`. Typical use:

    model = default_model(bfm_mat, cache_dir) # BFM 2009 from its .mat, else the generic model
    track = fit_landmarks(lms, S, model)      # focal search + batched landmark fit
    track = refine_photometric(frames, lms, model, track)
    c2w = to_nerf_transforms(track.euler, track.trans)
"""

from models.face3d.camera import (
    ERNERF_UNITS_PER_MM,
    euler_to_matrix,
    geodesic_deg,
    head_to_camera,
    matrix_to_euler,
    principal_point,
    project,
    to_nerf_transforms,
)
from models.face3d.fit import (
    FitConfig,
    TrackResult,
    fit_landmarks,
    fit_landmarks_per_frame,
    rotation_error_deg,
    search_focal,
)
from models.face3d.morphable import (
    MorphableModel,
    convert_bfm,
    default_model,
    generic_model,
    load_model,
)
from models.face3d.photometric import PhotoConfig, refine_photometric
from models.face3d.render import render_frames, render_window

__all__ = [
    "ERNERF_UNITS_PER_MM",
    "FitConfig",
    "MorphableModel",
    "PhotoConfig",
    "TrackResult",
    "convert_bfm",
    "default_model",
    "euler_to_matrix",
    "fit_landmarks",
    "fit_landmarks_per_frame",
    "generic_model",
    "geodesic_deg",
    "head_to_camera",
    "load_model",
    "matrix_to_euler",
    "principal_point",
    "project",
    "refine_photometric",
    "render_frames",
    "render_window",
    "rotation_error_deg",
    "search_focal",
    "to_nerf_transforms",
]
