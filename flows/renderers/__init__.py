"""The one-shot portrait renderers, in one registry.

Every renderer draws the frames of a character from the shared 3DMM fit and the shared
expression sequence (audio -> expressions); what differs is its per-character preparation
(cached once per character and image) and its frame rendering. A renderer is one module with a
`flows.renderers.base.OneShotRenderer` subclass, plus one `Renderer` entry in RENDERERS (or a
`register` call): flows/portrait.py, the CLI, `talkflow doctor` and bench/oneshot.py read this
registry and name no renderer themselves.

This module imports neither torch nor Prefect, so that the CLI checks a renderer name, and a
missing asset, before any work.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from talkflow.errors import AssetMissing, InputError

if TYPE_CHECKING:
    from flows.renderers.base import OneShotRenderer

AUTO = "auto"


@dataclass(frozen=True)
class Renderer:
    name: str
    description: str  # one sentence: what it draws, what it needs
    target: str  # "module:Class" of its OneShotRenderer
    asset: str | None = None  # the talkflow asset it uses (talkflow.assets), if any
    needs_asset: bool = False  # refused (AssetMissing) without that asset
    auto_rank: int = 0  # "auto" takes the available renderer of the highest rank

    def available(self) -> bool:
        return not self.needs_asset or self.asset_path() is not None

    def asset_path(self) -> Path | None:
        from talkflow import assets

        return assets.locate(self.asset) if self.asset else None


RENDERERS: dict[str, Renderer] = {}


def register(entry: Renderer) -> Renderer:
    """Add (or replace) a renderer; returns the entry."""
    if entry.name == AUTO:
        raise ValueError(f"{AUTO!r} is the chooser, not a renderer name")
    RENDERERS[entry.name] = entry
    return entry


register(Renderer(
    "generator", "PTI of the registered 3D-aware generator, its rays deformed by the 3DMM (needs a generator "
    "checkpoint: `talkflow assets add generator PATH`)", "flows.renderers.generator:GeneratorRenderer",
    asset="generator", needs_asset=True, auto_rank=2))
register(Renderer(
    "warp", "the portrait itself, warped by its 3DMM (no weights needed)", "flows.renderers.warp:WarpRenderer",
    auto_rank=1))


def names() -> tuple[str, ...]:
    return tuple(RENDERERS)


def describe() -> str:
    """'name: what it does; ...; auto: ...' (help texts and the form)."""
    ranked = sorted(RENDERERS.values(), key=lambda r: -r.auto_rank)
    order = ", else ".join(r.name + (" when available" if r.needs_asset else "") for r in ranked)
    return "; ".join(f"{r.name}: {r.description}" for r in RENDERERS.values()) + f"; {AUTO}: {order}."


def entry(name: str) -> Renderer:
    if name not in RENDERERS:
        raise InputError(f"--renderer must be one of {', '.join((AUTO, *RENDERERS))}, not {name!r}")
    return RENDERERS[name]


def choose(requested: str = AUTO) -> Renderer:
    """The renderer a request names ("auto": the best available). Raises AssetMissing for a renderer
    whose asset is not registered (checked before any work)."""
    if requested == AUTO:
        ranked = sorted((r for r in RENDERERS.values() if r.available()), key=lambda r: -r.auto_rank)
        if not ranked:
            raise AssetMissing(f"no one-shot renderer is available: {describe()}")
        return ranked[0]
    chosen = entry(requested)
    if not chosen.available():
        others = [r.name for r in RENDERERS.values() if r.available()]
        raise AssetMissing(f"the {chosen.name} renderer needs a registered {chosen.asset} "
                           f"(`talkflow assets add {chosen.asset} PATH`); without one use "
                           f"--renderer {' or '.join(others) or AUTO}")
    return chosen


def load(name: str) -> OneShotRenderer:
    """An instance of the renderer's class."""
    module, _, cls = entry(name).target.partition(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["AUTO", "RENDERERS", "Renderer", "choose", "describe", "entry", "load", "names", "register"]
