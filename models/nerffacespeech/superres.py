"""2D super-resolution of the low-resolution feature image (EG3D's "hybrid" SR modules).

Input: the rendered feature image (B, F, r, r) and its first three channels as RGB (B, 3, r, r).
Both are resized to `input_resolution` first when they differ (bilinear, antialiased), then each
block doubles the resolution: a StyleGAN2 synthesis block (conv0 upsampling, conv1, ToRGB) whose
ToRGB output is added to the upsampled RGB image, so the module refines the volume rendering
rather than replacing it. Every block is modulated by the last w of the generator (EG3D repeats
ws[:, -1] for all of them). EG3D's 512 px model (SuperresolutionHybrid8XDC) is blocks of 256 and
128 channels from 128 to 512 px.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from models.nerffacespeech.stylegan import NoiseMode, SynthesisBlock


class SuperResolution(nn.Module):
    """(rgb (B, 3, r, r), features (B, F, r, r), ws) -> image (B, 3, r_in * 2^k, ...)."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], w_dim: int, input_resolution: int,
                 antialias: bool = True, conv_clamp: float | None = 256.0, noise_strength: float = 0.0):
        super().__init__()
        self.input_resolution, self.antialias = input_resolution, antialias
        self.num_blocks = len(channels)
        c_in, res = in_channels, input_resolution
        for k, c in enumerate(channels):
            res *= 2
            setattr(self, f"block{k}", SynthesisBlock(c_in, c, w_dim, res, 3, conv_clamp, noise_strength))
            c_in = c
        self.output_resolution = res

    def forward(self, rgb: Tensor, features: Tensor, ws: Tensor, noise_mode: NoiseMode = "none") -> Tensor:
        if self.num_blocks == 0:
            return rgb
        if features.shape[-1] != self.input_resolution:
            size = (self.input_resolution, self.input_resolution)
            aa = self.antialias and features.shape[-1] > self.input_resolution
            features = F.interpolate(features, size=size, mode="bilinear", align_corners=False, antialias=aa)
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=aa)
        w = ws[:, -1:].expand(-1, 3, -1)  # (B, 3, w_dim): conv0, conv1, torgb
        x, img = features, rgb
        for k in range(self.num_blocks):
            x, img = getattr(self, f"block{k}")(x, img, w, noise_mode)
        return img


def resize_image(img: Tensor, size: int) -> Tensor:
    """(B, C, H, W) -> (B, C, size, size), area-averaged when shrinking, bilinear when growing."""
    if img.shape[-1] == size and img.shape[-2] == size:
        return img
    if img.shape[-1] > size:
        return F.interpolate(img, size=(size, size), mode="area")
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)

