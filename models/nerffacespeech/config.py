"""The configs of NeRFFaceSpeech's stages, torch-free: the portrait flow takes them as parameters
and the cache keys hash their JSON, so they import without the models (each model module still
exports its config under its old name).

Also the EG3D camera constants the configs default to (`models.nerffacespeech.camera` documents
the conventions).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.audio.visemes import VisemeConfig
from talkflow.contract import MIN_PORTRAIT_PX
from talkflow.forms import PLAIN_OPTIONALS

EG3D_RADIUS = 2.7  # camera distance from the pivot, world units
EG3D_PIVOT = (0.0, 0.0, 0.2)  # the point the FFHQ cameras look at
# The FFHQ labels store 4.2647; camera.fov_to_focal(18.837) gives 4.2627 (EG3D's own helper, with sqrt(2)
# rounded to 1.414, 4.2634): the 18.837 degrees are themselves rounded.
EG3D_FOCAL = 4.2647


class FaceFitConfig(BaseModel):
    """Single-image 3DMM fit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_size: int = Field(MIN_PORTRAIT_PX, ge=16, description="Smallest portrait side accepted, px.")
    focal: float | Literal["generator", "search"] = Field(
        "generator",
        description="Camera focal length: a number in px, generator (the generator camera's) or search (fitted).")
    generator_focal: float = Field(EG3D_FOCAL, description="Normalised focal length of the generator's camera.")
    photometric: bool = Field(
        True, description="Refine lighting (SH), albedo, pose and expression on the pixels after the landmark fit.")
    photo_iters: int = Field(30, ge=0, description="Iterations of the photometric refinement.")
    photo_tex_iters: int = Field(40, ge=0, description="Iterations of the albedo (texture) fit.")
    photo_render_size: int = Field(96, ge=16, description="Side of the images the photometric fit renders, px.")
    detect_upsample: int = Field(
        0, ge=0, description="dlib HOG upsampling for face detection (0 avoids false faces on big photos).")


class PhoneticDriverConfig(BaseModel):
    """How the built-in driver turns the speech's mouth shapes (models.audio.visemes) into the
    face3d mouth modes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jaw_gain: float = Field(0.7, ge=0, description="jaw_open at a fully open viseme (/aa/); 1 is the basis' full "
                            "0.25 rad, a wide-open mouth.")
    stretch_gain: float = Field(0.5, ge=0, description="lips_stretch at a fully spread viseme (/iy/).")
    pucker_gain: float = Field(0.8, ge=0, description="lips_pucker at a fully rounded viseme (/uw/).")
    visemes: VisemeConfig = Field(default_factory=VisemeConfig, description="Phones -> mouth shapes: "
                                  "coarticulation and loudness as intensity.")


class GeneratorConfig(BaseModel):
    """Shape and rendering of the generator. Defaults: EG3D FFHQ 512 (`ffhqrebalanced512-128.pkl`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, **PLAIN_OPTIONALS)

    # mapping
    z_dim: int = Field(512, ge=1, description="Size of the latent z.")
    c_dim: int = Field(
        25, ge=0, description="Size of the camera label (16 extrinsics + 9 intrinsics); 0: unconditional.")
    w_dim: int = Field(512, ge=1, description="Size of the intermediate latent w.")
    mapping_layers: int = Field(2, ge=1, description="Layers of the mapping network (EG3D --map-depth).")
    mapping_lr_mul: float = Field(0.01, description="Learning-rate multiplier of the mapping network.")
    c_scale: float = Field(1.0, description="Camera labels are multiplied by this before the mapping.")
    # tri-plane synthesis (StyleGAN2 skip architecture, channels min(channel_base / res, channel_max))
    triplane_resolution: int = Field(256, ge=4, description="Side of each tri-plane, px (a power of two).")
    triplane_channels: int = Field(32, ge=1, description="Feature channels per tri-plane.")
    channel_base: int = Field(32768, description="Synthesis channels: min(channel_base / resolution, channel_max).")
    channel_max: int = Field(512, description="Most channels of a synthesis layer.")
    conv_clamp: float | None = Field(None, description="Clamp of the synthesis convolutions' outputs; empty: none.")
    noise_strength_init: float = Field(0.0, description="Initial strength of the per-layer noise inputs.")
    # decoder
    decoder_hidden: int = Field(64, ge=1, description="Hidden units of the tri-plane decoder MLP.")
    decoder_features: int = Field(32, ge=3, description="Channels of the rendered feature image (RGB first).")
    decoder_lr_mul: float = Field(1.0, description="Learning-rate multiplier of the decoder.")
    # volume rendering
    neural_rendering_resolution: int = Field(128, ge=4, description="Side of the volume-rendered feature image, px.")
    depth_resolution: int = Field(48, ge=2, description="Coarse samples per ray.")
    depth_resolution_importance: int = Field(48, ge=0, description="Fine (importance) samples per ray.")
    ray_start: float = Field(2.25, description="Near bound of the rays, world units.")
    ray_end: float = Field(3.3, description="Far bound of the rays, world units.")
    box_warp: float = Field(1.0, description="Side of the tri-plane box, world units.")
    # camera (EG3D FFHQ: 18.837 deg diagonal fov, radius 2.7, pivot (0, 0, 0.2))
    focal: float = Field(EG3D_FOCAL, description="Normalised focal length of the camera.")
    camera_radius: float = Field(EG3D_RADIUS, description="Distance of the camera from its pivot, world units.")
    camera_pivot: tuple[float, float, float] = Field(EG3D_PIVOT, description="Point the camera looks at, world units.")
    # super-resolution
    img_resolution: int = Field(512, ge=4, description="Side of the output image, px.")
    sr_input_resolution: int = Field(128, ge=4, description="Side of the super-resolution network's input, px.")
    sr_channels: tuple[int, ...] = Field(
        (256, 128), description="Channels of each super-resolution block (one doubling each).")
    sr_antialias: bool = Field(True, description="Antialiased resampling in the super-resolution network.")
    sr_conv_clamp: float | None = Field(
        256.0, description="Clamp of the super-resolution convolutions' outputs; empty: none.")
    sr_noise_mode: Literal["const", "random", "none"] = Field(
        "none", description="Noise inputs of the super-resolution network: const, random or none.")
    # sampling defaults for `generate`
    truncation_psi: float = Field(0.7, description="Truncation of sampled latents toward the mean (1: none).")
    truncation_cutoff: int | None = Field(14, description="Layers the truncation applies to; empty: all.")

    @model_validator(mode="after")
    def _check(self) -> GeneratorConfig:
        r = self.triplane_resolution
        if r & (r - 1):
            raise ValueError(f"triplane_resolution must be a power of two, got {r}")
        if self.sr_input_resolution * 2 ** len(self.sr_channels) != self.img_resolution:
            raise ValueError(f"img_resolution {self.img_resolution} must be sr_input_resolution "
                             f"{self.sr_input_resolution} x 2^{len(self.sr_channels)} (one doubling per SR block)")
        if not self.ray_start < self.ray_end:
            raise ValueError("ray_start must be below ray_end")
        return self

    @classmethod
    def eg3d_ffhq512(cls) -> GeneratorConfig:
        """EG3D's FFHQ 512 checkpoint (`ffhqrebalanced512-128.pkl`)."""
        return cls()

    @classmethod
    def small(cls, **overrides) -> GeneratorConfig:
        """CPU-sized fallback: 64 px images from a 32 px rendering (24 + 12 samples per ray),
        32 px tri-planes of 16 channels, 64-d z/w; about 0.3 M parameters."""
        base = dict(z_dim=64, w_dim=64, triplane_resolution=32, triplane_channels=16, channel_base=1024,
                    channel_max=64, noise_strength_init=0.1, decoder_hidden=32, decoder_features=16,
                    neural_rendering_resolution=32, depth_resolution=24, depth_resolution_importance=12,
                    img_resolution=64, sr_input_resolution=32, sr_channels=(32,), truncation_cutoff=None)
        return cls(**(base | overrides))

    @property
    def num_ws(self) -> int:
        n = int(np.log2(self.triplane_resolution)) - 1  # blocks 4 .. R
        return 1 + 2 * (n - 1) + 1


class PTIConfig(BaseModel):
    """PTI stage config. Defaults: the PTI reference at 512 px."""

    model_config = ConfigDict(extra="forbid", frozen=True, **PLAIN_OPTIONALS)

    # (a) inversion
    inversion_steps: int = Field(450, ge=0, description="Steps of the latent inversion (PTI first_inv_steps).")
    inversion_lr: float = Field(0.01, gt=0, description="Initial learning rate of the inversion (StyleGAN2 projector).")
    w_avg_samples: int = Field(
        10000, ge=1, description="Latents sampled to estimate the mean w the inversion starts from.")
    initial_noise_factor: float = Field(
        0.05, description="Scale of the noise added to w during the inversion, at the start.")
    lr_rampup: float = Field(0.05, description="Share of the inversion steps over which the learning rate ramps up.")
    lr_rampdown: float = Field(
        0.25, description="Share of the inversion steps over which the learning rate ramps down.")
    noise_ramp: float = Field(0.75, description="Share of the inversion steps over which the added w noise fades out.")
    noise_reg_weight: float = Field(1e5, description="Weight of the noise-map regulariser of the inversion.")
    inversion_l2_weight: float | None = Field(
        None, description="Pixel L2 weight of the inversion; empty: 0 with LPIPS, 1 with the structural substitute.")
    loss_resolution: int = Field(
        256, ge=8, description="Images are area-downsampled to this side before the losses, px.")
    # (b) pivotal tuning
    tuning_steps: int = Field(350, ge=0, description="Steps of pivotal tuning of the generator (PTI max_pti_steps).")
    tuning_lr: float = Field(3e-4, gt=0, description="Learning rate of pivotal tuning.")
    tuning_l2_weight: float = Field(1.0, description="Pixel L2 weight of pivotal tuning.")
    tuning_perceptual_weight: float = Field(
        1.0, description="Perceptual (LPIPS or substitute) weight of pivotal tuning.")
    lpips_threshold: float = Field(0.06, description="Tuning stops below this LPIPS (real LPIPS only).")
    locality_weight: float = Field(
        1.0, ge=0,
        description="Weight of the locality regulariser (keeps the generator unchanged away from the pivot); 0: off.")
    locality_every: int = Field(1, ge=1, description="Tuning steps between locality regulariser steps.")
    locality_samples: int = Field(1, ge=1, description="Latents sampled around the pivot per regulariser step.")
    locality_alpha: float = Field(
        30.0, gt=0, description="Distance of the regulariser's samples from the pivot, w units.")
    locality_psi: float = Field(0.5, description="Truncation of the regulariser's sampled latents.")
    locality_l2_weight: float = Field(0.1, description="Pixel L2 weight of the locality regulariser.")
    locality_perceptual_weight: float = Field(0.1, description="Perceptual weight of the locality regulariser.")
    # geometry prior (not in PTI): only when run_pti gets a `face_depth` target, for generators
    # without a learned face prior (the small fallback), whose tuned density would otherwise sit
    # anywhere along the rays and not on the face the 3DMM deformation moves.
    depth_weight: float = Field(
        1.0, ge=0, description="Weight of the face-depth prior (keeps density on the fitted face), per world unit.")
    # both
    stratified: bool = Field(True, description="Jitter ray sample depths while optimising.")
    seed: int = Field(0, description="Random seed of the inversion and tuning.")
    # CPU threads while optimising (None: torch's setting). The small generator's tensors are small:
    # one thread beats several, and by far when the cores are shared (as face3d's fits do).
    cpu_threads: int | None = Field(1, description="CPU threads while optimising; empty: torch's setting.")

    @classmethod
    def fallback(cls, **overrides) -> PTIConfig:
        """For the randomly initialised small generator (no pretrained weights): its w space holds
        no portrait, so 100 inversion steps; the weights must move far, so a 10x tuning rate over
        PTI's 350 steps; the locality step scaled to its w space (see `tiny`). About 100 s on one
        CPU core at 64 px (measured: MSE 1.54 at w_avg -> 0.048, against 0.074 with PTI's rates)."""
        base = dict(inversion_steps=100, w_avg_samples=4096, tuning_lr=3e-3, locality_alpha=8.0,
                    locality_l2_weight=1.0)
        return cls(**(base | overrides))

    @classmethod
    def tiny(cls, **overrides) -> PTIConfig:
        """A few seconds on a CPU with a tiny generator (tests): 30 + 50 steps, a 10x tuning rate (a
        random generator is far from any portrait), and the locality step scaled to the small
        generator's w space (|w_z - w_avg| is about 6 for its 8 x 64-d ws, against a few hundred for
        EG3D's 14 x 512) with a stronger L2 weight (the perceptual term is the substitute)."""
        base = dict(inversion_steps=30, w_avg_samples=512, tuning_steps=50, tuning_lr=3e-3, locality_alpha=8.0,
                    locality_l2_weight=1.0)
        return cls(**(base | overrides))


class DeformConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(4, ge=1, description="Nearest expressed 3DMM vertices per volume sample.")
    falloff_mm: float = Field(
        8.0, gt=0, description="Gaussian fade of a displacement with the distance to the nearest vertex, mm.")
    cutoff_mm: float = Field(30.0, gt=0, description="No displacement beyond this distance from the face, mm.")
    moving_mm: float = Field(0.05, ge=0, description="Vertices moving less than this in every frame are ignored, mm.")
    max_vertices: int = Field(4096, ge=1, description="Most moving vertices used.")
    chunk: int = Field(65536, ge=1024, description="Sample points per nearest-neighbour chunk (bounds memory).")
    mouth_darken: float = Field(0.85, ge=0, le=1, description="Colour scale of samples inside the open mouth.")
    mouth_density: float = Field(10.0, ge=0, description="Density added to samples in the mouth gap.")
    mouth_depth_mm: float = Field(25.0, ge=0, description="Depth of the mouth cavity behind the inner lips, mm.")


class RenderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, **PLAIN_OPTIONALS)

    batch_frames: int = Field(4, ge=1, description="Frames rendered together.")
    neural_rendering_resolution: int | None = Field(
        None, description="Side of the volume-rendered feature image, px; empty: the generator's.")
    depth_resolution: int | None = Field(None, description="Coarse samples per ray; empty: the generator's.")
    depth_resolution_importance: int | None = Field(
        None, description="Fine (importance) samples per ray; empty: the generator's.")
    paste_static: bool = Field(
        True, description="Paste the still portrait where the face does not move (sharper than the generator).")
    motion_threshold_mm: float = Field(
        0.25, ge=0, description="Displacement that counts as motion for the paste mask, mm.")
    grow_px: int = Field(2, ge=0, description="Low-resolution pixels the motion mask grows by.")
    feather_px: float = Field(
        1.0, ge=0, description="Gaussian blur of the motion mask, output pixels per neural pixel.")
    deform: DeformConfig = Field(
        DeformConfig(), description="How the 3DMM's expression displacements deform the generator's volume.")
    cpu_threads: int | None = Field(1, description="CPU threads while rendering; empty: torch's setting.")
