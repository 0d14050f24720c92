"""Convert an EG3D generator (e.g. `ffhqrebalanced512-128.pkl`) into this project's checkpoint.

EG3D's .pkl files are pickles of "persistent classes": the pickle carries the classes' source and
executes it while loading, so talkflow never opens them itself (`load_generator` uses
`torch.load(weights_only=True)`). Run this script ONCE, in an environment you trust, with a
checkout of the EG3D repository (its `torch_utils` and `dnnlib` packages are needed to unpickle):

    python -m models.nerffacespeech.convert_eg3d ffhqrebalanced512-128.pkl ffhq512.talkflow.pt \\
        --eg3d-repo /path/to/eg3d/eg3d
    talkflow assets add generator ffhq512.talkflow.pt

The pickle holds a dict with `G_ema` (the generator used for sampling). Its state dict is
mapped name by name onto `TriplaneGenerator` where the layout matches:

    backbone.mapping.*     -> mapping.*      (embed, fc0.., w_avg)
    backbone.synthesis.*   -> synthesis.*    (b4 .. b256: const, conv0, conv1, torgb)
    decoder.net.0.*        -> decoder.fc0.*
    decoder.net.2.*        -> decoder.fc1.*
    superresolution.*      -> superres.*     (block0, block1)
    *.resample_filter      dropped (the fixed [1, 3, 3, 1] filter is rebuilt in code)
    renderer.*, ray_sampler.*   dropped (parameter-free in EG3D)

The config is inferred from the tensors (z/w/c sizes, mapping depth, tri-plane size and channels,
decoder widths, SR channels) on top of `GeneratorConfig.eg3d_ffhq512()`, with the rendering
options taken from the pickle's `rendering_kwargs` when present. Anything left unmapped, missing
or of another shape stops the conversion with the list of offending names.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from torch import Tensor

from models.checkpoint_io import save_atomic
from models.nerffacespeech.generator import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    GeneratorConfig,
    TriplaneGenerator,
    load_state,
)
from talkflow.errors import InputError

PREFIXES = (
    ("backbone.mapping.", "mapping."),
    ("backbone.synthesis.", "synthesis."),
    ("decoder.net.0.", "decoder.fc0."),
    ("decoder.net.2.", "decoder.fc1."),
    ("superresolution.", "superres."),
)
DROPPED_SUFFIXES = ("resample_filter",)
DROPPED_PREFIXES = ("renderer.", "ray_sampler.")  # parameter-free helpers (constant plane axes, if any)
# rendering_kwargs keys of EG3D -> our config fields
RENDER_KEYS = {
    "depth_resolution": "depth_resolution",
    "depth_resolution_importance": "depth_resolution_importance",
    "ray_start": "ray_start",
    "ray_end": "ray_end",
    "box_warp": "box_warp",
    "avg_camera_radius": "camera_radius",
    "avg_camera_pivot": "camera_pivot",
    "c_scale": "c_scale",
    "superresolution_noise_mode": "sr_noise_mode",
    "sr_antialias": "sr_antialias",
    "decoder_lr_mul": "decoder_lr_mul",
}


def map_names(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """EG3D names -> ours; returns (mapped state, names that match no rule)."""
    out, unmapped = {}, []
    for name, value in state.items():
        if name.endswith(DROPPED_SUFFIXES) or name.startswith(DROPPED_PREFIXES):
            continue
        for src, dst in PREFIXES:
            if name.startswith(src):
                out[dst + name[len(src):]] = value
                break
        else:
            unmapped.append(name)
    return out, unmapped


def infer_config(state: dict[str, Tensor], rendering_kwargs: dict | None = None,
                 neural_rendering_resolution: int | None = None) -> GeneratorConfig:
    """Our config from a mapped state dict (see `map_names`) and EG3D's rendering options."""
    try:
        w_dim = state["mapping.w_avg"].shape[0]
        fcs = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
        embed = state.get("mapping.embed.weight")
        c_dim = 0 if embed is None else embed.shape[1]
        z_dim = state["mapping.fc0.weight"].shape[1] - (w_dim if c_dim else 0)
        res = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"synthesis\.b(\d+)\.torgb\.weight", k)))
        top = res[-1]
        planes_out = state[f"synthesis.b{top}.torgb.weight"].shape[0]
        hidden = state["decoder.fc0.weight"].shape[0]
        feats = state["decoder.fc1.weight"].shape[0] - 1
        sr = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"superres\.block(\d+)\.conv1\.weight", k)))
        sr_channels = tuple(state[f"superres.block{i}.conv1.weight"].shape[0] for i in sr)
        ch = {r: state[f"synthesis.b{r}.conv1.weight"].shape[0] for r in res}
    except (KeyError, IndexError) as exc:
        raise InputError(f"the state dict does not look like an EG3D tri-plane generator (missing {exc})") from exc
    if planes_out % 3:
        raise InputError(f"the synthesis network outputs {planes_out} channels, not 3 planes")
    channel_max = max(ch.values())
    channel_base = ch[top] * top  # min(base / res, max) equals ch[top] at the top resolution
    over = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, mapping_layers=len(fcs), triplane_resolution=top,
                triplane_channels=planes_out // 3, channel_base=channel_base, channel_max=channel_max,
                decoder_hidden=hidden, decoder_features=feats, sr_channels=sr_channels)
    if rendering_kwargs:
        for src, dst in RENDER_KEYS.items():
            if src in rendering_kwargs:
                v = rendering_kwargs[src]
                over[dst] = tuple(float(x) for x in v) if dst == "camera_pivot" else v
    if neural_rendering_resolution:
        over["neural_rendering_resolution"] = int(neural_rendering_resolution)
    base = GeneratorConfig.eg3d_ffhq512().model_dump()
    img = base["img_resolution"]
    if sr and f"superres.block{sr[-1]}.conv1.noise_const" in state:  # the last SR layer's noise is image-sized
        img = state[f"superres.block{sr[-1]}.conv1.noise_const"].shape[-1]
    if rendering_kwargs and "image_resolution" in rendering_kwargs:
        img = int(rendering_kwargs["image_resolution"])
    over["img_resolution"] = img
    over["sr_input_resolution"] = img // 2 ** len(sr_channels)
    try:
        return GeneratorConfig(**(base | over))
    except ValueError as exc:
        raise InputError(f"the inferred generator config is invalid: {exc}") from exc


def convert_state_dict(eg3d_state: dict[str, Tensor], rendering_kwargs: dict | None = None,
                       neural_rendering_resolution: int | None = None) -> tuple[GeneratorConfig, dict[str, Tensor]]:
    """EG3D generator state dict -> (our config, our state dict), checked against a built model."""
    mapped, unmapped = map_names(eg3d_state)
    if unmapped:
        raise InputError(f"{len(unmapped)} EG3D tensors have no counterpart here: {', '.join(unmapped[:8])}")
    cfg = infer_config(mapped, rendering_kwargs, neural_rendering_resolution)
    model = TriplaneGenerator(cfg)
    load_state(model, mapped, "the converted EG3D state dict")  # raises on any mismatch
    return cfg, {k: v.detach().cpu().float() if v.is_floating_point() else v.cpu() for k, v in mapped.items()}


def checkpoint_from_state(cfg: GeneratorConfig, state: dict[str, Tensor]) -> dict:
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": cfg.model_dump(mode="json"),
            "state_dict": state}


def load_eg3d_pickle(path: Path, eg3d_repo: Path | None, key: str = "G_ema"):
    """UNSAFE: unpickles (runs code from) `path`. For the user's trusted environment only."""
    import pickle

    if eg3d_repo is not None:
        sys.path.insert(0, str(eg3d_repo))
    with open(path, "rb") as f:
        data = pickle.load(f)  # noqa: S301 - deliberate, documented, trusted environment only
    g = data[key] if isinstance(data, dict) else data
    return g


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="EG3D .pkl (or a torch file holding an EG3D generator state dict)")
    ap.add_argument("dst", type=Path, help="output checkpoint for load_generator")
    ap.add_argument("--eg3d-repo", type=Path, default=None, help="folder with EG3D's torch_utils/ and dnnlib/")
    ap.add_argument("--key", default="G_ema", help="entry of the pickle to convert (default G_ema)")
    args = ap.parse_args(argv)
    if args.src.suffix.lower() == ".pkl":
        g = load_eg3d_pickle(args.src, args.eg3d_repo, args.key)
        state = g.state_dict()
        kwargs = dict(getattr(g, "rendering_kwargs", {}) or {})
        nrr = getattr(g, "neural_rendering_resolution", None)
    else:
        state = torch.load(args.src, map_location="cpu", weights_only=True)
        kwargs, nrr = {}, None
    cfg, ours = convert_state_dict(state, kwargs, nrr)
    save_atomic(checkpoint_from_state(cfg, ours), args.dst)
    print(f"wrote {args.dst}: {sum(v.numel() for v in ours.values()):,} values, "
          f"{cfg.img_resolution} px, tri-planes {cfg.triplane_resolution} x {cfg.triplane_channels}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
