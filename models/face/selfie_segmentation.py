"""Person segmentation with MediaPipe's selfie_segmentation.tflite (general model, 256x256).

As in MediaPipe's selfie-segmentation graph: the whole frame is resized to the square input
(aspect ratio not kept), scaled to [0,1]; the network's single channel is already a person
probability; it is resized back to the frame with bilinear interpolation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from models.face.tflite import as_rgb_u8, load_interpreter


class SelfieSegmenter:
    """``SelfieSegmenter(path).probability(image)`` -> (H,W) person probability."""

    def __init__(self, model_path: str | Path):
        self.interp = load_interpreter(model_path)
        inp = self.interp.get_input_details()[0]
        out = self.interp.get_output_details()[0]
        if len(inp["shape"]) != 4 or tuple(out["shape"][1:3]) != tuple(inp["shape"][1:3]):
            raise ValueError(f"{model_path} is not MediaPipe's selfie segmentation network")
        self.side = int(inp["shape"][1])
        self._input, self._output = inp["index"], out["index"]

    def probability(self, image: np.ndarray) -> np.ndarray:
        """(H,W) float32 in [0,1] for ``image`` (H,W,3) uint8 RGB."""
        img = as_rgb_u8(image)
        h, w = img.shape[:2]
        x = np.asarray(Image.fromarray(img).resize((self.side, self.side), Image.BILINEAR), np.float32) / 255.0
        self.interp.set_tensor(self._input, x[None])
        self.interp.invoke()
        prob = self.interp.get_tensor(self._output)[0, :, :, 0].astype(np.float32)  # (S,S)
        up = np.asarray(Image.fromarray(prob, mode="F").resize((w, h), Image.BILINEAR), np.float32)
        return np.clip(up, 0.0, 1.0)

    def mask(self, image: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """(H,W) bool person mask."""
        return self.probability(image) > threshold
