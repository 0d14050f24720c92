"""The warp renderer's configs, torch-free: the portrait flow takes them as parameters and the
cache keys hash their JSON (models.portrait_warp.rig and .render still export them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from talkflow.forms import PLAIN_OPTIONALS


class WarpRigConfig(BaseModel):
    """How the portrait is bound to its 3DMM fit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_size: int = Field(512, ge=64, le=4096, description="Output side in px: a smaller portrait is upscaled "
                          "(Lanczos) to it, a larger one keeps its own size.")
    falloff: float = Field(0.15, gt=0, le=1, description="Width of the ring outside the fitted face over which "
                           "the warp fades to zero, as a fraction of the face width (jaw landmarks 0 -> 16).")
    align_landmarks: bool = Field(True, description="Bend the projected mesh onto dlib's 68 landmarks (thin-plate "
                                  "spline) so that the mesh's lip line is the photo's.")


class WarpRenderConfig(BaseModel):
    """How the warp frames are drawn."""

    model_config = ConfigDict(extra="forbid", frozen=True, **PLAIN_OPTIONALS)

    batch_frames: int = Field(8, ge=1, description="Frames warped together.")
    feather_px: float = Field(1.0, gt=0, description="Width of the soft edge of the painted mouth opening, px.")
    corner_shade: float = Field(0.45, ge=0, le=1, description="How much darker the mouth interior gets at its "
                                "corners and under the upper lip (0: flat).")
    min_opening_px: float = Field(3.0, ge=0, description="Lip gap (px) over which the interior fades in: a barely "
                                  "parted mouth shows a soft shadow, not a drawn line.")
    cpu_threads: int | None = Field(None, ge=1, description="CPU threads while rendering (None: torch's setting).")
