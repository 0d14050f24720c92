"""dlib's 68 points helped by MediaPipe's networks, frame after frame.

* ``MeshMouth``: the face mesh's lips (points 48-67) in place of dlib's. The mesh's crop follows
  the previous frame's mesh points (MediaPipe's tracking); on the first frame, after a frame
  without a face, or when the mesh loses the face, it is placed from that frame's dlib points and
  refined once from the mesh's own points. On the sample clip (bench/face_networks.py) the mesh's
  lips scatter less about their trend than dlib's, but its inner-lip opening grows by only about
  half the known opening, so dlib's lips stay the default.
* ``MeshRescue``: on a frame where dlib's HOG detector finds no face, BlazeFace and the mesh's
  68 points (``MESH_TO_68``). HOG misses heads tilted by 45 degrees or more, BlazeFace + mesh
  does not (bench/face_networks.py); where both find the face, dlib's points are kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.face.blazeface import BlazeFaceDetector
from models.face.face_mesh import (
    MESH_TO_68,
    MOUTH_68,
    FaceMesh,
    refine,
    roi_from_68,
    roi_from_detection,
    roi_from_points,
)


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


class MeshRescue:
    """``MeshRescue(detector_path, mesh)(image)`` -> (face width px, (68,2) float32) or None."""

    def __init__(self, detector: str | Path, mesh: FaceMesh, min_score: float = 0.5):
        self.detector, self.mesh, self.min_score = BlazeFaceDetector(detector), mesh, min_score

    def __call__(self, image: np.ndarray) -> tuple[float, np.ndarray] | None:
        faces = self.detector.detect(image)
        if not faces:
            return None
        res = refine(self.mesh, image, roi_from_detection(faces[0]))
        return (faces[0].width, res.landmarks68()) if res.score >= self.min_score else None
