"""Losses and metrics: photometric, uncertainty-weighted, regularisers, the lips patch loss
(LPIPS-AlexNet when the user registered its weights, else a structural substitute), PSNR, SSIM and
the mouth landmark distance (LMD).

Images are (B, 3, H, W) in [0, 1] unless a function says otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from talkflow.errors import AssetMissing, InputError

MOUTH = slice(48, 68)  # iBUG-68 outer + inner lips


# -------------------------------------------------------------------------------- photometric
def mse(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).pow(2).mean()


def l1(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).abs().mean()


def psnr(pred: Tensor, target: Tensor, max_value: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB over the whole tensor."""
    return 10 * torch.log10(max_value**2 / mse(pred.float(), target.float()).clamp(min=1e-12))


def gaussian_window(size: int = 11, sigma: float = 1.5, device: torch.device | str = "cpu") -> Tensor:
    """(size, size) normalised Gaussian, float64, built on ``device`` (no host-to-device copy)."""
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


@functools.lru_cache(maxsize=16)
def _ssim_window(size: int, sigma: float, channels: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The (C, 1, size, size) depthwise window, made once per device and dtype (read-only)."""
    return gaussian_window(size, sigma, device).to(dtype).expand(channels, 1, size, size)


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Structural similarity (Wang et al. 2004): Gaussian window 11 / sigma 1.5, K1 0.01, K2 0.03,
    statistics over valid windows only, mean over the map and channels -> (B,)."""
    c = pred.shape[1]
    size = min(window, pred.shape[-1], pred.shape[-2])
    w = _ssim_window(size, sigma, c, pred.device, pred.dtype)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x, w, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(pred), blur(target)
    var_x = blur(pred * pred) - mu_x**2
    var_y = blur(target * target) - mu_y**2
    cov = blur(pred * target) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(dim=1)


# --------------------------------------------------------------------------- training losses
def uncertainty_weighted_loss(err: Tensor, pred: Tensor, target: Tensor, uncertainty: Tensor, face: Tensor,
                              step_factor: float, floor: float = 0.2) -> Tensor:
    """ER-NeRF's uncertainty weighting of a per-ray photometric error.

    err (R,) per-ray MSE; pred, target (R, 3); uncertainty (R,) >= 0 rendered from the uncertainty
    head; face (R,) bool rays inside the face box; step_factor in [0, 1] ramps the term in.
    Rays are re-weighted by softmax(uncertainty) * R (detached, clamped to 10, mixed with 1 as
    training starts and with ``floor``); the uncertainty itself is fitted to the error with a
    Gaussian negative log-likelihood-like term inside the face and pushed to 0 outside -> (R,).
    """
    r = err.shape[0]
    weight = torch.softmax(uncertainty, dim=-1) * r
    mix = ((1 - step_factor) + step_factor * weight.detach()).clamp(0, 10)
    loss = err * (floor + (1 - floor) * mix)
    beta = uncertainty + 1
    residual = (pred - target).norm(dim=-1).detach()
    fit = residual / (2 * beta**2) + torch.log(beta) ** 2 / 2
    return loss + step_factor * fit * face + 1e-3 * step_factor * uncertainty * (~face)


def opacity_entropy(opacity: Tensor) -> Tensor:
    """Binary entropy of the accumulated opacity (pushes each ray to 0 or 1) -> scalar."""
    a = opacity.clamp(1e-5, 1 - 1e-5)
    return (-a * torch.log2(a) - (1 - a) * torch.log2(1 - a)).mean()


def ambient_losses(ambient_aud: Tensor, ambient_eye: Tensor, face: Tensor, max_samples: int) -> tuple[Tensor, Tensor]:
    """Region-attention regularisers: audio attention should vanish outside the face; audio and eye
    attention should not overlap inside it. ambient_aud, ambient_eye (R,): the attention maps summed
    over each ray's samples WITHOUT the opacity weights (the reference's
    composite_rays_train_triplane), so that empty space is regularised too; the eye sum is divided by
    max_samples as the reference; face (R,) bool -> two scalars."""
    outside = (ambient_aud * (~face)).mean()
    overlap = ((ambient_eye / max_samples) * ambient_aud.detach() * face).mean()
    return outside, overlap


# ------------------------------------------------------------------------------ patch losses
_ALEX_CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
_ALEX_INDEX = (0, 3, 6, 8, 10)  # positions of the convs in torchvision's alexnet.features
_ALEX_SLICE = (1, 2, 3, 4, 5)  # the lpips package's slice holding each conv


class LPIPS(nn.Module):
    """LPIPS with AlexNet features (Zhang et al. 2018): unit-normalised features of the five ReLU
    layers, squared differences, 1x1 linear weights, spatial mean, summed. Inputs in [-1, 1]."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, stride=s, padding=p) for i, o, k, s, p in _ALEX_CONVS)
        self.lins = nn.ModuleList(nn.Conv2d(c[1], 1, 1, bias=False) for c in _ALEX_CONVS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def features(self, x: Tensor) -> list[Tensor]:
        h = (x - self.shift) / self.scale
        feats = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):
                h = F.max_pool2d(h, kernel_size=3, stride=2)
            h = torch.relu(conv(h))
            feats.append(h)
        return feats

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred, target (B, 3, H, W) in [-1, 1] -> (B,)."""
        total = 0
        for lin, fp, ft in zip(self.lins, self.features(pred), self.features(target)):
            fp = fp / (fp.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            ft = ft / (ft.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((fp - ft) ** 2).mean(dim=(2, 3))
        return total.view(-1)

    def load_weights(self, lin: dict[str, Tensor], backbone: dict[str, Tensor]) -> None:
        """lin: the lpips package's ``alex.pth`` (``lin{k}.model.1.weight``); backbone: torchvision's
        AlexNet (``features.{i}.weight``) or a full lpips state dict (``net.slice{s}.{i}.weight``)."""
        for k, layer in enumerate(self.lins):
            key = f"lin{k}.model.1.weight"
            if key not in lin:
                raise InputError(f"LPIPS weights lack {key}; register the lpips package's alex.pth")
            layer.weight.copy_(lin[key])
        for conv, idx, sl in zip(self.convs, _ALEX_INDEX, _ALEX_SLICE):
            for prefix in (f"features.{idx}.", f"net.slice{sl}.{idx}."):
                if prefix + "weight" in backbone:
                    conv.weight.copy_(backbone[prefix + "weight"])
                    conv.bias.copy_(backbone[prefix + "bias"])
                    break
            else:
                raise InputError(f"AlexNet weights lack conv {idx} (features.{idx}.weight)")


def _load_state(path: Path) -> dict[str, Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else {}


def _has_backbone(state: dict) -> bool:
    return "features.0.weight" in state or "net.slice1.0.weight" in state


def load_lpips(path: Path) -> LPIPS:
    """Build LPIPS from a registered path: alex.pth (lin layers) plus AlexNet backbone weights found
    in the same file, beside it (``alexnet*.pth``) or in torch's hub cache. Loads with weights_only."""
    path = Path(path)
    lin_file = path / "alex.pth" if path.is_dir() else path
    if not lin_file.exists():
        raise AssetMissing(f"{lin_file} does not exist; register the lpips package's alex.pth")
    lin = _load_state(lin_file)
    backbone = lin if _has_backbone(lin) else None
    if backbone is None:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        for cand in sorted(lin_file.parent.glob("alexnet*.pth")) + sorted(hub.glob("alexnet*.pth")):
            state = _load_state(cand)
            if _has_backbone(state):
                backbone = state
                break
    if backbone is None:
        raise AssetMissing(
            f"LPIPS needs AlexNet backbone weights next to {lin_file.name}: put torchvision's "
            f"alexnet-owt-7be5be79.pth in {lin_file.parent} (or register a full lpips state dict)"
        )
    net = LPIPS()
    with torch.no_grad():
        net.load_weights(lin, backbone)
    return net


def structural_patch_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Substitute for LPIPS without pretrained features: (1 - SSIM) at full and half resolution
    plus an L1 loss on image gradients (edges of the lips and teeth). Inputs in [0, 1] -> scalar."""
    loss = pred.new_zeros(())
    p, t = pred, target
    for _ in range(2):
        loss = loss + (1 - ssim(p, t)).mean()
        if min(p.shape[-2:]) < 8:
            break
        p, t = F.avg_pool2d(p, 2), F.avg_pool2d(t, 2)
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    return loss + l1(dx(pred), dx(target)) + l1(dy(pred), dy(target))


PatchLoss = Callable[[Tensor, Tensor], Tensor]  # (B, 3, h, w) pred, target in [0, 1] -> scalar


def make_patch_loss(lpips_path: Path | None, device: torch.device | str = "cpu") -> tuple[str, PatchLoss]:
    """("lpips", LPIPS-Alex) when its weights (alex.pth) are given, else ("structural", structural_patch_loss)."""
    if lpips_path is None:
        return "structural", structural_patch_loss
    net = load_lpips(lpips_path).to(device).eval()

    def lpips_loss(pred: Tensor, target: Tensor) -> Tensor:
        return net(pred.float() * 2 - 1, target.float() * 2 - 1).mean()

    return "lpips", lpips_loss


# --------------------------------------------------------------------------------- landmarks
def mouth_landmark_distance(pred: Tensor, target: Tensor) -> Tensor:
    """LMD: mean distance (pixels) between the mouth landmarks (48..67) of predicted and ground-truth
    68-point sets, each centred on its own mean first (as the reference LMDMeter).
    pred, target (..., 68, 2) -> scalar mean over frames."""
    if pred.shape[-2:] != (68, 2) or target.shape[-2:] != (68, 2):
        raise InputError(f"expected (..., 68, 2) landmarks, got {tuple(pred.shape)} and {tuple(target.shape)}")
    p, t = pred[..., MOUTH, :].double(), target[..., MOUTH, :].double()
    p = p - p.mean(dim=-2, keepdim=True)
    t = t - t.mean(dim=-2, keepdim=True)
    return (p - t).norm(dim=-1).mean()
