"""The EG3D converter against EG3D's real state dict: the names and shapes of NVlabs/eg3d's
TriPlaneGenerator with the ffhq512-128 settings of its train.py (cbase 32768, cmax 512, mapping
depth 2, c_dim 25, SuperresolutionHybrid8XDC), recorded from EG3D's own code in
fixtures/eg3d_ffhq512_128_state.json, not from the converter's table."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.nerffacespeech.convert_eg3d import DROPPED_SUFFIXES, convert_state_dict
from models.nerffacespeech.generator import GeneratorConfig, TriplaneGenerator

FIXTURE = Path(__file__).parent / "fixtures" / "eg3d_ffhq512_128_state.json"


def test_converter_maps_every_tensor_of_eg3d_ffhq512_128():
    shapes = json.loads(FIXTURE.read_text())["state_dict"]
    # each tensor filled with its own index: where it lands shows which EG3D tensor it was
    state = {name: torch.full(shape, float(i)) for i, (name, shape) in enumerate(shapes.items())}
    cfg, ours = convert_state_dict(state, {"image_resolution": 512, "avg_camera_pivot": [0, 0, 0.2]})
    assert (cfg.z_dim, cfg.c_dim, cfg.w_dim, cfg.mapping_layers) == (512, 25, 512, 2)
    assert (cfg.triplane_resolution, cfg.triplane_channels, cfg.img_resolution) == (256, 32, 512)
    assert cfg.sr_channels == (256, 128) and cfg.sr_input_resolution == 128
    # the converter's config is the one this project ships for the checkpoint
    ref = GeneratorConfig.eg3d_ffhq512()
    assert (cfg.channel_base, cfg.channel_max, cfg.decoder_hidden) == (ref.channel_base, ref.channel_max,
                                                                        ref.decoder_hidden)
    model_keys = set(TriplaneGenerator(cfg).state_dict())
    assert set(ours) == model_keys  # nothing missing, nothing extra
    dropped = [n for n in shapes if n.endswith(DROPPED_SUFFIXES)]
    assert len(ours) + len(dropped) == len(shapes)  # only EG3D's fixed filters are dropped
    index = {name: i for i, name in enumerate(shapes)}
    for src, dst in [("backbone.mapping.fc0.weight", "mapping.fc0.weight"), ("backbone.mapping.w_avg", "mapping.w_avg"),
                     ("backbone.synthesis.b256.torgb.weight", "synthesis.b256.torgb.weight"),
                     ("decoder.net.0.weight", "decoder.fc0.weight"), ("decoder.net.2.bias", "decoder.fc1.bias"),
                     ("superresolution.block1.conv1.weight", "superres.block1.conv1.weight")]:
        assert list(ours[dst].shape) == shapes[src] and float(ours[dst].flatten()[0]) == index[src], (src, dst)
