"""The 3D-aware portrait generator: an EG3D-style tri-plane GAN generator, scaled by a config.

    z (B, z_dim), c (B, 25) --mapping--> ws (B, num_ws, w_dim)
    ws --StyleGAN2 synthesis--> planes (B, 3, C, R, R)          (3 * C image channels, reshaped)
    planes + camera rays --volume rendering--> features (B, F, r, r), RGB = first 3 channels
    features, RGB, ws[:, -1] --2D super-resolution--> image (B, 3, S, S) in about [-1, 1]

Configs (`GeneratorConfig`): the field defaults are EG3D's FFHQ 512 model
(`ffhqrebalanced512-128.pkl`: 512-d z/w, 2 mapping layers, 256 px tri-planes of 32 channels,
decoder 32 -> 64 -> 1 + 32, 128 px neural rendering with 48 + 48 samples on [2.25, 3.3], super
resolution 128 -> 512 with 256 and 128 channels; `GeneratorConfig.eg3d_ffhq512()`), and
`GeneratorConfig.small()` is the CPU-sized fallback (64 px images from a 32 px rendering, 32 px
tri-planes, ~0.3 M parameters).

Weights:
- `load_generator(path)`: this project's checkpoint (`save_generator`), read with
  `torch.load(weights_only=True)`: no code runs while loading.
- EG3D's published `.pkl` files are pickles of persistent classes whose source travels inside the
  pickle: loading one executes code, so it is refused. Convert it once, in an environment you
  trust, with `python -m models.nerffacespeech.convert_eg3d <file.pkl> <out.pt> --eg3d-repo <eg3d>`
  and register the .pt (`talkflow assets add generator <out.pt>`).
- `small_generator(seed)`: the documented fallback when no generator is registered: the small
  config randomly initialised, deterministic per seed (w_avg estimated from 4096 seeded z). It
  is not a face model: PTI's tuning stage (pti.py) fits it to the portrait, so it reproduces the
  portrait from the input view but has no learned 3D face prior; `run_pti(face_depth=...)` adds
  the fitted 3DMM's depth as a geometry prior so that its density sits on the face that the
  expression deformation moves. Novel views far from the portrait's are not meaningful with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydantic
import torch
from torch import Tensor, nn

from models.checkpoint_io import save_atomic
from models.nerffacespeech.camera import Camera, camera_rays, look_at
from models.nerffacespeech.config import GeneratorConfig
from models.nerffacespeech.stylegan import MappingNetwork, NoiseMode, SynthesisNetwork
from models.nerffacespeech.superres import SuperResolution
from models.nerffacespeech.triplane import TriplaneDecoder, query_field
from models.nerffacespeech.volume import PointWarp, render_rays
from talkflow.errors import AssetMissing, InputError

CHECKPOINT_FORMAT = "talkflow.nerffacespeech.generator"
CHECKPOINT_VERSION = 1
CONVERT_HINT = ("convert it once, in an environment you trust, with `python -m models.nerffacespeech.convert_eg3d "
                "<file.pkl> <out.pt> --eg3d-repo <path to the EG3D repository>` and register the .pt with "
                "`talkflow assets add generator <out.pt>`")


@dataclass
class GeneratorOutput:
    image: Tensor  # (B, 3, S, S) super-resolved, about [-1, 1]
    image_raw: Tensor  # (B, 3, r, r) volume-rendered RGB, in [-1.002, 1.002]
    features: Tensor  # (B, F, r, r) volume-rendered features (RGB first)
    depth: Tensor  # (B, 1, r, r) expected ray depth, world units
    alpha: Tensor  # (B, 1, r, r) accumulated opacity
    motion: Tensor | None = None  # (B, 1, r, r) opacity-weighted sample displacement (with a warp)


class TriplaneGenerator(nn.Module):
    """EG3D-style generator. Submodules: mapping, synthesis, decoder, superres (see module doc)."""

    def __init__(self, config: GeneratorConfig = GeneratorConfig()):
        super().__init__()
        cfg = self.cfg = config
        self.synthesis = SynthesisNetwork(cfg.w_dim, cfg.triplane_resolution, 3 * cfg.triplane_channels,
                                          cfg.channel_base, cfg.channel_max, cfg.conv_clamp, cfg.noise_strength_init)
        self.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, cfg.w_dim, self.synthesis.num_ws, cfg.mapping_layers,
                                      cfg.mapping_lr_mul)
        self.decoder = TriplaneDecoder(cfg.triplane_channels, cfg.decoder_hidden, cfg.decoder_features,
                                       cfg.decoder_lr_mul)
        self.superres = SuperResolution(cfg.decoder_features, cfg.sr_channels, cfg.w_dim, cfg.sr_input_resolution,
                                        cfg.sr_antialias, cfg.sr_conv_clamp, cfg.noise_strength_init)

    # ------------------------------------------------------------------ properties
    @property
    def num_ws(self) -> int:
        return self.synthesis.num_ws

    @property
    def device(self) -> torch.device:
        return self.mapping.w_avg.device

    def default_camera(self, batch: int = 1) -> Camera:
        """The frontal look-at camera of the config (EG3D's generation/conditioning camera)."""
        cfg = self.cfg
        return look_at(0.0, 0.0, cfg.camera_radius, cfg.camera_pivot, cfg.focal).expand(batch).to(self.device)

    # ------------------------------------------------------------------ stages
    def mapping_forward(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0,
                        truncation_cutoff: int | None = None) -> Tensor:
        """z (B, z_dim), c (B, 25) labels (default: the frontal camera) -> ws (B, num_ws, w_dim)."""
        if c is None and self.cfg.c_dim > 0:
            c = self.default_camera(z.shape[0]).labels()
        if c is not None:
            c = c.to(z.device) * self.cfg.c_scale
        return self.mapping(z, c, truncation_psi, truncation_cutoff)

    def planes(self, ws: Tensor, noise_mode: NoiseMode = "const") -> Tensor:
        """ws (B, num_ws, w_dim) -> tri-planes (B, 3, C, R, R)."""
        img = self.synthesis(ws, noise_mode)
        r = self.cfg.triplane_resolution
        return img.view(img.shape[0], 3, self.cfg.triplane_channels, r, r)

    def render(self, planes: Tensor, ws: Tensor, camera: Camera, *, resolution: int | None = None,
               depth_resolution: int | None = None, depth_resolution_importance: int | None = None,
               stratified: bool = False, warp: PointWarp | None = None, rng: torch.Generator | None = None,
               sr_noise_mode: NoiseMode | None = None) -> GeneratorOutput:
        """Volume-render `planes` (B, ...) from `camera` (B or 1 cameras), then super-resolve.

        `warp` moves sample points before the tri-plane lookup (see volume.PointWarp).
        """
        cfg = self.cfg
        b = planes.shape[0]
        res = resolution or cfg.neural_rendering_resolution
        camera = camera.to(planes.device).expand(b)
        origins, dirs = camera_rays(camera, res)  # (B, r*r, 3)

        def field(points: Tensor):
            return query_field(planes, self.decoder, points, cfg.box_warp)

        n_imp = cfg.depth_resolution_importance if depth_resolution_importance is None else depth_resolution_importance
        bundle = render_rays(field, origins, dirs, cfg.ray_start, cfg.ray_end,
                             depth_resolution or cfg.depth_resolution, n_imp, stratified, warp, rng)

        def image(x: Tensor) -> Tensor:  # (B, r*r, C) -> (B, C, r, r)
            return x.transpose(1, 2).reshape(b, x.shape[-1], res, res)

        feats = image(bundle.features)
        rgb = feats[:, :3]
        sr = self.superres(rgb, feats, ws, sr_noise_mode or cfg.sr_noise_mode)
        motion = None if bundle.moved is None else image(bundle.moved)
        return GeneratorOutput(sr, rgb, feats, image(bundle.depth), image(bundle.alpha), motion)

    def synthesize(self, ws: Tensor, camera: Camera | None = None, noise_mode: NoiseMode = "const",
                   **render_kw) -> GeneratorOutput:
        """ws (B, num_ws, w_dim) -> images from `camera` (default: frontal)."""
        camera = camera if camera is not None else self.default_camera()
        return self.render(self.planes(ws, noise_mode), ws, camera, **render_kw)

    def forward(self, z: Tensor, c: Tensor | None = None, camera: Camera | None = None,
                truncation_psi: float = 1.0, truncation_cutoff: int | None = None, **render_kw) -> GeneratorOutput:
        ws = self.mapping_forward(z, c, truncation_psi, truncation_cutoff)
        return self.synthesize(ws, camera, **render_kw)

    @torch.no_grad()
    def w_stats(self, n: int = 10000, c: Tensor | None = None, seed: int = 123) -> tuple[Tensor, float]:
        """Mean (1, 1, w_dim) and scalar spread of w over `n` seeded z (StyleGAN2's projector)."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.cfg.z_dim, generator=g).to(self.device)
        cc = None if c is None else c.to(self.device).expand(n, -1)
        w = torch.cat([self.mapping_forward(z[i:i + 1024], None if cc is None else cc[i:i + 1024])[:, :1]
                       for i in range(0, n, 1024)])  # (n, 1, w_dim)
        avg = w.mean(0, keepdim=True)
        std = float(((w - avg).square().sum() / n).sqrt())
        return avg, std


# ----------------------------------------------------------------------------------- builders
def small_generator(seed: int = 0, config: GeneratorConfig | None = None, w_avg_samples: int = 4096
                    ) -> TriplaneGenerator:
    """The fallback generator: `GeneratorConfig.small()` (or `config`) randomly initialised.

    Deterministic per seed (parameters, noise buffers and the w_avg estimate all come from it).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = TriplaneGenerator(config or GeneratorConfig.small())
    avg, _ = g.w_stats(w_avg_samples, seed=seed)
    g.mapping.w_avg.copy_(avg.view(-1))
    return g.eval().requires_grad_(False)


def checkpoint_dict(generator: TriplaneGenerator) -> dict:
    """The checkpoint content: plain containers and tensors only (loadable with weights_only)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": generator.cfg.model_dump(mode="json"),
        "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
    }


def save_generator(generator: TriplaneGenerator, path: str | Path) -> Path:
    """Write a checkpoint for `load_generator` (atomically: a temporary file, then a rename)."""
    return save_atomic(checkpoint_dict(generator), path)


def generator_from_checkpoint(data: dict, source: str = "checkpoint") -> TriplaneGenerator:
    """Build a generator from a checkpoint dict (see `checkpoint_dict`)."""
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{source} is not a talkflow generator checkpoint (no '{CHECKPOINT_FORMAT}' marker); "
                         f"if it is an EG3D checkpoint, {CONVERT_HINT}")
    if data.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"{source} has checkpoint version {data.get('version')}, this code reads "
                         f"{CHECKPOINT_VERSION}; convert or save it again")
    try:
        cfg = GeneratorConfig.model_validate(data.get("config", {}))
    except pydantic.ValidationError as exc:
        raise InputError(f"{source} has an invalid generator config: {exc}") from exc
    state = data.get("state_dict")
    if not isinstance(state, dict):
        raise InputError(f"{source} has no state_dict")
    g = TriplaneGenerator(cfg)
    load_state(g, state, source)
    return g.eval().requires_grad_(False)


def load_state(generator: TriplaneGenerator, state: dict[str, Tensor], source: str = "state dict") -> None:
    """Strict load with a readable error: missing / unexpected keys and shape mismatches."""
    own = generator.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
        if extra:
            parts.append(f"unexpected {len(extra)} ({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''})")
        if shapes:
            parts.append(f"shape mismatches ({'; '.join(shapes[:5])})")
        raise InputError(f"{source} does not fit the generator config: {'; '.join(parts)}")
    generator.load_state_dict(state, strict=True)


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> TriplaneGenerator:
    """A generator saved by `save_generator` / `convert_eg3d`, loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise AssetMissing(f"generator checkpoint {path} not found; save one with `save_generator`, or convert "
                           f"EG3D's ffhqrebalanced512-128.pkl: {CONVERT_HINT}")
    if path.suffix.lower() == ".pkl":
        raise InputError(f"{path} is a pickle (EG3D's format): loading it would run code stored in the file, so "
                         f"it is refused; {CONVERT_HINT}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, zip or EOF errors: all mean the file is unusable
        raise InputError(f"{path} cannot be read as a weights-only torch checkpoint ({type(exc).__name__}: "
                         f"{str(exc)[:200]}); if it is an EG3D pickle, {CONVERT_HINT}") from exc
    return generator_from_checkpoint(data, str(path)).to(device)


def default_generator(path: str | Path | None = None, seed: int = 0,
                      device: str | torch.device = "cpu") -> TriplaneGenerator:
    """The generator checkpoint at `path` (a converted .pt), else `small_generator(seed)`.

    An EG3D `.pkl` is used through its converted sibling `<name>.talkflow.pt` when that exists;
    otherwise AssetMissing says how to convert it.
    """
    if path is None:
        return small_generator(seed).to(device)
    path = Path(path)
    if path.suffix.lower() == ".pkl":
        converted = path.with_name(path.stem + ".talkflow.pt")
        if not converted.is_file():
            raise AssetMissing(f"the registered generator {path} is an EG3D pickle, which is not loaded directly; "
                               f"convert it to {converted} with `python -m models.nerffacespeech.convert_eg3d "
                               f"{path} {converted} --eg3d-repo <path to the EG3D repository>` (once, in an "
                               f"environment you trust)")
        path = converted
    return load_generator(path, device)


def to_uint8(images: Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8 (clamped, rounded)."""
    x = ((images.detach().float() + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(image: np.ndarray, size: int | None = None) -> Tensor:
    """(H, W, 3) uint8 -> (1, 3, size, size) float in [-1, 1] (Lanczos resize when `size` differs)."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"expected an HxWx3 uint8 RGB image, got shape {arr.shape} dtype {arr.dtype}")
    if size is not None and arr.shape[:2] != (size, size):
        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.LANCZOS))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0
