"""Face parsing into ER-NeRF's four parts: 0 background, 1 head, 2 neck, 3 torso.

Two methods:

* **BiSeNet** (when the ``bisenet`` asset, the public ``79999_iter.pth`` of face-parsing.PyTorch,
  is registered): a ResNet-18 context path with attention refinement modules, a feature
  fusion module (the ResNet's 1/8 features stand in for the spatial path) and 19
  CelebAMask-HQ classes; the classes are grouped into parts as ER-NeRF does.
* **classical** (no weights): foreground = MediaPipe's selfie segmentation when its network is
  given, else (static camera) pixels that differ from the background plate, cleaned by
  morphology; head = the face from the landmarks (convex hull of the jaw and of the brows
  raised over the forehead) plus the foreground inside an ellipse fitted to the skull outline,
  above the jaw line and, beside the jaw, above the mouth's level; neck = foreground under the
  jaw inside a band about the jaw's width, down to the shoulders (where the foreground widens);
  torso = the rest of the person (shoulders, a collar rising beside the neck). Foreground near
  the head and above the mouth's level that is not in the head yet (long hair, a hat) is head
  too, as BiSeNet labels hair.
  Without a background plate, one is bootstrapped: the temporal median outside a generous
  landmark-based person prior, refined once from the first parsing. Pixels the person never
  uncovers are guessed from the nearest visible background, so a busy background right
  around the person can be mistaken for foreground there; register BiSeNet for such videos.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from models.face.config import ClassicalParsingConfig, ParsingConfig, resolve_method  # noqa: F401  (configs live there)
from talkflow.errors import InputError

BG, HEAD, NECK, TORSO = 0, 1, 2, 3
PART_NAMES = ("background", "head", "neck", "torso")
# docs/dataset.md: parsing/<i>.png colours, indexed by part.
PART_COLOURS = np.array([(255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255)], np.uint8)  # (4,3)

# face-parsing.PyTorch's CelebAMask-HQ classes (index = logit channel).
CLASS_NAMES = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)
# ER-NeRF's grouping: 1-13 and 17-18 head, 14-15 neck, 16 torso, 0 background.
CLASS_TO_PART = np.array([BG] + [HEAD] * 13 + [NECK, NECK, TORSO, HEAD, HEAD], np.uint8)  # (19,)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

Progress = Callable[[int, int | None], None]


# =========================================================================== BiSeNet


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and a (1x1 conv + BN) shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(y + skip)


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))


class ResNet18(nn.Module):
    """ResNet-18 trunk without the classifier; returns features at strides 8, 16, 32."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _stage(64, 64, 1)
        self.layer2 = _stage(64, 128, 2)
        self.layer3 = _stage(128, 256, 2)
        self.layer4 = _stage(256, 512, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))  # (B,64,H/4,W/4)
        f8 = self.layer2(self.layer1(x))  # (B,128,H/8,W/8)
        f16 = self.layer3(f8)  # (B,256,H/16,W/16)
        f32 = self.layer4(f16)  # (B,512,H/32,W/32)
        return f8, f16, f32


class AttentionRefinement(nn.Module):
    """3x3 conv, then a channel gate from the globally pooled features."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3, 1, 1)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        gate = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean(dim=(2, 3), keepdim=True))))  # (B,C,1,1)
        return feat * gate


class ContextPath(nn.Module):
    """ResNet features refined top-down: global context + 1/32 -> 1/16 -> 1/8."""

    def __init__(self):
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3, 1, 1)
        self.conv_head16 = ConvBNReLU(128, 128, 3, 1, 1)
        self.conv_avg = ConvBNReLU(512, 128, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f8, f16, f32 = self.resnet(x)
        glob = self.conv_avg(f32.mean(dim=(2, 3), keepdim=True))  # (B,128,1,1)
        s32 = self.arm32(f32) + glob  # (B,128,H/32,W/32), global context broadcast
        up32 = self.conv_head32(F.interpolate(s32, size=f16.shape[2:], mode="nearest"))  # (B,128,H/16,W/16)
        s16 = self.arm16(f16) + up32
        up16 = self.conv_head16(F.interpolate(s16, size=f8.shape[2:], mode="nearest"))  # (B,128,H/8,W/8)
        return f8, up16, up32


class FeatureFusion(nn.Module):
    """Concatenate spatial and context features, 1x1 conv, squeeze-excitation residual gate."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, 1, 1, 0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean(dim=(2, 3), keepdim=True)))))
        return feat + feat * gate


class SegHead(nn.Module):
    def __init__(self, cin: int, cmid: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cmid, 3, 1, 1)
        self.conv_out = nn.Conv2d(cmid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """BiSeNet for face parsing; state_dict keys follow face-parsing.PyTorch's ``79999_iter.pth``.

    ``forward(x (B,3,H,W), ImageNet-normalised RGB)`` -> logits (B,19,H,W); with ``aux=True``
    also the two auxiliary heads' logits (used for training only), each (B,19,H,W).
    """

    def __init__(self, n_classes: int = 19):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = SegHead(256, 256, n_classes)
        self.conv_out16 = SegHead(128, 64, n_classes)
        self.conv_out32 = SegHead(128, 64, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=1)

    def forward(self, x: torch.Tensor, aux: bool = False):
        size = x.shape[2:]
        f8, cp8, cp16 = self.cp(x)
        out = F.interpolate(self.conv_out(self.ffm(f8, cp8)), size=size, mode="bilinear", align_corners=True)
        if not aux:
            return out
        out16 = F.interpolate(self.conv_out16(cp8), size=size, mode="bilinear", align_corners=True)
        out32 = F.interpolate(self.conv_out32(cp16), size=size, mode="bilinear", align_corners=True)
        return out, out16, out32


def load_bisenet(path: str | Path, device: str | torch.device = "cpu") -> BiSeNet:
    """BiSeNet in eval mode with weights from ``path`` (face-parsing.PyTorch's 79999_iter.pth).

    Loads with ``weights_only=True`` and ``strict=True``; a ``module.`` prefix (DataParallel) is
    dropped and BatchNorm's ``num_batches_tracked`` counters, absent from old checkpoints, are added.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with code, a truncated file, not a checkpoint
        raise InputError(f"{path} is not a loadable BiSeNet checkpoint ({exc}); use face-parsing.PyTorch's "
                         "79999_iter.pth") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = BiSeNet()
    for name, buf in model.state_dict().items():
        if name.endswith("num_batches_tracked") and name not in state:
            state[name] = torch.zeros_like(buf)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{path} does not match the BiSeNet layout of face-parsing.PyTorch: {exc}") from exc
    return model.eval().to(device)


@torch.no_grad()
def bisenet_parts(model: BiSeNet, frames: np.ndarray, size: int = 512) -> np.ndarray:
    """Part labels (B,S,S) uint8 for frames (B,S,S,3) uint8: resized to ``size``, classified, grouped."""
    dev = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(dev).permute(0, 3, 1, 2).float() / 255.0  # (B,3,S,S)
    s = x.shape[2:]
    if tuple(s) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(_IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    logits = model((x - mean) / std)  # (B,19,size,size)
    if tuple(s) != (size, size):
        logits = F.interpolate(logits, size=s, mode="bilinear", align_corners=False)
    classes = logits.argmax(1).cpu().numpy()  # (B,S,S)
    return CLASS_TO_PART[classes]


# =========================================================================== classical fallback




class _FaceGeometry:
    """Face-aligned coordinates for a frame: ``h`` to the face's right, ``v`` down from the chin."""

    def __init__(self, lms: np.ndarray, shape: tuple[int, int]):
        lm = np.asarray(lms, dtype=np.float64)
        if lm.shape != (68, 2) or not np.isfinite(lm).all():
            raise InputError(f"expected 68 finite landmarks (68,2), got shape {lm.shape}")
        self.lm = lm
        self.chin = lm[8]
        brow = lm[17:27].mean(axis=0)
        up = brow - self.chin
        self.face_h = max(float(np.hypot(*up)), 1.0)
        self.up = up / self.face_h  # unit vector chin -> brows (image coords, y down)
        self.right = np.array([-self.up[1], self.up[0]])
        self.jaw_w = max(float(np.hypot(*(lm[16] - lm[0]))), 1.0)
        yy, xx = _grid(tuple(shape))
        dx, dy = xx - np.float32(self.chin[0]), yy - np.float32(self.chin[1])
        r, u = self.right.astype(np.float32), self.up.astype(np.float32)
        self.h = dx * r[0] + dy * r[1]  # (H,W)
        self.v = -(dx * u[0] + dy * u[1])  # (H,W) >0 below the chin
        jh, jv = self.to_face(lm[:17])
        order = np.argsort(jh)
        self.jaw_h, self.jaw_v = jh[order], jv[order]
        self.shape = shape

    def to_face(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = pts - self.chin
        return d @ self.right, -(d @ self.up)

    def raised_brows(self, amount: float) -> np.ndarray:
        return self.lm[17:27] + self.up * amount * self.face_h  # (10,2)

    def below_jaw(self) -> np.ndarray:
        """(H,W) bool: under the jaw line, within its horizontal extent."""
        inside = (self.h >= self.jaw_h[0]) & (self.h <= self.jaw_h[-1])
        return inside & (self.v > np.interp(self.h, self.jaw_h, self.jaw_v))

    def hair_zone(self, below_jaw: np.ndarray, low: float) -> np.ndarray:
        """(H,W) bool: where hair can be: not under the jaw, and not beside it lower than ``low``
        face heights above the chin (there the person is the neck or a collar)."""
        beside = (self.h < self.jaw_h[0]) | (self.h > self.jaw_h[-1])
        return ~below_jaw & ~(beside & (self.v > -low * self.face_h))


@functools.lru_cache(maxsize=4)
def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (yy, xx), each (H,W) float32, read-only and shared."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _fill_polygon(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H,W) bool: pixel centres inside the convex hull of ``points`` (N,2) x, y."""
    from scipy.spatial import ConvexHull

    hull = points[ConvexHull(points).vertices]  # (K,2) counter-clockwise in (x, y)
    mask = np.zeros(shape, bool)
    x0, y0 = np.maximum(np.floor(hull.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(hull.max(0)).astype(int) + 1, (shape[1], shape[0]))
    if x1 <= x0 or y1 <= y0:
        return mask
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    inside = np.ones(xx.shape, bool)
    for a, b in zip(hull, np.roll(hull, -1, axis=0)):  # left of every edge
        inside &= (b[0] - a[0]) * (yy - a[1]) - (b[1] - a[1]) * (xx - a[0]) >= -1e-9
    mask[y0:y1, x0:x1] = inside
    return mask


def _bbox(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    """Slices of the bounding box of ``mask`` grown by ``pad`` (clipped to the image)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    h, w = mask.shape
    return (slice(max(rows[0] - pad, 0), min(rows[-1] + pad + 1, h)),
            slice(max(cols[0] - pad, 0), min(cols[-1] + pad + 1, w)))


def _ellipse_mask(points: np.ndarray, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Ellipse from the points' mean and covariance, sized to contain them all, then x ``scale``."""
    c = points.mean(axis=0)
    cov = np.cov((points - c).T)
    evals, evecs = np.linalg.eigh(cov)
    axes = np.sqrt(np.maximum(evals, 1e-6))  # (2,) principal std devs
    local = (points - c) @ evecs / axes  # (N,2)
    radius = float(np.sqrt((local**2).sum(1)).max()) * scale
    m = evecs / axes  # (2,2): columns map (dx, dy) to unit-circle coordinates
    yy, xx = _grid(shape)
    dx, dy = xx - np.float32(c[0]), yy - np.float32(c[1])
    q0 = dx * np.float32(m[0, 0]) + dy * np.float32(m[1, 0])
    q1 = dx * np.float32(m[0, 1]) + dy * np.float32(m[1, 1])
    return q0 * q0 + q1 * q1 <= radius**2


def _disk(r: int) -> np.ndarray:
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r * r


_SMALL_DISK = 3  # radii up to this use a structuring element, larger ones a distance transform


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a disk of radius r."""
    if r <= 0 or not mask.any():
        return mask.copy()
    if r <= _SMALL_DISK:
        return ndimage.binary_dilation(mask, _disk(r))
    return ndimage.distance_transform_edt(~mask) <= r


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary erosion by a disk of radius r; outside the image counts as empty."""
    if r <= 0:
        return mask.copy()
    if r <= _SMALL_DISK:
        return ndimage.binary_erosion(mask, _disk(r), border_value=0)
    padded = np.pad(mask, 1)
    return (ndimage.distance_transform_edt(padded) > r)[1:-1, 1:-1]


def _close(mask: np.ndarray, r: int) -> np.ndarray:
    return _erode(_dilate(mask, r), r) if r > 0 else mask.copy()


def _open(mask: np.ndarray, r: int) -> np.ndarray:
    return _dilate(_erode(mask, r), r) if r > 0 else mask.copy()


def head_core(lms: np.ndarray, shape: tuple[int, int], config: ClassicalParsingConfig | None = None) -> np.ndarray:
    """(H,W) bool: convex hull of the jaw and the brows raised over the forehead (always head)."""
    cfg = config or ClassicalParsingConfig()
    g = _FaceGeometry(lms, shape)
    return _fill_polygon(np.concatenate([g.lm[:17], g.raised_brows(cfg.forehead)]), shape)


def person_prior(lms: np.ndarray, shape: tuple[int, int], config: ClassicalParsingConfig | None = None) -> np.ndarray:
    """(H,W) bool: a generous region the person may occupy (skull ellipse, and a body widening
    below the chin); used to bootstrap the background before any parsing exists."""
    return _person_prior(_FaceGeometry(lms, shape), config or ClassicalParsingConfig())


def _person_prior(g: _FaceGeometry, cfg: ClassicalParsingConfig) -> np.ndarray:
    shape = g.shape
    skull = np.concatenate([g.lm[:17], g.raised_brows(cfg.crown)])
    head = _ellipse_mask(skull, shape, cfg.hair_scale)
    half = 0.6 * g.jaw_w + cfg.body_slope * np.maximum(g.v, 0.0)  # (H,W) body half-width growing downwards
    body = (g.v > -0.2 * g.face_h) & (np.abs(g.h) < half)
    return head | body


def foreground_mask(
    frame: np.ndarray, background: np.ndarray, config: ClassicalParsingConfig | None = None
) -> np.ndarray:
    """(H,W) bool: pixels that differ from the background plate, cleaned by morphology."""
    cfg = config or ClassicalParsingConfig()
    d = frame.astype(np.float32) - background.astype(np.float32)  # (H,W,3); blur is linear
    if cfg.blur_sigma > 0:
        d = ndimage.gaussian_filter(d, (cfg.blur_sigma, cfg.blur_sigma, 0), truncate=3.0)
    fg = np.abs(d).max(-1) > cfg.diff_threshold  # (H,W)
    fg = _close(_open(fg, cfg.open_px), cfg.close_px)
    return ndimage.binary_fill_holes(fg)


def _keep_person_components(fg: np.ndarray, seed: np.ndarray, min_area: float) -> np.ndarray:
    """Connected components of ``fg`` that touch ``seed`` and are at least ``min_area`` px."""
    lab, n = ndimage.label(fg)
    if n == 0:
        return fg
    areas = np.bincount(lab.ravel(), minlength=n + 1)
    touched = np.bincount(lab[seed].ravel(), minlength=n + 1) > 0
    keep = touched & (areas >= min_area)
    keep[0] = False
    return keep[lab]


def classical_parsing(
    frame: np.ndarray,
    lms: np.ndarray,
    background: np.ndarray | None,
    config: ClassicalParsingConfig | None = None,
    person: np.ndarray | None = None,
) -> np.ndarray:
    """Part labels (S,S) uint8 of ``frame`` (S,S,3) uint8 from its landmarks (68,2) and the
    clip's background plate (S,S,3) uint8, or a person mask (S,S) bool (e.g. from
    selfie_segmentation) in place of the background difference; see the module docstring."""
    cfg = config or ClassicalParsingConfig()
    frame = np.asarray(frame)
    if person is None:
        background = np.asarray(background)
        if frame.shape != background.shape or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"frame {frame.shape} and background {background.shape} must both be (S,S,3)")
    elif np.shape(person) != frame.shape[:2]:
        raise InputError(f"person mask {np.shape(person)} does not match frame {frame.shape}")
    shape = frame.shape[:2]
    g = _FaceGeometry(lms, shape)

    core = _fill_polygon(np.concatenate([g.lm[:17], g.raised_brows(cfg.forehead)]), shape)
    skull_pts = np.concatenate([g.lm[:17], g.raised_brows(cfg.crown)])
    skull = _ellipse_mask(skull_pts, shape, cfg.hair_scale)
    below_jaw = g.below_jaw()
    hair = g.hair_zone(below_jaw, cfg.hair_low)

    fg = foreground_mask(frame, background, cfg) if person is None else np.asarray(person, bool)
    seed = core | _person_prior(g, cfg)
    fg = _keep_person_components(fg, seed, cfg.min_component_share * fg.size) | core

    head = core | (fg & skull & hair)
    if cfg.head_close > 0:  # bridge gaps where hair matches the background, within the skull
        r = max(int(round(cfg.head_close * g.face_h)), 1)
        box = _bbox(skull, r + 1)  # the closing only matters inside the skull ellipse
        head[box] |= _close(head[box], r) & skull[box] & hair[box]
    head = ndimage.binary_fill_holes(head)

    # Neck: foreground under the jaw inside the band, down to where the foreground widens.
    band = np.abs(g.h) <= 0.5 * cfg.neck_band * g.jaw_w
    v_max = cfg.neck_max * g.face_h
    rows = fg & ~head & (g.v > 0) & (g.v <= v_max) & (np.abs(g.h) <= 1.5 * g.jaw_w)
    widths = np.bincount(g.v[rows].astype(np.int64), minlength=int(v_max) + 1)  # (V,) px per face row
    wide = np.flatnonzero(widths > cfg.shoulder_width * g.jaw_w)
    wide = wide[wide >= cfg.neck_min * g.face_h]
    neck_end = float(wide[0]) if wide.size else v_max
    under = (below_jaw | (g.v > 0)) & (g.v <= neck_end)
    # The neck is always there: a narrow core band is neck even where it matches the background.
    neck_core = (np.abs(g.h) <= 0.5 * cfg.neck_core * g.jaw_w) & under & (g.v <= neck_end)
    neck = ((fg & band) | neck_core) & ~head & under

    rest = fg & ~head & ~neck
    labels = np.zeros(shape, np.uint8)
    labels[rest] = TORSO
    near_head = _ellipse_mask(skull_pts, shape, cfg.stray_hair_scale)
    labels[rest & hair & near_head] = HEAD  # hair, hats beside/above the head
    labels[neck] = NECK
    labels[head] = HEAD
    return labels


# =========================================================================== classical, batched

# The same maths as `classical_parsing`, over a batch of frames in torch: the per-pixel
# geometry, the blur, the threshold and the disk morphology (running sums) run on the whole
# batch; connected components and hole filling (scipy) and the head's closing (on its crop) run per frame.
# `classical_parsing` is the reference it is tested against.


def _gaussian_blur_hw(x: torch.Tensor, sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """(B,C,H,W) float32 blurred along H then W with scipy gaussian_filter's kernel and its
    'reflect' border (d c b a | a b c d | d c b a); summed in float32 (scipy sums in float64:
    values agree to ~1e-5, so only a pixel within that of the threshold can differ)."""
    radius = int(truncate * float(sigma) + 0.5)
    k = np.exp(-0.5 / sigma**2 * np.arange(-radius, radius + 1) ** 2)
    weights = (k / k.sum()).tolist()
    for dim in (2, 3):
        n = x.shape[dim]
        padded = torch.cat([x.narrow(dim, 0, radius).flip(dim), x, x.narrow(dim, n - radius, radius).flip(dim)], dim)
        out = padded.narrow(dim, 0, n) * weights[0]
        for j in range(1, len(weights)):
            out.add_(padded.narrow(dim, j, n), alpha=weights[j])
        x = out
    return x


def _disk_widths(r: int) -> list[int]:
    """Half-width of the disk x^2 + y^2 <= r^2 on each row offset -r..r."""
    return [int(np.floor(np.sqrt(r * r - dy * dy))) for dy in range(-r, r + 1)]


def _dilate_batch(mask: torch.Tensor, r: int, outside: bool = False) -> torch.Tensor:
    """(B,H,W) bool dilated by a disk of radius r; pixels outside the image count as ``outside``.

    Row by row: a running sum along W gives every horizontal segment's hit at once; the disk is
    the union of its rows' segments, shifted vertically."""
    if r <= 0:
        return mask.clone()
    b, h, w = mask.shape
    x = F.pad(mask.to(torch.int32), (r, r, r, r), value=int(outside))  # (B,H+2r,W+2r)
    cs = F.pad(x.cumsum(-1, dtype=torch.int32), (1, 0))  # (B,H+2r,W+2r+1), cs[j] = sum x[:j]
    hits = {hw: (cs[..., r + hw + 1 : r + hw + 1 + w] - cs[..., r - hw : r - hw + w]) > 0
            for hw in set(_disk_widths(r))}  # (B,H+2r,W): a segment of half-width hw hits
    out = torch.zeros(b, h, w, dtype=torch.bool, device=mask.device)
    for dy, hw in zip(range(-r, r + 1), _disk_widths(r)):
        out |= hits[hw][:, r + dy : r + dy + h]
    return out


def _erode_batch(mask: torch.Tensor, r: int) -> torch.Tensor:
    """(B,H,W) bool eroded by a disk of radius r; outside the image counts as empty."""
    return ~_dilate_batch(~mask, r, outside=True) if r > 0 else mask.clone()


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """scipy's binary_fill_holes (4-connected background) by one labelling: the background
    components that do not touch the image border are holes."""
    lab, n = ndimage.label(~mask)
    if n == 0:
        return mask.copy()
    border = np.zeros(n + 1, bool)
    for edge in (lab[0], lab[-1], lab[:, 0], lab[:, -1]):
        border[edge] = True
    border[0] = True  # label 0 is the mask itself
    return mask | ~border[lab]


class _BatchGeometry:
    """`_FaceGeometry` for B frames: per-frame scalars in numpy, per-pixel maps in torch (B,H,W)."""

    def __init__(self, lms: np.ndarray, shape: tuple[int, int], cfg: ClassicalParsingConfig):
        self.frames = [_FaceParams(lm, cfg) for lm in lms]
        yy, xx = (torch.from_numpy(a.copy()) for a in _grid(tuple(shape)))
        f32 = lambda name: torch.tensor([getattr(g, name) for g in self.frames], dtype=torch.float32)[:, None, None]  # noqa: E731
        dx, dy = xx - f32("chin_x"), yy - f32("chin_y")
        self.h = dx * f32("right_x") + dy * f32("right_y")  # (B,H,W)
        self.v = -(dx * f32("up_x") + dy * f32("up_y"))
        self.face_h = torch.tensor([g.face_h for g in self.frames], dtype=torch.float64)[:, None, None]
        self.jaw_w = torch.tensor([g.jaw_w for g in self.frames], dtype=torch.float64)[:, None, None]
        self.xx, self.yy, self.shape = xx, yy, tuple(shape)

    def below_jaw(self) -> torch.Tensor:
        """(B,H,W) bool: under the jaw line, within its horizontal extent (per frame, np.interp)."""
        h, v = self.h.numpy(), self.v.numpy()
        out = np.empty(h.shape, bool)
        for i, g in enumerate(self.frames):
            inside = (h[i] >= g.jaw_h[0]) & (h[i] <= g.jaw_h[-1])
            out[i] = inside & (v[i] > np.interp(h[i], g.jaw_h, g.jaw_v))
        return torch.from_numpy(out)

    def hair_zone(self, below_jaw: torch.Tensor, low: float) -> torch.Tensor:
        """`_FaceGeometry.hair_zone` of every frame: (B,H,W) bool."""
        ends = torch.tensor([[g.jaw_h[0], g.jaw_h[-1]] for g in self.frames], dtype=torch.float64)[:, :, None, None]
        h = self.h.double()
        beside = (h < ends[:, 0]) | (h > ends[:, 1])
        return ~below_jaw & ~(beside & (self.v > (-low * self.face_h).float()))

    def polygon(self, which: str) -> torch.Tensor:
        """(B,H,W) bool: pixel centres inside each frame's convex hull ``which`` (counter-clockwise).

        Each hull edge bounds x on every row (left of the edge, as `_fill_polygon` tests):
        the rows' intervals are computed in float64, then compared with the pixel columns."""
        h, w = self.shape
        rows = torch.arange(h, dtype=torch.float64)[:, None]  # (H,1)
        lo = torch.full((len(self.frames), h), -np.inf, dtype=torch.float64)
        hi = torch.full((len(self.frames), h), np.inf, dtype=torch.float64)
        for i, g in enumerate(self.frames):
            hull = torch.from_numpy(getattr(g, which))  # (K,2)
            a, b = hull, hull.roll(-1, 0)
            slope = -(b[:, 1] - a[:, 1])  # the edge test is slope * x + const >= -1e-9
            const = (b[:, 0] - a[:, 0]) * (rows - a[:, 1]) + (b[:, 1] - a[:, 1]) * a[:, 0]  # (H,K)
            bound = (-1e-9 - const) / torch.where(slope == 0, torch.ones_like(slope), slope)
            lo[i] = torch.where(slope > 0, bound, torch.full_like(bound, -np.inf)).amax(1)
            hi[i] = torch.where(slope < 0, bound, torch.full_like(bound, np.inf)).amin(1)
            flat_out = ((slope == 0) & (const < -1e-9)).any(1)  # a horizontal edge excludes the row
            hi[i][flat_out] = -np.inf
        x = torch.arange(w, dtype=torch.float64)
        return (x >= lo[..., None]) & (x <= hi[..., None])

    def ellipse(self, which: str) -> torch.Tensor:
        """(B,H,W) bool inside each frame's ellipse ``which`` (centre, (2,2) map, radius)."""
        c = torch.tensor(np.array([getattr(g, which)[0] for g in self.frames]), dtype=torch.float32)
        m = torch.tensor(np.array([getattr(g, which)[1] for g in self.frames]), dtype=torch.float32)
        r2 = torch.tensor([getattr(g, which)[2] ** 2 for g in self.frames], dtype=torch.float32)
        dx = self.xx - c[:, 0, None, None]
        dy = self.yy - c[:, 1, None, None]
        q0 = dx * m[:, 0, 0, None, None] + dy * m[:, 1, 0, None, None]
        q1 = dx * m[:, 0, 1, None, None] + dy * m[:, 1, 1, None, None]
        return q0 * q0 + q1 * q1 <= r2[:, None, None]

    def person_prior(self, cfg: ClassicalParsingConfig, skull: torch.Tensor) -> torch.Tensor:
        """`_person_prior` given the frames' skull ellipses."""
        half = (0.6 * self.jaw_w).float() + cfg.body_slope * self.v.clamp_min(0.0)
        body = (self.v > (-0.2 * self.face_h).float()) & (self.h.abs() < half)
        return skull | body


class _FaceParams:
    """The per-frame scalars of `_FaceGeometry` (no pixel maps) and the hulls/ellipses used."""

    def __init__(self, lms: np.ndarray, cfg: ClassicalParsingConfig):
        lm = np.asarray(lms, dtype=np.float64)
        if lm.shape != (68, 2) or not np.isfinite(lm).all():
            raise InputError(f"expected 68 finite landmarks (68,2), got shape {lm.shape}")
        chin = lm[8]
        up = lm[17:27].mean(axis=0) - chin
        self.face_h = max(float(np.hypot(*up)), 1.0)
        u = up / self.face_h
        r = np.array([-u[1], u[0]])
        self.jaw_w = max(float(np.hypot(*(lm[16] - lm[0]))), 1.0)
        self.chin_x, self.chin_y = np.float32(chin[0]), np.float32(chin[1])
        self.right_x, self.right_y = r.astype(np.float32)
        self.up_x, self.up_y = u.astype(np.float32)
        d = lm[:17] - chin
        jh, jv = d @ r, -(d @ u)
        order = np.argsort(jh)
        self.jaw_h, self.jaw_v = jh[order], jv[order]
        from scipy.spatial import ConvexHull

        core = np.concatenate([lm[:17], lm[17:27] + u * cfg.forehead * self.face_h])
        self.core = core[ConvexHull(core).vertices]  # (K,2)
        skull = np.concatenate([lm[:17], lm[17:27] + u * cfg.crown * self.face_h])
        self.skull = _ellipse_params(skull, cfg.hair_scale)
        self.near_head = _ellipse_params(skull, cfg.stray_hair_scale)


def _ellipse_params(points: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, float]:
    """`_ellipse_mask`'s centre (2,), map (2,2) and radius for ``points`` (N,2)."""
    c = points.mean(axis=0)
    evals, evecs = np.linalg.eigh(np.cov((points - c).T))
    axes = np.sqrt(np.maximum(evals, 1e-6))
    radius = float(np.sqrt((((points - c) @ evecs / axes) ** 2).sum(1)).max()) * scale
    return c, evecs / axes, radius


def _foreground_batch(frames: torch.Tensor, background: torch.Tensor, cfg: ClassicalParsingConfig) -> torch.Tensor:
    """`foreground_mask` before hole filling for (B,H,W,3) uint8 frames: (B,H,W) bool."""
    d = (frames.float() - background.float()).permute(0, 3, 1, 2)  # (B,3,H,W), exact in float32
    if cfg.blur_sigma > 0:
        d = _gaussian_blur_hw(d, cfg.blur_sigma)
    fg = d.abs().amax(1) > cfg.diff_threshold
    if cfg.open_px > 0:
        fg = _dilate_batch(_erode_batch(fg, cfg.open_px), cfg.open_px)
    if cfg.close_px > 0:
        fg = _erode_batch(_dilate_batch(fg, cfg.close_px), cfg.close_px)
    return fg


def classical_parsing_batch(
    frames: np.ndarray, lms: np.ndarray, background: np.ndarray | None, config: ClassicalParsingConfig | None = None,
    person: np.ndarray | None = None,
) -> np.ndarray:
    """`classical_parsing` of a batch: frames (B,S,S,3) uint8, lms (B,68,2), the plate (S,S,3)
    uint8 or person masks (B,S,S) bool in its place -> labels (B,S,S) uint8."""
    cfg = config or ClassicalParsingConfig()
    frames = np.asarray(frames)
    if person is not None:
        person = np.asarray(person, bool)
        if frames.ndim != 4 or person.shape != frames.shape[:3]:
            raise InputError(f"person masks {person.shape} do not match frames {frames.shape}")
    elif background is None or frames.ndim != 4 or frames.shape[1:] != np.shape(background) or frames.shape[3] != 3:
        raise InputError(f"frames {frames.shape} must be (B,S,S,3) over a background (S,S,3), "
                         f"got {None if background is None else np.shape(background)}")
    b, shape = frames.shape[0], frames.shape[1:3]
    g = _BatchGeometry(np.asarray(lms), shape, cfg)
    core = g.polygon("core")
    skull = g.ellipse("skull")
    near_head = g.ellipse("near_head")
    below_jaw = g.below_jaw()
    hair = g.hair_zone(below_jaw, cfg.hair_low)
    seed = (core | g.person_prior(cfg, skull)).numpy()
    if person is None:  # the background difference, its holes filled (`foreground_mask`)
        fg_t = _foreground_batch(torch.from_numpy(frames), torch.from_numpy(np.array(background))[None], cfg).numpy()
    else:
        fg_t = person
    core_n, skull_n, hair_n = core.numpy(), skull.numpy(), hair.numpy()
    fg = np.empty_like(fg_t)
    head = np.empty_like(fg_t)
    min_area = cfg.min_component_share * fg_t[0].size
    for i, p in enumerate(g.frames):  # components, holes and the head's closing: per frame
        f = _keep_person_components(_fill_holes(fg_t[i]) if person is None else fg_t[i], seed[i], min_area) | core_n[i]
        hd = core_n[i] | (f & skull_n[i] & hair_n[i])
        if cfg.head_close > 0:
            r = max(int(round(cfg.head_close * p.face_h)), 1)
            box = _bbox(skull_n[i], r + 1)
            crop = torch.from_numpy(np.ascontiguousarray(hd[box]))[None]
            closed = _erode_batch(_dilate_batch(crop, r), r)[0].numpy()  # `_close` on the crop
            hd[box] |= closed & skull_n[i][box] & hair_n[i][box]
        box = _bbox(hd, 1)  # holes lie inside the head's box: fill there
        hd[box] = _fill_holes_padded(hd[box])
        fg[i], head[i] = f, hd
    fg_t, head_t = torch.from_numpy(fg), torch.from_numpy(head)

    # neck: as in `classical_parsing`, every frame at once
    v, h, face_h, jaw_w = g.v, g.h, g.face_h, g.jaw_w
    band = h.abs() <= (0.5 * cfg.neck_band * jaw_w).float()
    v_max = (cfg.neck_max * face_h).float()  # (B,1,1)
    rows = fg_t & ~head_t & (v > 0) & (v <= v_max) & (h.abs() <= (1.5 * jaw_w).float())
    n_rows = int(v_max.max()) + 1
    widths = torch.zeros(b, n_rows, dtype=torch.int64)
    idx = torch.where(rows, v.long(), torch.zeros_like(v, dtype=torch.int64)).clamp_max(n_rows - 1).flatten(1)
    widths.scatter_add_(1, idx, rows.flatten(1).long())
    k = torch.arange(n_rows, dtype=torch.float64)[None]
    wide = (widths > cfg.shoulder_width * jaw_w[:, :, 0]) & (k >= cfg.neck_min * face_h[:, :, 0])
    first = torch.where(wide.any(1), wide.float().argmax(1).double(), v_max[:, 0, 0].double())  # (B,)
    neck_end = first.float()[:, None, None]
    under = (below_jaw | (v > 0)) & (v <= neck_end)
    neck_core = (h.abs() <= (0.5 * cfg.neck_core * jaw_w).float()) & under & (v <= neck_end)
    neck = ((fg_t & band) | neck_core) & ~head_t & under

    rest = fg_t & ~head_t & ~neck
    labels = torch.zeros(b, *shape, dtype=torch.uint8)
    labels[rest] = TORSO
    labels[rest & hair & near_head] = HEAD
    labels[neck] = NECK
    labels[head_t] = HEAD
    return labels.numpy()


def _fill_holes_padded(mask: np.ndarray) -> np.ndarray:
    """Holes of ``mask`` filled as if it had an empty one-pixel border (a crop of a larger image
    whose outside is empty)."""
    return _fill_holes(np.pad(mask, 1))[1:-1, 1:-1]


# =========================================================================== both methods






def bootstrap_background(
    frames: Sequence[np.ndarray] | np.ndarray, lms: np.ndarray, config: ClassicalParsingConfig | None = None
) -> np.ndarray:
    """Background plate (S,S,3) uint8 with the landmark person prior masked out."""
    from models.face.background import estimate_background

    shape = np.asarray(frames[0]).shape[:2]
    priors = _LazyMasks(lambda i: person_prior(lms[i], shape, config), len(frames))
    return estimate_background(frames, priors)


class _LazyMasks:
    """A sequence of masks computed on access (estimate_background samples only some frames)."""

    def __init__(self, fn: Callable[[int], np.ndarray], n: int):
        self.fn, self.n = fn, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        return self.fn(i)


def parse_frames(
    frames: Sequence[np.ndarray] | np.ndarray,
    lms: np.ndarray,
    *,
    background: np.ndarray | None = None,
    config: ParsingConfig | None = None,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    segmentation: str | Path | None = None,
) -> np.ndarray:
    """Part labels (T,S,S) uint8 (0 bg, 1 head, 2 neck, 3 torso) for frames (T,S,S,3) uint8.

    BiSeNet when its ``weights`` are given (``method="auto"``), else the classical
    method with ``background`` (S,S,3) or, without one, a plate bootstrapped from ``lms`` (T,68,2)
    (re-estimated from a first parsing when ``refine_background``). With ``segmentation`` (the
    path of MediaPipe's selfie_segmentation.tflite) the classical method takes the person
    foreground from that network instead, and needs no plate.
    """
    cfg = config or ParsingConfig()
    t = len(frames)
    lms = np.asarray(lms, dtype=np.float32)
    if lms.shape != (t, 68, 2):
        raise InputError(f"expected landmarks (T,68,2) for {t} frames, got {lms.shape}")
    if t == 0:
        return np.zeros((0, 0, 0), np.uint8)
    shape = np.asarray(frames[0]).shape
    out = np.empty((t, *shape[:2]), np.uint8)

    if resolve_method(cfg.method, weights) == "bisenet":
        model = load_bisenet(weights, device)
        for s in range(0, t, cfg.batch_size):
            batch = np.stack([np.asarray(frames[i]) for i in range(s, min(s + cfg.batch_size, t))])
            out[s : s + len(batch)] = bisenet_parts(model, batch, cfg.bisenet_size)
            if progress is not None:
                progress(s + len(batch), t)
        return out

    if segmentation is not None:
        from models.face.selfie_segmentation import SelfieSegmenter

        segmenter = SelfieSegmenter(segmentation)
        for s in range(0, t, cfg.batch_size):
            e = min(s + cfg.batch_size, t)
            batch = np.stack([np.asarray(frames[i]) for i in range(s, e)])
            person = np.stack([segmenter.mask(frame) for frame in batch])
            out[s:e] = classical_parsing_batch(batch, lms[s:e], None, cfg.classical, person=person)
            if progress is not None:
                progress(e, t)
        return out

    passes = 2 if background is None and cfg.refine_background else 1
    bg = background if background is not None else bootstrap_background(frames, lms, cfg.classical)
    for p in range(passes):
        if p > 0:
            from models.face.background import estimate_background

            bg = estimate_background(frames, out)
        for s in range(0, t, cfg.batch_size):
            e = min(s + cfg.batch_size, t)
            batch = np.stack([np.asarray(frames[i]) for i in range(s, e)])
            out[s:e] = classical_parsing_batch(batch, lms[s:e], bg, cfg.classical)
            if progress is not None:
                progress(p * t + e, passes * t)
    return out


def labels_to_rgb(labels: np.ndarray) -> np.ndarray:
    """(...,S,S) part labels -> (...,S,S,3) uint8 colours of docs/dataset.md."""
    lab = np.asarray(labels)
    if lab.size and int(lab.max()) >= len(PART_COLOURS):
        raise InputError(f"labels must be 0..3, got a maximum of {int(lab.max())}")
    return PART_COLOURS[lab]


# label of each colour of the palette by its channels' high bits (r << 2 | g << 1 | b)
_CODE_TO_LABEL = np.zeros(8, np.uint8)
_CODE_TO_LABEL[[0b111, 0b100, 0b010, 0b001]] = [BG, HEAD, NECK, TORSO]


def rgb_to_labels(rgb: np.ndarray) -> np.ndarray:
    """(...,S,S,3) parsing colours -> (...,S,S) uint8 labels (nearest palette colour)."""
    x = np.asarray(rgb)
    if x.dtype == np.uint8 and x.shape[-1:] == (3,):  # the palette's exact colours, as written
        hi = x >> 7
        lab = _CODE_TO_LABEL[(hi[..., 0] << 2) | (hi[..., 1] << 1) | hi[..., 2]]
        if np.array_equal(PART_COLOURS[lab], x):
            return lab
    x = np.asarray(rgb, dtype=np.int32)[..., None, :]  # (...,1,3)
    d = np.abs(x - PART_COLOURS.astype(np.int32)).sum(-1)  # (...,4)
    return d.argmin(-1).astype(np.uint8)


def part_areas(labels: np.ndarray) -> np.ndarray:
    """Share of the frame per part, (4,) float (bg, head, neck, torso), over all given frames."""
    lab = np.asarray(labels)
    return np.bincount(lab.ravel(), minlength=4)[:4] / max(lab.size, 1)
