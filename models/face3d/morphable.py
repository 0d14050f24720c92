"""Linear 3D morphable face models: a generic model built in code, and the BFM 2009 converter.

A model is `vertices = mean + id_basis @ id + exp_basis @ exp` with the bases already scaled by
their standard deviations, so coefficients are ~N(0, 1) for identities and ~[-1, 1] for
expressions. Units are millimetres in the head frame of `models.face3d.camera` (x to the
subject's left, y up, z out of the face, the origin at the centre of the head).

- `generic_model()` needs no download: a coarse face (about 1.1k vertices) triangulated over
  its frontal outline, 68 iBUG landmarks as vertices, 8 identity and 10 expression modes as
  smooth displacement fields, and skin-like vertex colours. Tracking runs with it when no BFM
  is registered; it is also the synthetic ground truth of the tests.
- `convert_bfm(mat, out)` turns the Basel Face Model 2009 `01_MorphableModel.mat` into the
  same format (a torch file read back by `load_model`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from models.checkpoint_io import save_atomic
from talkflow.errors import AssetMissing, InputError

FORMAT_VERSION = 1
BFM_FILE = "01_MorphableModel.mat"
_REGISTER = "`talkflow assets add bfm /path/to/01_MorphableModel.mat`"


@dataclass
class MorphableModel:
    """A linear face model. N vertices, F triangles, K_id / K_exp / K_tex modes."""

    mean: Tensor  # (N, 3) mm
    id_basis: Tensor  # (N, 3, K_id) mm per unit coefficient
    exp_basis: Tensor  # (N, 3, K_exp) mm per unit coefficient
    faces: Tensor  # (F, 3) long, counter-clockwise seen from the front (normals point out)
    lmk_idx: Tensor  # (68,) long, vertex of each iBUG landmark
    tex_mean: Tensor | None = None  # (N, 3) RGB in [0, 1]
    tex_basis: Tensor | None = None  # (N, 3, K_tex)
    name: str = "model"
    id_names: tuple[str, ...] = ()
    exp_names: tuple[str, ...] = ()
    _lmk_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def n_id(self) -> int:
        return self.id_basis.shape[-1]

    @property
    def n_exp(self) -> int:
        return self.exp_basis.shape[-1]

    @property
    def n_tex(self) -> int:
        return 0 if self.tex_basis is None else self.tex_basis.shape[-1]

    def vertices(self, id: Tensor, exp: Tensor) -> Tensor:
        """id (B, K_id) or (K_id,), exp (B, K_exp) -> (B, N, 3) mm."""
        return _linear(self.mean, self.id_basis, self.exp_basis, id, exp)

    def landmark_basis(self) -> tuple[Tensor, Tensor, Tensor]:
        """The landmark rows: mean (68, 3), id_basis (68, 3, K_id), exp_basis (68, 3, K_exp)."""
        key = (self.mean.device, self.mean.dtype)
        if key not in self._lmk_cache:
            self._lmk_cache.clear()
            i = self.lmk_idx
            self._lmk_cache[key] = (self.mean[i], self.id_basis[i], self.exp_basis[i])
        return self._lmk_cache[key]

    def landmarks(self, id: Tensor, exp: Tensor) -> Tensor:
        """id (B, K_id) or (K_id,), exp (B, K_exp) -> (B, 68, 3): only the landmark rows."""
        return _linear(*self.landmark_basis(), id, exp)

    def colors(self, tex: Tensor | None = None) -> Tensor:
        """tex (B, K_tex) or None -> (B, N, 3) RGB albedo in [0, 1] ((1, N, 3) for None)."""
        if self.tex_mean is None:
            return self.mean.new_full((1, self.n_vertices, 3), 0.7)  # plain grey
        if tex is None or self.tex_basis is None:
            return self.tex_mean[None]
        tex = tex[None] if tex.ndim == 1 else tex
        flat = self.tex_basis.reshape(-1, self.n_tex)  # (N*3, K_tex)
        return (self.tex_mean[None] + (tex @ flat.T).view(tex.shape[0], -1, 3)).clamp(0.0, 1.0)

    def to(self, device=None, dtype=None) -> MorphableModel:
        def move(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return replace(
            self,
            mean=move(self.mean),
            id_basis=move(self.id_basis),
            exp_basis=move(self.exp_basis),
            faces=move(self.faces),
            lmk_idx=move(self.lmk_idx),
            tex_mean=move(self.tex_mean),
            tex_basis=move(self.tex_basis),
            _lmk_cache={},
        )

    def state_dict(self) -> dict:
        """Plain tensors, strings and ints only (loadable with `torch.load(weights_only=True)`)."""
        out = {
            "format": "talkflow.face3d",
            "version": FORMAT_VERSION,
            "name": self.name,
            "mean": self.mean,
            "id_basis": self.id_basis,
            "exp_basis": self.exp_basis,
            "faces": self.faces,
            "lmk_idx": self.lmk_idx,
            "id_names": list(self.id_names),
            "exp_names": list(self.exp_names),
        }
        if self.tex_mean is not None:
            out["tex_mean"] = self.tex_mean
        if self.tex_basis is not None:
            out["tex_basis"] = self.tex_basis
        return out

    def save(self, path: str | Path) -> Path:
        return save_atomic(self.state_dict(), path)


def _linear(mean: Tensor, id_basis: Tensor, exp_basis: Tensor, id: Tensor, exp: Tensor) -> Tensor:
    """mean (N,3) + id_basis (N,3,K) @ id (B,K) + exp_basis (N,3,E) @ exp (B,E) -> (B,N,3)."""
    exp = exp[None] if exp.ndim == 1 else exp
    id = id[None] if id.ndim == 1 else id
    n = mean.shape[0]
    out = mean.reshape(1, -1) + exp @ exp_basis.reshape(n * 3, -1).T  # (B, N*3)
    out = out + id @ id_basis.reshape(n * 3, -1).T
    return out.view(out.shape[0], n, 3)


# --------------------------------------------------------------------------------------------
# The generic model. Everything below is built in "eye coordinates" (mm, the eye line at y = 0,
# the face surface at z ~ 100) and shifted by _EYE_TO_HEAD at the end so that the origin is the
# centre of the head (about 15 mm below the eye line and 100 mm behind the eyes).
# --------------------------------------------------------------------------------------------

_EYE_TO_HEAD = np.array([0.0, 15.0, 0.0])
_HINGE = np.array([0.0, -20.0, 15.0])  # jaw joint (temporomandibular), eye coordinates


def _jaw_points() -> np.ndarray:
    """(17, 2) iBUG 0..16: a squarish U from the right ear (image left) round the chin."""
    theta = np.linspace(0.0, np.pi, 17)
    c, s = np.cos(theta), np.sin(theta)
    p = 2.4  # superellipse exponent: flatter jaw sides than an ellipse
    x = -68.0 * np.sign(c) * np.abs(c) ** (2.0 / p)
    y = -5.0 - 107.0 * np.abs(s) ** (2.0 / p)
    return np.stack([x, y], -1)


def _mirror(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(-x, y) for x, y in points]


def landmarks_2d() -> np.ndarray:
    """(68, 2) frontal (x, y) of the iBUG landmarks in eye coordinates (mm)."""
    brow_r = [(-58.0, 12.0), (-49.0, 19.0), (-38.0, 22.0), (-26.0, 21.0), (-14.0, 17.0)]
    nose = [(0.0, 2.0), (0.0, -10.0), (0.0, -21.0), (0.0, -33.0)]
    nostrils = [(-14.0, -41.0), (-7.0, -43.0), (0.0, -44.0), (7.0, -43.0), (14.0, -41.0)]
    eye_r = [(-45.0, 0.0), (-37.0, 4.5), (-27.0, 4.5), (-18.0, 0.0), (-27.0, -4.0), (-37.0, -4.0)]
    eye_l = [(18.0, 0.0), (27.0, 4.5), (37.0, 4.5), (45.0, 0.0), (37.0, -4.0), (27.0, -4.0)]
    lips_out = [(-25.0, -64.0), (-16.0, -58.0), (-7.0, -55.0), (0.0, -56.0), (7.0, -55.0),
                (16.0, -58.0), (25.0, -64.0), (16.0, -71.0), (7.0, -74.0), (0.0, -75.0),
                (-7.0, -74.0), (-16.0, -71.0)]
    lips_in = [(-21.0, -64.0), (-8.0, -62.5), (0.0, -62.5), (8.0, -62.5), (21.0, -64.0),
               (8.0, -65.5), (0.0, -65.5), (-8.0, -65.5)]
    pts = [*map(tuple, _jaw_points()), *brow_r, *_mirror(brow_r[::-1]), *nose, *nostrils,
           *eye_r, *eye_l, *lips_out, *lips_in]
    out = np.array(pts, dtype=np.float64)
    assert out.shape == (68, 2)
    return out


def _outline(lmk: np.ndarray) -> np.ndarray:
    """(M, 2) closed outline of the mesh: the jaw pushed out 4 mm, then the forehead arc."""
    centre = np.array([0.0, -20.0])
    jaw = lmk[:17]
    d = jaw - centre
    jaw = jaw + 4.0 * d / np.linalg.norm(d, axis=1, keepdims=True)
    forehead = [(72.0, 30.0), (66.0, 60.0), (45.0, 80.0), (0.0, 88.0), (-45.0, 80.0),
                (-66.0, 60.0), (-72.0, 30.0)]
    return np.concatenate([jaw, np.array(forehead)])


def _inside(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """(P, 2) points, (M, 2) closed polygon -> (P,) bool (even-odd rule)."""
    x, y = points[:, :1], points[:, 1:]
    a, b = poly, np.roll(poly, -1, axis=0)
    crosses = (a[None, :, 1] > y) != (b[None, :, 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = a[None, :, 0] + (y - a[None, :, 1]) * (b[None, :, 0] - a[None, :, 0]) / (b[None, :, 1] - a[None, :, 1])
    return (crosses & (x < xi)).sum(1) % 2 == 1


def _resample(poly: np.ndarray, step: float, closed: bool = True) -> np.ndarray:
    """Points every `step` mm along a polyline (closed by default)."""
    pts = np.concatenate([poly, poly[:1]]) if closed else poly
    out = []
    for a, b in zip(pts[:-1], pts[1:]):
        n = max(int(np.ceil(np.linalg.norm(b - a) / step)), 1)
        out.append(a + (b - a) * np.arange(n)[:, None] / n)
    if not closed:
        out.append(pts[-1:])
    return np.concatenate(out)


def _gauss(xy: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-0.5 * (((xy[:, 0] - cx) / sx) ** 2 + ((xy[:, 1] - cy) / sy) ** 2))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _depth(xy: np.ndarray, outline: np.ndarray) -> np.ndarray:
    """(P, 2) eye coordinates -> (P,) z (mm) of the face surface: a curved shell plus features."""
    x, y = xy[:, 0], xy[:, 1]
    right = outline[outline[:, 0] >= 0]
    order = np.argsort(right[:, 1])
    half_width = np.interp(y, right[order, 1], right[order, 0])  # (P,)
    w = np.maximum(half_width + 6.0, 48.0)
    front = 100.0 - 0.0045 * np.maximum(y - 20.0, 0.0) ** 2 - 0.003 * np.maximum(-60.0 - y, 0.0) ** 2
    z = front - 65.0 * (1.0 - np.sqrt(np.clip(1.0 - (x / w) ** 2, 0.0, 1.0)))
    t = np.clip((2.0 - y) / 35.0, 0.0, 1.0)  # 0 at the nasion, 1 at the nose tip
    ridge = (6.0 + 19.0 * t) * np.exp(-0.5 * (x / (5.0 + 4.0 * t)) ** 2)
    z += ridge * _sigmoid((y + 37.0) / 1.2) * _sigmoid((8.0 - y) / 4.0)
    for s in (-1.0, 1.0):
        z += 7.0 * _gauss(xy, s * 13.0, -38.0, 5.0, 5.0)  # alae
        z -= 7.0 * _gauss(xy, s * 31.0, 0.0, 13.0, 8.0)  # eye sockets
        z += 4.0 * _gauss(xy, s * 32.0, 16.0, 18.0, 6.0)  # brow ridge
        z += 6.0 * _gauss(xy, s * 45.0, -25.0, 14.0, 14.0)  # cheekbones
    z += 7.0 * _gauss(xy, 0.0, -64.0, 18.0, 9.0)  # lips
    z += 5.0 * _gauss(xy, 0.0, -98.0, 15.0, 10.0)  # chin
    return z


def _identity_modes(p: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(N, 3) eye coordinates -> names, (N, 3, 8) displacements (mm per standard deviation)."""
    x, y = p[:, 0], p[:, 1]
    xy = p[:, :2]
    zero = np.zeros_like(x)
    ax = np.abs(x)
    sign = np.sign(x)
    lower = 5.0 * np.log1p(np.exp(np.clip(-(y + 30.0) / 5.0, -60, 60)))  # ~ distance below the nose
    eyes = _gauss(xy, -31.0, 1.0, 12.0, 9.0) + _gauss(xy, 31.0, 1.0, 12.0, 9.0)
    brows = _gauss(xy, -32.0, 18.0, 25.0, 8.0) + _gauss(xy, 32.0, 18.0, 25.0, 8.0)
    nose = _gauss(xy, 0.0, -30.0, 10.0, 10.0)
    mouth = _gauss(xy, 0.0, -64.0, 20.0, 10.0)
    modes = {
        "face_width": (0.05 * x * _smoothstep((ax - 25.0) / 45.0), zero, zero),
        "face_height": (zero, -0.06 * lower, zero),
        "face_depth": (zero, zero, 4.0 * (np.exp(-0.5 * (x / 28.0) ** 2) - 0.5)),  # relief, not a shift
        "eye_spacing": (2.5 * sign * eyes, zero, zero),
        "nose_length": (zero, -3.0 * nose, 2.0 * nose),
        "jaw_width": (0.07 * x * _smoothstep((ax - 15.0) / 40.0) * _smoothstep((-50.0 - y) / 30.0), zero, zero),
        "brow_height": (zero, 3.0 * brows, zero),
        "mouth_width": (0.1 * x * mouth, zero, zero),
    }
    return list(modes), np.stack([np.stack(v, -1) for v in modes.values()], -1)


def _expression_modes(p: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(N, 3) eye coordinates -> names, (N, 3, 10) displacements (mm at full activation)."""
    x, y = p[:, 0], p[:, 1]
    xy = p[:, :2]
    zero = np.zeros_like(x)
    ax = np.abs(x)
    # Jaw: everything below the lip line (rising from the mouth corners to the jaw joints) turns
    # about the hinge axis (x) by 0.25 rad, plus the forward glide of the condyles.
    boundary = -64.0 + np.maximum(ax - 22.0, 0.0) * (44.0 / 43.0)
    soft = 0.4 + 0.25 * np.maximum(ax - 22.0, 0.0)
    jaw = _sigmoid((boundary - y) / soft)
    r = p - _HINGE
    theta = 0.25
    jaw_open = (zero, -theta * r[:, 2] * jaw, (theta * r[:, 1] + 15.0) * jaw)
    mouth = _gauss(xy, 0.0, -64.0, 22.0, 12.0)
    mouth_narrow = _gauss(xy, 0.0, -64.0, 16.0, 9.0)
    smile = np.zeros((len(x), 3))
    frown = np.zeros((len(x), 3))
    for s in (-1.0, 1.0):
        corner = _gauss(xy, s * 24.0, -64.0, 9.0, 9.0)
        cheek = _gauss(xy, s * 38.0, -40.0, 12.0, 12.0)
        smile += corner[:, None] * np.array([s * 3.0, 5.0, -2.0]) + cheek[:, None] * np.array([0.0, 2.0, 1.5])
        inner = _gauss(xy, s * 16.0, 16.0, 8.0, 8.0)
        frown += inner[:, None] * np.array([-s * 3.0, -3.0, 0.0])
    brows = _gauss(xy, -32.0, 18.0, 22.0, 9.0) + _gauss(xy, 32.0, 18.0, 22.0, 9.0)
    forehead = _sigmoid((y - 25.0) / 8.0) * np.exp(-0.5 * (x / 50.0) ** 2)
    upper = _sigmoid((y - 0.8) / 0.6)

    def lid(s: float) -> np.ndarray:
        return -8.5 * _gauss(xy, s * 32.0, 4.5, 9.0, 2.8) * upper

    upper_lip = _gauss(xy, 0.0, -57.0, 14.0, 4.0) * _sigmoid((y + 63.5) / 0.5)
    modes = {
        "jaw_open": np.stack(jaw_open, -1),
        "lips_stretch": np.stack((0.35 * x * mouth, zero, zero), -1),
        "lips_pucker": np.stack((-0.25 * x * mouth_narrow, zero, 6.0 * mouth_narrow), -1),
        "smile": smile,
        "brow_raise": np.stack((zero, 6.0 * brows + 2.0 * forehead, zero), -1),
        "brow_frown": frown,
        "eye_close_right": np.stack((zero, lid(-1.0), zero), -1),
        "eye_close_left": np.stack((zero, lid(1.0), zero), -1),
        "upper_lip_raise": np.stack((zero, 3.0 * upper_lip, zero), -1),
        "mouth_shift": np.stack((4.0 * mouth, zero, zero), -1),
    }
    return list(modes), np.stack(list(modes.values()), -1)


def _polyline_distance(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """(P, 2) points, (M, 2) open polyline -> (P,) distance."""
    a, b = line[:-1], line[1:]
    ab = b - a
    t = np.clip(((points[:, None] - a[None]) * ab[None]).sum(-1) / (ab * ab).sum(-1)[None], 0.0, 1.0)
    nearest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None] - nearest, axis=-1).min(1)


def _colors(xy: np.ndarray, lmk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) eye coordinates -> (N, 3) albedo, (N, 3, 6) texture modes."""
    n = len(xy)
    skin = np.array([0.80, 0.60, 0.50])
    col = np.tile(skin, (n, 1))
    col *= (1.0 - 0.08 * _sigmoid((xy[:, 1] - 40.0) / 15.0))[:, None]  # forehead a bit darker
    for s in (-1.0, 1.0):
        col[:, 0] += 0.06 * _gauss(xy, s * 42.0, -35.0, 14.0, 12.0)  # cheek redness
    lip_line = np.concatenate([lmk[48:60], lmk[48:49]])
    lips = np.maximum(_inside(xy, lmk[48:60]).astype(float),
                      np.exp(-0.5 * (_polyline_distance(xy, lip_line) / 1.2) ** 2))
    col = col * (1 - lips[:, None]) + lips[:, None] * np.array([0.68, 0.32, 0.32])
    mouth = _inside(xy, lmk[60:68]).astype(float)
    col = col * (1 - mouth[:, None]) + mouth[:, None] * np.array([0.30, 0.08, 0.08])
    brows = np.zeros(n)
    for a, b in ((17, 22), (22, 27)):
        brows = np.maximum(brows, np.exp(-0.5 * (_polyline_distance(xy, lmk[a:b]) / 2.5) ** 4))
    col = col * (1 - brows[:, None]) + brows[:, None] * np.array([0.28, 0.19, 0.14])
    eyes = np.zeros(n)
    iris = np.zeros(n)
    for a in (36, 42):
        contour = np.concatenate([lmk[a:a + 6], lmk[a:a + 1]])
        eyes = np.maximum(eyes, np.maximum(_inside(xy, lmk[a:a + 6]).astype(float),
                                           np.exp(-0.5 * (_polyline_distance(xy, contour) / 1.0) ** 2)))
        c = lmk[a:a + 6].mean(0)
        iris = np.maximum(iris, _gauss(xy, c[0], c[1], 3.5, 3.5))
    col = col * (1 - eyes[:, None]) + eyes[:, None] * np.array([0.55, 0.50, 0.48])
    col = col * (1 - iris[:, None]) + iris[:, None] * np.array([0.16, 0.11, 0.09])
    nostrils = _gauss(xy, -7.0, -43.0, 3.0, 2.0) + _gauss(xy, 7.0, -43.0, 3.0, 2.0)
    col *= (1.0 - 0.5 * np.clip(nostrils, 0, 1))[:, None]
    col = np.clip(col, 0.0, 1.0)
    tex = np.zeros((n, 3, 6))
    tex[:, 0, 0] = tex[:, 1, 1] = tex[:, 2, 2] = 0.08  # skin tone per channel
    tex[:, :, 3] = (0.12 * lips)[:, None] * np.array([1.0, 0.5, 0.5])  # lip colour
    tex[:, :, 4] = -(0.10 * brows)[:, None]  # brow darkness
    tex[:, :, 5] = (0.06 * np.tanh(xy[:, 1] / 60.0))[:, None]  # top-bottom brightness
    return col, tex


def _helper_points(lmk: np.ndarray) -> np.ndarray:
    """Extra vertices that sharpen eyes, brows and lips in the vertex colours."""
    pts = []
    for a in (36, 42):
        eye = lmk[a:a + 6]
        c = eye.mean(0)
        pts += [c, *(c + 1.45 * (eye - c))]  # iris, and a skin ring round the eye
    for a, b in ((17, 22), (22, 27)):
        pts += [*(lmk[a:b] + [0.0, 3.5]), *(lmk[a:b] - [0.0, 3.5])]
    out, inner = lmk[48:60], lmk[60:68]
    c = out.mean(0)
    pts += [*(c + 1.25 * (out - c))]  # skin ring round the lips
    pts += [*((out[[2, 3, 4, 8, 9, 10]] + inner[[1, 2, 3, 5, 6, 7]]) / 2.0)]  # lip bodies
    return np.array(pts)


def generic_model(dtype: torch.dtype = torch.float32) -> MorphableModel:
    """A documented generic face model built in code (no downloaded data).

    The surface is a height field z(x, y) over the frontal outline of a face (jaw contour and a
    forehead arc, 176 x 186 mm): a shell curving back 65 mm towards the sides, plus a nose
    ridge and tip (25 mm), alae, eye sockets, brow ridge, cheekbones, lips and chin as Gaussian
    bumps. Vertices are a 5 mm grid, the 68 landmarks (dlib / iBUG order) and a few helper
    points round the eyes, brows and lips, Delaunay-triangulated in the frontal plane.
    Identity modes (1 = one standard deviation): face width, lower-face height, face depth, eye
    spacing, nose length, jaw width, brow height, mouth width. Expression modes (1 = full):
    jaw open (rotation about the jaw joints), lips stretch, pucker, smile, brow raise, brow
    frown, right / left eye close, upper-lip raise, mouth shift. Texture: skin-like albedo,
    darker lips, brows, eyes and nostrils; 6 texture modes (R, G, B tone, lip colour, brow
    darkness, vertical brightness). Units mm, head frame of `models.face3d.camera`.
    """
    from scipy.spatial import Delaunay

    lmk2 = landmarks_2d()
    outline = _outline(lmk2)
    boundary = _resample(outline, 5.0)
    special = np.concatenate([lmk2, _helper_points(lmk2)])
    gx, gy = np.meshgrid(np.arange(-80.0, 80.1, 5.0), np.arange(-115.0, 90.1, 5.0))
    grid = np.stack([gx.ravel(), gy.ravel()], -1)
    grid = grid[_inside(grid, outline)]
    fixed = np.concatenate([special, boundary])
    dist = np.linalg.norm(grid[:, None] - fixed[None], axis=-1).min(1)
    grid = grid[dist > 2.6]
    # Boundary points too close to a landmark (the jaw) would make slivers.
    bdist = np.linalg.norm(boundary[:, None] - special[None], axis=-1).min(1)
    xy = np.concatenate([special, boundary[bdist > 2.6], grid])
    tri = Delaunay(xy).simplices
    centroid = xy[tri].mean(1)
    tri = tri[_inside(centroid, outline)]
    a, b, c = xy[tri[:, 0]], xy[tri[:, 1]], xy[tri[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    tri = np.where(area[:, None] < 0, tri[:, [0, 2, 1]], tri)  # counter-clockwise, normals +z
    tri = tri[np.abs(area) > 1e-6]
    p = np.concatenate([xy, _depth(xy, outline)[:, None]], -1)  # (N, 3) eye coordinates
    id_names, id_basis = _identity_modes(p)
    exp_names, exp_basis = _expression_modes(p)
    col, tex = _colors(xy, lmk2)

    def t(a: np.ndarray) -> Tensor:
        return torch.as_tensor(a, dtype=dtype)

    return MorphableModel(
        mean=t(p + _EYE_TO_HEAD),
        id_basis=t(id_basis),
        exp_basis=t(exp_basis),
        faces=torch.as_tensor(tri, dtype=torch.long),
        lmk_idx=torch.arange(68, dtype=torch.long),
        tex_mean=t(col),
        tex_basis=t(tex),
        name="generic",
        id_names=tuple(id_names),
        exp_names=tuple(exp_names),
    )


# --------------------------------------------------------------------------------------------
# Saved models and the Basel Face Model 2009.
# --------------------------------------------------------------------------------------------

_REQUIRED = ("mean", "id_basis", "exp_basis", "faces", "lmk_idx")


def load_model(path: str | Path) -> MorphableModel:
    """Read a model written by `MorphableModel.save` / `convert_bfm` (weights_only: no pickle code)."""
    path = Path(path)
    if not path.is_file():
        raise AssetMissing(
            f"face model file {path} not found; convert the Basel Face Model with "
            f"`convert_bfm({BFM_FILE}, {path.name})`, or register {BFM_FILE} with {_REGISTER}"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip or EOF errors: all mean the same to the user
        raise InputError(f"{path} is not a talkflow face model ({type(exc).__name__}: {exc}); "
                         f"convert {BFM_FILE} again") from exc
    if not isinstance(data, dict) or data.get("format") != "talkflow.face3d":
        raise InputError(f"{path} is not a talkflow face model (no 'format' marker); convert {BFM_FILE} again")
    missing = [k for k in _REQUIRED if not isinstance(data.get(k), Tensor)]
    if missing:
        raise InputError(f"{path} lacks {', '.join(missing)}; convert {BFM_FILE} again")
    model = MorphableModel(
        mean=data["mean"], id_basis=data["id_basis"], exp_basis=data["exp_basis"], faces=data["faces"].long(),
        lmk_idx=data["lmk_idx"].long(), tex_mean=data.get("tex_mean"), tex_basis=data.get("tex_basis"),
        name=str(data.get("name", path.stem)), id_names=tuple(data.get("id_names", ())),
        exp_names=tuple(data.get("exp_names", ())),
    )
    _check_model(model, str(path))
    return model


def _check_model(m: MorphableModel, source: str) -> None:
    n = m.mean.shape[0]
    problems = []
    if m.mean.shape != (n, 3):
        problems.append(f"mean has shape {tuple(m.mean.shape)}, expected (N, 3)")
    for name in ("id_basis", "exp_basis", "tex_basis"):
        t = getattr(m, name)
        if t is not None and (t.ndim != 3 or t.shape[:2] != (n, 3)):
            problems.append(f"{name} has shape {tuple(t.shape)}, expected ({n}, 3, K)")
    if m.tex_mean is not None and m.tex_mean.shape != (n, 3):
        problems.append(f"tex_mean has shape {tuple(m.tex_mean.shape)}, expected ({n}, 3)")
    if m.faces.ndim != 2 or m.faces.shape[1] != 3 or m.faces.numel() == 0:
        problems.append(f"faces has shape {tuple(m.faces.shape)}, expected (F, 3)")
    elif int(m.faces.min()) < 0 or int(m.faces.max()) >= n:
        problems.append(f"faces index vertices outside 0..{n - 1}")
    if m.lmk_idx.shape != (68,) or int(m.lmk_idx.min()) < 0 or int(m.lmk_idx.max()) >= n:
        problems.append("lmk_idx must be 68 vertex indices")
    if problems:
        raise InputError(f"{source}: " + "; ".join(problems))


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares s, R, t with dst ~ s R src + t (Umeyama), for (P, 3) point pairs."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / (a**2).sum(1).mean())
    return scale, rot, md - scale * rot @ ms


def _icp(src: np.ndarray, dst: np.ndarray, start: tuple[float, np.ndarray, np.ndarray],
         iters: int = 40) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity ICP of the points `src` onto the cloud `dst` (nearest neighbours, trimmed)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(dst)
    s, r, t = start
    for _ in range(iters):
        moved = s * src @ r.T + t
        dist, j = tree.query(moved)
        keep = dist <= 3.0 * np.median(dist) + 1e-9
        s, r, t = _similarity(src[keep], dst[j[keep]])
    return s, r, t


def _transfer_expressions(generic: MorphableModel, points: np.ndarray) -> np.ndarray:
    """Generic expression modes carried onto `points` (P, 3) given in generic coordinates.

    Each point takes the barycentric interpolation of the displacements of the generic triangle
    under it in the frontal (x, y) plane, faded by its depth distance to the generic surface
    (sigma 10 mm); points outside the generic face take their nearest generic vertex's
    displacement, faded with the distance (sigma 15 mm). -> (P, 3, K_exp) mm.
    """
    from scipy.spatial import Delaunay, cKDTree

    verts = generic.mean.double().numpy()
    disp = generic.exp_basis.double().numpy()  # (N, 3, E)
    tri = Delaunay(verts[:, :2])
    simplex = tri.find_simplex(points[:, :2])
    inside = simplex >= 0
    out = np.zeros((len(points), 3, disp.shape[-1]))
    if inside.any():
        s = simplex[inside]
        trans = tri.transform[s]  # (P, 3, 2): affine map to barycentric coordinates
        b2 = np.einsum("pij,pj->pi", trans[:, :2], points[inside, :2] - trans[:, 2])
        bary = np.concatenate([b2, 1.0 - b2.sum(1, keepdims=True)], 1)  # (P, 3)
        corners = tri.simplices[s]  # (P, 3)
        z = (bary * verts[corners, 2]).sum(1)
        fade = np.exp(-0.5 * ((points[inside, 2] - z) / 10.0) ** 2)
        out[inside] = np.einsum("pc,pcdk->pdk", bary, disp[corners]) * fade[:, None, None]
    if (~inside).any():
        dist, j = cKDTree(verts).query(points[~inside])
        out[~inside] = disp[j] * np.exp(-0.5 * (dist / 15.0) ** 2)[:, None, None]
    return out


def _read_mat(mat_path: Path) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    if not mat_path.is_file():
        raise AssetMissing(
            f"Basel Face Model file {mat_path} not found. Obtain {BFM_FILE} (BFM 2009, "
            f"faces.dmi.unibas.ch) and register it with {_REGISTER}"
        )
    keys = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tl")
    try:
        data = loadmat(str(mat_path), variable_names=keys)
    except Exception as exc:  # scipy raises ValueError / MatReadError / NotImplementedError (v7.3)
        raise InputError(f"{mat_path} is not a readable MATLAB file ({type(exc).__name__}: {exc}); expected "
                         f"the BFM 2009 {BFM_FILE}. Register a good copy with {_REGISTER}") from exc
    missing = [k for k in keys if k not in data]
    if missing:
        raise InputError(f"{mat_path} lacks {', '.join(missing)}: it is not the BFM 2009 {BFM_FILE}. "
                         f"Register the right file with {_REGISTER}")
    out = {k: np.asarray(data[k], dtype=np.float64) for k in keys}
    n3 = out["shapeMU"].size
    problems = []
    if n3 % 3 or n3 == 0:
        problems.append(f"shapeMU has {n3} values, not 3 per vertex")
    for pc, ev, mu in (("shapePC", "shapeEV", "shapeMU"), ("texPC", "texEV", "texMU")):
        if out[mu].size != n3:
            problems.append(f"{mu} has {out[mu].size} values, expected {n3}")
        if out[pc].ndim != 2 or out[pc].shape[0] != n3:
            problems.append(f"{pc} has shape {out[pc].shape}, expected ({n3}, K)")
        elif out[ev].size < out[pc].shape[1]:
            problems.append(f"{ev} has {out[ev].size} values for {out[pc].shape[1]} components")
    tl = out["tl"]
    if tl.ndim != 2 or tl.shape[1] != 3 or tl.size == 0:
        problems.append(f"tl has shape {tl.shape}, expected (F, 3)")
    elif tl.min() < 1 or tl.max() > n3 // 3:
        problems.append(f"tl indexes vertices outside 1..{n3 // 3} (1-based)")
    if problems:
        raise InputError(f"{mat_path} is malformed: {'; '.join(problems)}. Register a good copy with {_REGISTER}")
    return out


def convert_bfm(mat_path: str | Path, out_path: str | Path | None = None, lmk_idx=None, n_id: int = 100,
                n_tex: int = 100) -> MorphableModel:
    """Convert the Basel Face Model 2009 `01_MorphableModel.mat` into the project's format.

    - Shape and texture: `shapeMU` (3N, 1), `shapePC` (3N, 199), `shapeEV` (199, 1) and the
      `tex*` equivalents, vertices interleaved x, y, z; `tl` (F, 3) 1-based triangles. The
      components are scaled by `shapeEV` / `texEV` (standard deviations, as the reference
      trackers use them), micrometres become mm, colours 0..255 become 0..1; the first `n_id` /
      `n_tex` components are kept; triangles are made 0-based and outward-facing.
    - Head frame: the generic model is aligned onto the BFM mean by a similarity transform
      (ICP from a nose-tip start, or the 68 landmark pairs when `lmk_idx` is given); the BFM is
      then expressed in the generic head frame (origin at the head centre, same axes, its own
      metric size).
    - Landmarks: `lmk_idx` (68 BFM vertex indices, iBUG order) when given; otherwise each
      aligned generic landmark snaps to its nearest BFM vertex, an approximation of a few mm:
      pass a verified table where one is at hand.
    - Expressions: BFM 2009 has none. The generic model's expression modes (jaw open, lips,
      smile, brows, eyes) are transferred onto the BFM mean by barycentric interpolation in the
      aligned frontal plane (`_transfer_expressions`), so both models share one expression
      space. (ER-NeRF uses the separately distributed `Exp_Pca.bin` instead; it is another
      download with its own terms, so it is not required here.)
    Writes `out_path` (a torch file for `load_model`) when given, and returns the model.
    """
    mat_path = Path(mat_path)
    raw = _read_mat(mat_path)
    n = raw["shapeMU"].size // 3
    k_id = min(n_id, raw["shapePC"].shape[1])
    k_tex = min(n_tex, raw["texPC"].shape[1])
    mean = raw["shapeMU"].reshape(n, 3) / 1000.0
    id_basis = raw["shapePC"][:, :k_id].reshape(n, 3, k_id) * raw["shapeEV"].ravel()[:k_id] / 1000.0
    tex_mean = raw["texMU"].reshape(n, 3) / 255.0
    tex_basis = raw["texPC"][:, :k_tex].reshape(n, 3, k_tex) * raw["texEV"].ravel()[:k_tex] / 255.0
    faces = raw["tl"].astype(np.int64) - 1
    normals = np.cross(mean[faces[:, 1]] - mean[faces[:, 0]], mean[faces[:, 2]] - mean[faces[:, 0]])
    if (normals * (mean[faces].mean(1) - mean.mean(0))).sum() < 0:
        faces = faces[:, [0, 2, 1]]  # make the normals point out of the head

    generic = generic_model(torch.float64)
    gverts = generic.mean.numpy()
    glmk = gverts[generic.lmk_idx.numpy()]
    if lmk_idx is not None:
        lmk = np.asarray(lmk_idx, dtype=np.int64).ravel()
        if lmk.shape != (68,) or lmk.min() < 0 or lmk.max() >= n:
            raise InputError(f"lmk_idx must be 68 vertex indices in 0..{n - 1}")
        s, r, t = _similarity(glmk, mean[lmk])
    else:
        tip = mean[np.argmax(mean[:, 2])]  # the nose tip: the frontmost vertex (BFM faces +z)
        s, r, t = _icp(gverts, mean, (1.0, np.eye(3), tip - glmk[30]))
        from scipy.spatial import cKDTree

        lmk = cKDTree(mean).query(s * glmk @ r.T + t)[1]
    head = (mean - t) @ r  # R^T (x - t): the generic head frame, BFM size
    id_head = np.einsum("ab,nbk->nak", r.T, id_basis)
    exp_head = s * _transfer_expressions(generic, head / s)
    model = MorphableModel(
        mean=torch.as_tensor(head, dtype=torch.float32),
        id_basis=torch.as_tensor(id_head, dtype=torch.float32),
        exp_basis=torch.as_tensor(exp_head, dtype=torch.float32),
        faces=torch.as_tensor(faces, dtype=torch.long),
        lmk_idx=torch.as_tensor(lmk, dtype=torch.long),
        tex_mean=torch.as_tensor(tex_mean, dtype=torch.float32),
        tex_basis=torch.as_tensor(tex_basis, dtype=torch.float32),
        name="bfm2009",
        id_names=(),
        exp_names=generic.exp_names,
    )
    _check_model(model, str(mat_path))
    if out_path is not None:
        model.save(out_path)
    return model


def default_model(mat: str | Path | None = None, cache_dir: str | Path | None = None) -> MorphableModel:
    """BFM 2009 from `mat` (01_MorphableModel.mat; converted once into `cache_dir` when given),
    else `generic_model()`."""
    if mat is None:
        return generic_model()
    if cache_dir is None:
        return convert_bfm(mat)
    mat = Path(mat)
    out = Path(cache_dir) / f"bfm2009-v{FORMAT_VERSION}.pt"
    if out.is_file() and out.stat().st_mtime >= mat.stat().st_mtime:
        return load_model(out)
    return convert_bfm(mat, out)
