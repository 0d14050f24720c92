"""Face detection with MediaPipe's BlazeFace networks (face_detection_short_range.tflite,
128 px input, faces within ~2 m; face_detection_full_range_sparse.tflite, 192 px, up to ~5 m).

Decoding follows MediaPipe's face-detection graph: the image is letterboxed to the square input
and scaled to [-1, 1]; SSD anchors (fixed size, centres on a grid per stride; short range:
4 layers with strides 8, 16, 16, 16, two anchors per layer; full range: 1 layer of stride 4,
one anchor) offset the 16 regressed values (box centre, size, then six keypoints: right eye,
left eye, nose tip, mouth centre, right and left ear tragion, all as the subject sees them),
divided by the input side; scores are sigmoids of logits clipped to +-100; overlapping boxes
(IoU > 0.3) are merged by score-weighted averaging (MediaPipe's weighted NMS).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.special import expit

from models.face.tflite import as_rgb_u8, load_interpreter

KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear", "left_ear")


@dataclass(frozen=True)
class FaceDetection:
    """A face: box (x0, y0, x1, y1) px, keypoints (6,2) px in KEYPOINTS order, score in [0,1]."""

    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    score: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]


def ssd_anchor_centres(input_side: int, strides: list[int], interpolated: bool) -> np.ndarray:
    """(N,2) anchor centres (x, y) in [0,1] for fixed-size SSD anchors, in the network's order:
    layers of equal stride share a grid, each layer adding one anchor per cell (two with the
    interpolated aspect ratio)."""
    out = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        per_cell = (j - i) * (2 if interpolated else 1)
        fm = -(-input_side // strides[i])  # ceil
        c = (np.arange(fm, dtype=np.float32) + 0.5) / fm
        yy, xx = np.meshgrid(c, c, indexing="ij")  # (fm,fm), row-major cells
        cells = np.stack([xx.ravel(), yy.ravel()], -1)  # (fm*fm,2)
        out.append(np.repeat(cells, per_cell, axis=0))
        i = j
    return np.concatenate(out)


_VARIANTS = {  # input side -> (strides, interpolated anchor, min score) of MediaPipe's graphs
    128: ([8, 16, 16, 16], True, 0.5),
    192: ([4], False, 0.6),
}


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray, iou: float):
    """Greedy clusters of boxes (N,4) overlapping the best remaining one by more than ``iou``;
    each cluster's boxes and keypoints (N,K,2) averaged with score weights, scored by its best."""
    order = np.argsort(-scores)
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    alive = np.ones(len(scores), bool)
    out = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        member = alive & (_iou(boxes[i], boxes) > iou)
        member[i] = True
        w = scores[member] / scores[member].sum()
        out.append((w @ boxes[member], np.tensordot(w, kps[member], 1), float(scores[i])))
        alive &= ~member
    return out


class BlazeFaceDetector:
    """``BlazeFaceDetector(path).detect(image)`` -> faces, best first. The variant (short or
    full range) is read from the network's input size."""

    def __init__(self, model_path: str | Path, *, min_score: float | None = None, nms_iou: float = 0.3):
        self.interp = load_interpreter(model_path)
        inp = self.interp.get_input_details()[0]
        self.side = int(inp["shape"][1])
        if self.side not in _VARIANTS:
            raise ValueError(f"{model_path} is not a BlazeFace network (input side {self.side})")
        strides, interpolated, default_score = _VARIANTS[self.side]
        self.anchors = ssd_anchor_centres(self.side, strides, interpolated)  # (N,2)
        self.min_score = default_score if min_score is None else min_score
        self.nms_iou = nms_iou
        self._input = inp["index"]
        outs = sorted(self.interp.get_output_details(), key=lambda d: -int(d["shape"][-1]))
        self._regressors, self._scores = outs[0]["index"], outs[1]["index"]  # (1,N,16), (1,N,1)

    def _letterbox(self, img: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """(S,S,3) float32 in [-1,1], image centred and scaled to fit; scale, pad x, pad y (input px)."""
        h, w = img.shape[:2]
        scale = self.side / max(h, w)
        nw, nh = max(round(w * scale), 1), max(round(h * scale), 1)
        small = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR), np.float32)
        canvas = np.zeros((self.side, self.side, 3), np.float32)  # padding = black
        px, py = (self.side - nw) // 2, (self.side - nh) // 2
        canvas[py : py + nh, px : px + nw] = small
        return canvas / 127.5 - 1.0, nw / w, px, py

    def raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network outputs for an (S,S,3) float32 input: regressors (N,16), logits (N,)."""
        self.interp.set_tensor(self._input, x[None])
        self.interp.invoke()
        return self.interp.get_tensor(self._regressors)[0], self.interp.get_tensor(self._scores)[0, :, 0]

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Faces in ``image`` (H,W,3) uint8 RGB scoring at least ``min_score``, best first."""
        img = as_rgb_u8(image)
        x, scale, px, py = self._letterbox(img)
        reg, logits = self.raw(x)
        scores = expit(np.clip(logits.astype(np.float64), -100.0, 100.0))  # (N,)
        keep = scores >= self.min_score
        if not keep.any():
            return []
        reg, anchors, scores = reg[keep].astype(np.float64), self.anchors[keep], scores[keep]
        centre = reg[:, :2] / self.side + anchors  # (M,2) in [0,1] of the input
        size = reg[:, 2:4] / self.side  # (M,2)
        boxes = np.concatenate([centre - size / 2, centre + size / 2], -1)  # (M,4)
        kps = reg[:, 4:16].reshape(-1, 6, 2) / self.side + anchors[:, None]  # (M,6,2)

        def to_image(p: np.ndarray) -> np.ndarray:  # input [0,1] -> image pixel centres
            return (p * self.side - np.array([px, py])) / scale - 0.5

        out = []
        for box, kp, score in weighted_nms(boxes, kps, scores, self.nms_iou):
            b = to_image(box.reshape(2, 2)).ravel()
            out.append(FaceDetection(tuple(float(v) for v in b), to_image(kp).astype(np.float32), score))
        return out
