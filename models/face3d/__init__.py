"""3DMM tracking for ER-NeRF preprocessing: morphable models, cameras, landmark and photometric fits.

Units and axes are stated once, in `models.face3d.camera`. Typical use:

    model = default_model(bfm_mat, cache_dir) # BFM 2009 from its .mat, else the generic model
    track = fit_landmarks(lms, S, model)      # focal search + batched landmark fit
    track = refine_photometric(frames, lms, model, track)
    c2w = to_nerf_transforms(track.euler, track.trans)
"""

# Imported on first use (PEP 562): importing one submodule (e.g. a torch-free config) does not
# import the others.
from models.lazy import lazy_exports

_EXPORTS = {
    "ERNERF_UNITS_PER_MM": "models.face3d.camera",
    "euler_to_matrix": "models.face3d.camera",
    "geodesic_deg": "models.face3d.camera",
    "head_to_camera": "models.face3d.camera",
    "matrix_to_euler": "models.face3d.camera",
    "principal_point": "models.face3d.camera",
    "project": "models.face3d.camera",
    "to_nerf_transforms": "models.face3d.camera",
    "FitConfig": "models.face3d.config",
    "TrackResult": "models.face3d.fit",
    "fit_landmarks": "models.face3d.fit",
    "fit_landmarks_per_frame": "models.face3d.fit",
    "rotation_error_deg": "models.face3d.fit",
    "search_focal": "models.face3d.fit",
    "MorphableModel": "models.face3d.morphable",
    "convert_bfm": "models.face3d.morphable",
    "default_model": "models.face3d.morphable",
    "generic_model": "models.face3d.morphable",
    "load_model": "models.face3d.morphable",
    "PhotoConfig": "models.face3d.config",
    "refine_photometric": "models.face3d.photometric",
    "render_frames": "models.face3d.render",
    "render_window": "models.face3d.render",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
