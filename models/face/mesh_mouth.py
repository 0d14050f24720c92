"""The lips of MediaPipe's face mesh in place of dlib's (points 48-67), frame after frame.

The mesh's crop follows the previous frame's mesh points (MediaPipe's tracking); on the first
frame, after a frame without a face, or when the mesh loses the face, it is placed from that
frame's dlib points and refined once from the mesh's own points. On the sample clip
(bench/face_networks.py) the mesh's lips jitter less about their own trend than dlib's, but its
inner-lip opening grows by only about half the known opening, so dlib's lips stay the default.
"""

from __future__ import annotations

import numpy as np

from models.face.face_mesh import MESH_TO_68, MOUTH_68, FaceMesh, refine, roi_from_68, roi_from_points


class MeshMouth:
    """``MeshMouth(mesh)(image, lms68)`` -> (68,2) float32: ``lms68`` with the mesh's lips."""

    def __init__(self, mesh: FaceMesh, min_score: float = 0.5):
        self.mesh, self.min_score = mesh, min_score
        self.prev: np.ndarray | None = None  # (468,3) last frame's mesh points

    def reset(self) -> None:
        """Forget the previous face (call on a frame without one)."""
        self.prev = None

    def __call__(self, image: np.ndarray, lms68: np.ndarray) -> np.ndarray:
        res = self.mesh.run(image, roi_from_points(self.prev)) if self.prev is not None else None
        if res is None or res.score < self.min_score:
            res = refine(self.mesh, image, roi_from_68(lms68))
        out = np.array(lms68, np.float32)
        if res.score < self.min_score:  # the mesh sees no face where dlib does: keep dlib's lips
            self.prev = None
            return out
        self.prev = res.points
        out[MOUTH_68] = res.points[MESH_TO_68[MOUTH_68], :2]
        return out
