"""The head field (tri-plane hash encoding + region-aware attention) and the torso field.

Head (ER-NeRF section 3): x -> tri-plane features f(x); the audio code a and the eye code e enter
the density MLP through region attention computed from f(x):
    a' = a * V_a(f(x))              (channel-wise audio attention, C channels)
    e' = e * sigmoid(V_e(f(x)))     (eye attention, one channel)
    [sigma, g] = MLP_sigma(f(x), a', e');  rgb = MLP_rgb(SH(d), g, appearance code)
``ambient_aud = |V_a(f(x))|`` and ``ambient_eye = sigmoid(V_e(f(x)))`` are returned for the
regularisers (regions outside the face should ignore audio). The uncertainty head reads f(x)
(detached) and feeds the uncertainty-weighted loss.

Torso: 2D image-plane coords c in [-1, 1]; a pose code (three learnable anchor points projected by
the head pose) drives a deformation MLP (c, pose) -> dc; a 2D grid at c + dc and an MLP give
alpha and rgb.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from models.ernerf.amp import autocast_off
from models.ernerf.encodings import (
    FrequencyEncoding,
    HashGrid2D,
    HashGridConfig,
    TriPlaneHashEncoding,
    spherical_harmonics,
)

_RGB_EPS = 1e-3  # sigmoid outputs are stretched to [-eps, 1 + eps] as in the reference


class MLP(nn.Module):
    """Bias-free ReLU MLP (the reference's): num_layers Linear layers, ReLU between them."""

    def __init__(self, dim_in: int, dim_out: int, dim_hidden: int, num_layers: int):
        super().__init__()
        dims = [dim_in] + [dim_hidden] * (num_layers - 1) + [dim_out]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class _TruncExp(torch.autograd.Function):
    """exp(x) whose gradient is computed from exp(clamp(x, max=15)) (stable under fp16)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15))


def trunc_exp(x: Tensor) -> Tensor:
    return _TruncExp.apply(x)


def stretched_sigmoid(x: Tensor) -> Tensor:
    return torch.sigmoid(x) * (1 + 2 * _RGB_EPS) - _RGB_EPS


class HeadFieldConfig(BaseModel):
    """Defaults: ER-NeRF's nerf_triplane/network.py."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bound: float = Field(1.0, description="The head field lives in [-bound, bound]^3 (world units).")
    grid: HashGridConfig = Field(HashGridConfig(
        num_levels=12, features_per_level=1, base_resolution=64, desired_resolution=512, log2_hashmap_size=14
    ), description="Hash grid of each of the three planes; the finest resolution is desired_resolution * bound.")
    geo_feat_dim: int = Field(64, description="Geometry features passed from the density MLP to the colour MLP.")
    sigma_hidden: int = Field(64, description="Width of the density MLP.")
    sigma_layers: int = Field(3, description="Layers of the density MLP.")
    color_hidden: int = Field(64, description="Width of the colour MLP.")
    color_layers: int = Field(2, description="Layers of the colour MLP.")
    sh_degree: int = Field(4, description="Spherical-harmonics degree of the view-direction encoding.")
    appearance_dim: int = Field(4, ge=0, description="Per-frame latent appearance code (reference ind_dim).")
    audio_att_hidden: int = Field(64,
        description="Width of the MLP that attends the audio code per point (region attention).")
    eye_att_hidden: int = Field(16, description="Width of the MLP that attends the eye code per point.")
    uncertainty_hidden: int = Field(32,
        description="Width of the MLP predicting the per-point uncertainty of the loss.")


class HeadField(nn.Module):
    """audio_dim, eye_dim: sizes of the audio and eye codes (from the AudioConfig)."""

    def __init__(self, cfg: HeadFieldConfig, audio_dim: int = 32, eye_dim: int = 1):
        super().__init__()
        self.cfg = cfg
        grid = cfg.grid.model_copy(update={"desired_resolution": int(round(cfg.grid.desired_resolution * cfg.bound))})
        self.encoding = TriPlaneHashEncoding(grid, bound=cfg.bound)
        d_x = self.encoding.output_dim
        self.audio_att = MLP(d_x, audio_dim, cfg.audio_att_hidden, 2)
        self.eye_att = MLP(d_x, 1, cfg.eye_att_hidden, 2)
        self.sigma_net = MLP(d_x + audio_dim + eye_dim, 1 + cfg.geo_feat_dim, cfg.sigma_hidden, cfg.sigma_layers)
        self.color_net = MLP(cfg.sh_degree**2 + cfg.geo_feat_dim + cfg.appearance_dim, 3, cfg.color_hidden,
                             cfg.color_layers)
        self.uncertainty_net = MLP(d_x, 1, cfg.uncertainty_hidden, 2)

    def geometry(self, x: Tensor, audio: Tensor, eye: Tensor, enc_x: Tensor | None = None) -> dict[str, Tensor]:
        """x: (N, 3); audio: (N, C) or (1, C); eye: (N, E) or (1, E) ->
        sigma (N,), geo (N, G), ambient_aud (N,), ambient_eye (N,), enc_x (N, Dx)."""
        if enc_x is None:
            enc_x = self.encoding(x)
        n = enc_x.shape[0]
        aud_att = self.audio_att(enc_x)  # (N, C)
        eye_att = torch.sigmoid(self.eye_att(enc_x))  # (N, 1)
        h = torch.cat([enc_x, audio.expand(n, -1) * aud_att, eye.expand(n, -1) * eye_att], dim=-1)
        h = self.sigma_net(h)
        return {
            "sigma": trunc_exp(h[..., 0].float()),
            "geo": h[..., 1:],
            "ambient_aud": aud_att.float().norm(dim=-1),
            "ambient_eye": eye_att[..., 0].float(),
            "enc_x": enc_x,
        }

    def density(self, x: Tensor, audio: Tensor, eye: Tensor) -> Tensor:
        """(N, 3) -> sigma (N,); used by the occupancy grid."""
        return self.geometry(x, audio, eye)["sigma"]

    def forward(self, x: Tensor, d: Tensor, audio: Tensor, eye: Tensor, appearance: Tensor | None,
                with_uncertainty: bool = True) -> dict[str, Tensor]:
        """x, d: (N, 3); audio (N|1, C); eye (N|1, E); appearance (N|1, A) ->
        sigma (N,), rgb (N, 3), ambient_aud (N,), ambient_eye (N,), uncertainty (N,)."""
        out = self.geometry(x, audio, eye)
        n = x.shape[0]
        parts = [spherical_harmonics(d, self.cfg.sh_degree).to(out["geo"].dtype), out["geo"]]
        if self.cfg.appearance_dim > 0:
            parts.append(appearance.expand(n, -1).to(out["geo"].dtype))
        out["rgb"] = stretched_sigmoid(self.color_net(torch.cat(parts, dim=-1)).float())
        if with_uncertainty:
            raw = self.uncertainty_net(out["enc_x"].detach())[..., 0].float()
            out["uncertainty"] = nn.functional.softplus(raw)
        else:
            out["uncertainty"] = torch.zeros_like(out["sigma"])
        del out["enc_x"], out["geo"]
        return out


def rigid_inverse(c2w: Tensor) -> Tensor:
    """(B, 4, 4) rotation + translation -> its inverse [R^T, -R^T t]: elementwise maths, where
    torch.linalg.inv waits for the device to check for singular matrices (a host sync per step).
    The tracked camera poses are rigid (``ERNeRF.world_pose`` scales only the translation)."""
    rot_t = c2w[:, :3, :3].transpose(1, 2)
    top = torch.cat([rot_t, -rot_t @ c2w[:, :3, 3:]], dim=2)  # (B, 3, 4)
    return torch.cat([top, c2w[:, 3:, :]], dim=1)


class TorsoFieldConfig(BaseModel):
    """Defaults: ER-NeRF's torso nets (network.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grid: HashGridConfig = Field(HashGridConfig(
        num_levels=16, features_per_level=2, base_resolution=16, desired_resolution=2048, log2_hashmap_size=16,
        grid_type="tiled",
    ), description="The image-plane grid of the torso.")
    coord_frequencies: int = Field(8, description="Frequency-encoding bands of the image-plane coordinates.")
    pose_frequencies: int = Field(3, description="Frequency-encoding bands of the projected anchors (the pose code).")
    hidden_dim: int = Field(32, description="Width of the torso MLPs.")
    num_layers: int = Field(3, description="Layers of the torso MLPs.")
    appearance_dim: int = Field(8, ge=0,
        description="Per-frame latent appearance code of the torso (reference ind_dim_torso).")
    shrink: float = Field(0.8, description="Coordinates are scaled by this before the deformation (room to deform).")
    # three anchor points (homogeneous, learnable) whose projection by the head pose is the pose code;
    # the reference's values, in its axes (ours: OpenGL world axes; the anchors are learned anyway)
    anchors: tuple[tuple[float, float, float, float], ...] = Field((
        (0.01, 0.01, 0.1, 1.0), (-0.1, -0.1, 0.1, 1.0), (0.1, -0.1, 0.1, 1.0),
    ), description="Initial homogeneous anchor points; their projection by the head pose is the pose code.")


class TorsoField(nn.Module):
    def __init__(self, cfg: TorsoFieldConfig):
        super().__init__()
        self.cfg = cfg
        self.anchors = nn.Parameter(torch.tensor(cfg.anchors, dtype=torch.float32))  # (3, 4)
        self.coord_enc = FrequencyEncoding(2, cfg.coord_frequencies)
        self.pose_enc = FrequencyEncoding(2 * len(cfg.anchors), cfg.pose_frequencies)
        self.grid = HashGrid2D(cfg.grid)
        d_cond = self.coord_enc.output_dim + self.pose_enc.output_dim + cfg.appearance_dim
        self.deform_net = MLP(d_cond, 2, cfg.hidden_dim, cfg.num_layers)
        self.color_net = MLP(self.grid.output_dim + d_cond, 4, cfg.hidden_dim, cfg.num_layers)

    def pose_code(self, c2w: Tensor) -> Tensor:
        """c2w: (B, 4, 4) rigid -> (B, 6): the anchors in camera space, perspective-divided (x/w/z, y/w/z)."""
        with autocast_off(c2w.device):
            cam = rigid_inverse(c2w.float()) @ self.anchors.float().T  # (B, 4, 3)
            cam = cam.transpose(1, 2)  # (B, 3, 4)
            xy = cam[..., :2] / cam[..., 3:4] / cam[..., 2:3]
        return xy.flatten(1)

    def forward(self, coords: Tensor, pose_code: Tensor, appearance: Tensor | None) -> dict[str, Tensor]:
        """coords: (N, 2) in [-1, 1]; pose_code: (N|1, 6); appearance (N|1, A) ->
        alpha (N,), rgb (N, 3), offset (N, 2)."""
        n = coords.shape[0]
        x = coords * self.cfg.shrink
        cond = [self.coord_enc(x), self.pose_enc(pose_code).expand(n, -1)]
        if self.cfg.appearance_dim > 0:
            cond.append(appearance.expand(n, -1).to(x.dtype))
        cond = torch.cat(cond, dim=-1)
        offset = self.deform_net(cond).float()  # (N, 2)
        warped = (x + offset).clamp(-1, 1)
        h = self.color_net(torch.cat([self.grid((warped + 1) / 2).to(cond.dtype), cond], dim=-1)).float()
        return {"alpha": stretched_sigmoid(h[..., 0]), "rgb": stretched_sigmoid(h[..., 1:]), "offset": offset}
