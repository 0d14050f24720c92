"""MediaPipe's 468-point face mesh (face_landmark.tflite) on a rotated face crop.

As in MediaPipe's face-mesh graph: the crop is a square around the face, 1.5x its longer side,
turned so the eyes are level; from a BlazeFace detection (box, eye keypoints) on the first frame,
then from the previous frame's points (their bounding box; eye corners 33 -> 263). The 192x192
crop is scaled to [0,1]; the network returns 468 (x, y, z) points in crop pixels and a face
logit (a sigmoid below 0.5 means the face is lost and must be detected again).

``MESH_TO_68`` picks, for each of dlib's 68 iBUG points, the mesh vertex at the same place
(a public correspondence); the lips match closely, the jaw only roughly (the mesh's face oval
runs over the cheeks, dlib's jaw line along the visible contour).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit

from models.face.blazeface import FaceDetection
from models.face.tflite import Roi, load_interpreter, rotation_from, square_roi

ROI_SCALE = 1.5
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263  # the subject's eye corners (image left, image right)

# dlib 68 index -> mesh vertex
MESH_TO_68 = np.array([
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,  # jaw 0-16
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,  # brows 17-26
    168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose 27-35
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes 36-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips 48-59
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips 60-67
])
MOUTH_68 = np.arange(48, 68)


@dataclass(frozen=True)
class MeshResult:
    points: np.ndarray  # (468,3) float32: x, y image pixels; z in the same pixel scale
    score: float  # face presence in [0,1]
    roi: Roi

    def landmarks68(self) -> np.ndarray:
        """(68,2) float32 in dlib's iBUG order."""
        return self.points[MESH_TO_68, :2].copy()


def roi_from_detection(det: FaceDetection) -> Roi:
    x0, y0, x1, y1 = det.box
    return square_roi(x0, y0, x1, y1, rotation_from(det.keypoints[0], det.keypoints[1]), ROI_SCALE)


def roi_from_points(points: np.ndarray) -> Roi:
    """The next frame's crop from this frame's mesh points (468,2+)."""
    p = np.asarray(points)[:, :2]
    (x0, y0), (x1, y1) = p.min(0), p.max(0)
    return square_roi(x0, y0, x1, y1, rotation_from(p[RIGHT_EYE_OUTER], p[LEFT_EYE_OUTER]), ROI_SCALE)


def roi_from_68(lms: np.ndarray) -> Roi:
    """A crop from dlib-style 68 points (box of all points; eye corners 36 -> 45)."""
    p = np.asarray(lms, np.float64)
    (x0, y0), (x1, y1) = p.min(0), p.max(0)
    # dlib's box of 68 points omits the forehead: grow it up by a quarter, like the mesh's box
    y0 -= 0.25 * (y1 - y0)
    return square_roi(x0, y0, x1, y1, rotation_from(p[36], p[45]), ROI_SCALE)


class FaceMesh:
    """``FaceMesh(path).run(image, roi)`` -> 468 points of the face in ``roi``."""

    def __init__(self, model_path: str | Path):
        self.interp = load_interpreter(model_path)
        inp = self.interp.get_input_details()[0]
        self.side = int(inp["shape"][1])
        outs = {int(np.prod(d["shape"])): d["index"] for d in self.interp.get_output_details()}
        if 1404 not in outs or 1 not in outs:
            raise ValueError(f"{model_path} is not MediaPipe's 468-point face_landmark network")
        self._input, self._points, self._flag = inp["index"], outs[1404], outs[1]

    def run(self, image: np.ndarray, roi: Roi) -> MeshResult:
        crop = roi.crop(image, self.side) / 255.0  # (S,S,3) in [0,1]
        self.interp.set_tensor(self._input, crop[None].astype(np.float32))
        self.interp.invoke()
        raw = self.interp.get_tensor(self._points).reshape(468, 3).astype(np.float64)
        score = float(expit(float(self.interp.get_tensor(self._flag).ravel()[0])))
        xy = roi.crop_to_image(raw[:, :2], self.side)
        z = raw[:, 2:] * roi.side / self.side
        return MeshResult(np.concatenate([xy, z], -1).astype(np.float32), score, roi)


def refine(mesh: FaceMesh, image: np.ndarray, roi: Roi, passes: int = 2) -> MeshResult:
    """Run the mesh, then again on the crop its own points give (``passes`` runs in all): the
    second crop is centred and turned as MediaPipe's tracking crop is, whatever seeded the first."""
    res = mesh.run(image, roi)
    for _ in range(passes - 1):
        res = mesh.run(image, roi_from_points(res.points))
    return res


def track_mesh(frames, mesh: FaceMesh, detect, *, min_score: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """468 points per frame, MediaPipe-style: ``detect(image)`` (e.g. a BlazeFaceDetector's
    ``detect``, or a function returning one FaceDetection or None) seeds the crop on the first
    frame and whenever the face is lost; otherwise the previous frame's points place it.

    Returns points (T,468,3) float32 (NaN where no face) and found (T,) bool.
    """
    pts, found, prev = [], [], None
    for img in frames:
        res = mesh.run(img, roi_from_points(prev)) if prev is not None else None
        if res is None or res.score < min_score:
            dets = detect(img)
            det = dets[0] if isinstance(dets, list) and dets else (dets or None)
            res = refine(mesh, img, roi_from_detection(det)) if det is not None else None
        if res is None or res.score < min_score:
            prev = None
            pts.append(np.full((468, 3), np.nan, np.float32))
            found.append(False)
            continue
        prev = res.points
        pts.append(res.points)
        found.append(True)
    return np.stack(pts), np.asarray(found, bool)
