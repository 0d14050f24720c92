"""What a one-shot renderer implements: a per-character preparation (a cached stage, reused by
every later video of the same character and image) and the frames of an expression sequence."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from talkflow.store import StageResult

if TYPE_CHECKING:
    from flows.portrait import PortraitConfig


@dataclass(frozen=True)
class RenderContext:
    """What the portrait flow gives every renderer."""

    character: str  # the cache namespace
    config: PortraitConfig
    bfm: Path | None  # the registered BFM, else the generic 3DMM is used
    asset: Path | None  # the renderer's registered asset (e.g. the generator checkpoint), if any


class OneShotRenderer(ABC):
    prepare_label = "preparation"  # the stage table's label of `prepare`'s result

    @abstractmethod
    def prepare(self, fit: StageResult, ctx: RenderContext) -> StageResult:
        """The character's cached preparation (PTI, a rig, ...) from its 3DMM fit."""

    @abstractmethod
    def render(self, prepared: StageResult, fit: StageResult, expressions: StageResult,
               ctx: RenderContext) -> StageResult:
        """Frames (artifact "frames", meta n_frames and ext) of the expression sequence."""

    def summary(self, prepared: StageResult) -> str:
        """One line on the preparation, for the CLI."""
        return prepared.stage
