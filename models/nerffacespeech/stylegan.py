"""StyleGAN2 building blocks of the tri-plane generator: mapping, modulated convolutions, synthesis.

The layers follow StyleGAN2 (Karras et al. 2020) as EG3D uses them, parameter for parameter, so a
converted EG3D state dict (`convert_eg3d.py`) drives the same arithmetic:

- **Equalised learning rate**: parameters are stored at unit scale and multiplied at run time
  (`FullyConnected`: weight x lr_mul / sqrt(in), bias x lr_mul).
- **Modulated convolution**: per-sample styles s = affine(w) (bias initialised to 1) scale the
  input channels of the weight; with demodulation every output filter is renormalised to unit
  norm. ToRGB layers modulate by s / sqrt(in * k * k) and do not demodulate.
- **Noise inputs**: every synthesis layer adds `noise_strength * noise` before its bias and
  activation; `noise_mode` picks the noise: "const" (the layer's `noise_const` buffer, what PTI
  optimises and regularises), "random" (fresh Gaussian noise) or "none".
- **Resampling**: upsampling by 2 inserts zeros and low-pass filters with the separable FIR
  [1, 3, 3, 1] (gain 4); a 3x3 convolution with up=2 is a stride-2 transposed convolution followed
  by that filter (`upsample_conv2d`), the same operation as zero insertion, filtering and a plain
  convolution (`upsample_conv2d_reference`, kept for the test that checks the two agree).
- **Skip architecture**: each block adds its ToRGB output to the upsampled image of the previous
  block; a block at resolution r uses ws[i : i + num_conv + 1] and the next block starts at
  i + num_conv (a block's ToRGB shares its w with the next block's first convolution).

Shapes: z (B, z_dim), c (B, c_dim), ws (B, num_ws, w_dim), images (B, C, H, W).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

NoiseMode = Literal["const", "random", "none"]
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


# ----------------------------------------------------------------------------------- primitives
def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    """(B, D) -> (B, D) with unit mean square per row."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def bias_act(x: Tensor, bias: Tensor | None, act: Literal["linear", "lrelu"], clamp: float | None = None) -> Tensor:
    """Add a per-channel bias (dim 1), apply the activation with its gain, clamp to +-clamp."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def fir_kernel(device=None, dtype=torch.float32) -> Tensor:
    """(4, 4) separable [1, 3, 3, 1] low-pass filter, normalised to sum 1."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], device=device, dtype=dtype)
    k = torch.outer(f, f)
    return k / k.sum()


def _fir(x: Tensor, pad: tuple[int, int], gain: float) -> Tensor:
    """Pad (before, after) on both spatial axes, then filter every channel with the FIR kernel."""
    c = x.shape[1]
    k = (fir_kernel(x.device, x.dtype) * gain).expand(c, 1, 4, 4)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    return F.conv2d(x, k, groups=c)


def _zero_insert(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, 2H, 2W) with x at the even positions and zeros elsewhere."""
    b, c, h, w = x.shape
    out = x.new_zeros(b, c, h, 2, w, 2)
    out[:, :, :, 0, :, 0] = x
    return out.view(b, c, 2 * h, 2 * w)


def upsample2d(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, 2H, 2W): zero insertion then the FIR low-pass (gain 4)."""
    return _fir(_zero_insert(x), (2, 1), gain=4.0)


def upsample_conv2d(x: Tensor, weight: Tensor, groups: int = 1) -> Tensor:
    """3x3 convolution (true convolution, not correlation) at twice the resolution.

    x (B, groups * I, H, W), weight (groups * O, I, 3, 3) -> (B, groups * O, 2H, 2W).
    Stride-2 transposed convolution (output 2H + 1), then the FIR filter with one pixel of padding.
    """
    go, i, kh, kw = weight.shape
    o = go // groups
    w = weight.view(groups, o, i, kh, kw).transpose(1, 2).reshape(groups * i, o, kh, kw)
    x = F.conv_transpose2d(x, w, stride=2, groups=groups)
    return _fir(x, (1, 1), gain=4.0)


def upsample_conv2d_reference(x: Tensor, weight: Tensor, groups: int = 1) -> Tensor:
    """The same operation spelled out: zero insertion, padding (3, 2), FIR, flipped-kernel conv."""
    x = _fir(_zero_insert(x), (3, 2), gain=4.0)
    return F.conv2d(x, weight.flip([2, 3]), groups=groups)


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True, up: bool = False) -> Tensor:
    """x (B, I, H, W), weight (O, I, k, k), styles (B, I) -> (B, O, H', W'), H' = H or 2H (up).

    Per-sample weights W_b = weight * styles_b (input channels), divided by their per-filter norm
    when `demodulate`; run as one grouped convolution over the batch.
    """
    b, i, h, wd = x.shape
    o, _, kh, kw = weight.shape
    w = weight[None] * styles[:, None, :, None, None]  # (B, O, I, k, k)
    if demodulate:
        w = w * (w.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).rsqrt()
    w = w.reshape(b * o, i, kh, kw)
    x = x.reshape(1, b * i, h, wd)
    if up:
        out = upsample_conv2d(x, w, groups=b)
    else:
        out = F.conv2d(x, w, padding=kh // 2, groups=b)
    return out.reshape(b, o, *out.shape[2:])


# ------------------------------------------------------------------------------------- layers
class FullyConnected(nn.Module):
    """Linear layer with the equalised learning rate (optional leaky ReLU). Names: weight, bias."""

    def __init__(self, in_features: int, out_features: int, activation: Literal["linear", "lrelu"] = "linear",
                 lr_mul: float = 1.0, bias_init: float = 0.0, bias: bool = True):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)  # (O, I)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul

    def forward(self, x: Tensor) -> Tensor:  # (..., I) -> (..., O)
        w = self.weight * self.weight_gain
        b = None if self.bias is None else self.bias * self.bias_gain
        x = F.linear(x, w, b)
        return x if self.activation == "linear" else F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


class MappingNetwork(nn.Module):
    """z (B, z_dim), c (B, c_dim) -> ws (B, num_ws, w_dim).

    z and the embedded c are each normalised to unit second moment and concatenated, then
    `num_layers` leaky-ReLU layers (learning-rate multiplier `lr_mul`, 0.01 in StyleGAN2/EG3D).
    Truncation: the first `truncation_cutoff` ws move towards `w_avg` as w_avg + psi (w - w_avg).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 2, lr_mul: float = 0.01):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.embed = FullyConnected(c_dim, w_dim) if c_dim > 0 else None
        dims = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        for k in range(num_layers):
            setattr(self, f"fc{k}", FullyConnected(dims[k], dims[k + 1], activation="lrelu", lr_mul=lr_mul))
        self.num_layers = num_layers
        self.register_buffer("w_avg", torch.zeros(w_dim))  # (w_dim,) running mean of w (training)

    def forward(self, z: Tensor, c: Tensor | None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> Tensor:
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.float()))
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"this mapping network is conditioned on a {self.c_dim}-d camera label")
            parts.append(normalize_2nd_moment(self.embed(c.float())))
        x = torch.cat(parts, dim=1)
        for k in range(self.num_layers):
            x = getattr(self, f"fc{k}")(x)
        ws = x[:, None].repeat(1, self.num_ws, 1)  # (B, num_ws, w_dim)
        if truncation_psi != 1.0:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            head = self.w_avg.lerp(ws[:, :cut], truncation_psi)
            ws = torch.cat([head, ws[:, cut:]], dim=1)
        return ws


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally upsampling x2) + noise + bias + leaky ReLU.

    Parameters: affine (w -> input styles), weight (O, I, 3, 3), bias (O,), noise_strength ();
    buffer noise_const (R, R) at the layer's output resolution R.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False,
                 conv_clamp: float | None = None, noise_strength: float = 0.0):
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.tensor(float(noise_strength)))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x: Tensor, w: Tensor, noise_mode: NoiseMode = "const") -> Tensor:
        styles = self.affine(w)  # (B, I)
        x = modulated_conv2d(x, self.weight, styles, demodulate=True, up=self.up)  # (B, O, R, R)
        if noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device,
                                dtype=x.dtype) * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        return bias_act(x, self.bias, "lrelu", self.conv_clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 convolution without demodulation: features -> `out_channels` image channels."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        return bias_act(modulated_conv2d(x, self.weight, styles, demodulate=False), self.bias, "linear",
                        self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip architecture: (x, img) at R/2 -> (x, img) at R.

    The first block (in_channels = 0) starts from a learned constant (C, 4, 4) and has one
    convolution; the others upsample in conv0, then conv1; every block ends with ToRGB.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None = None, noise_strength: float = 0.0):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp,
                                        noise_strength=noise_strength)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp,
                                    noise_strength=noise_strength)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor, noise_mode: NoiseMode = "const"
                ) -> tuple[Tensor, Tensor]:
        """ws (B, num_conv + 1, w_dim); x (B, I, R/2, R/2) or None for the first block."""
        w = ws.unbind(1)
        if self.in_channels == 0:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, w[0], noise_mode)
        else:
            x = self.conv0(x, w[0], noise_mode)
            x = self.conv1(x, w[1], noise_mode)
        y = self.torgb(x, w[-1])
        img = y if img is None else upsample2d(img) + y
        return x, img


def block_channels(resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """{res: channels} for res = 4, 8, ..., resolution: min(channel_base // res, channel_max)."""
    res = [2**k for k in range(2, int(math.log2(resolution)) + 1)]
    return {r: min(channel_base // r, channel_max) for r in res}


class SynthesisNetwork(nn.Module):
    """ws (B, num_ws, w_dim) -> image (B, img_channels, R, R) through blocks 4, 8, ..., R."""

    def __init__(self, w_dim: int, resolution: int, img_channels: int, channel_base: int, channel_max: int,
                 conv_clamp: float | None = None, noise_strength: float = 0.0):
        super().__init__()
        if resolution < 4 or resolution & (resolution - 1):
            raise ValueError(f"synthesis resolution must be a power of two >= 4, got {resolution}")
        self.resolution, self.img_channels = resolution, img_channels
        ch = block_channels(resolution, channel_base, channel_max)
        self.block_resolutions = sorted(ch)
        self.num_ws = 0
        for r in self.block_resolutions:
            block = SynthesisBlock(ch[r // 2] if r > 4 else 0, ch[r], w_dim, r, img_channels, conv_clamp,
                                   noise_strength)
            setattr(self, f"b{r}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last ToRGB

    def forward(self, ws: Tensor, noise_mode: NoiseMode = "const") -> Tensor:
        x = img = None
        i = 0
        for r in self.block_resolutions:
            block: SynthesisBlock = getattr(self, f"b{r}")
            x, img = block(x, img, ws[:, i:i + block.num_conv + block.num_torgb], noise_mode)
            i += block.num_conv
        return img

    def noise_buffers(self) -> dict[str, Tensor]:
        """{name: (R, R) noise_const buffer} of every synthesis layer."""
        return {n: b for n, b in self.named_buffers() if n.endswith("noise_const")}
