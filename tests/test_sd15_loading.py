"""The SD1.5 base from a diffusers folder or a single LDM-named file; other families are refused clearly."""

import json

import pytest
import torch
from safetensors.torch import save_file

from avsync_core import CheckpointError
from avsync_core.model.motion_module import MotionConfig, is_motion_key
from avsync_core.model.official import base_config_from_official
from avsync_core.model.unet_layout import diffusers_to_ldm_key, unet_module_map
from avsync_core.sd15.unet import LDM_UNET_PREFIX, SD15_UNET_CONFIG, load_sd15_unet
from conftest import load_golden, load_golden_json


@pytest.fixture(scope="module")
def tiny_base():
    config = base_config_from_official(load_golden_json("unet_tiny_c", "config.json"))
    state = {k: v for k, v in load_golden("unet_tiny_c", "unet_tiny_c.safetensors").items() if not is_motion_key(k)}
    return config, state


def _ldm_file(path, config, state, extra=None):
    places = unet_module_map(MotionConfig.from_unet_config(config))
    tensors = {LDM_UNET_PREFIX + diffusers_to_ldm_key(k, places): v for k, v in state.items()}
    tensors.update(extra or {})
    save_file(tensors, str(path))
    return path


def test_single_file_ldm_checkpoint_converts_exactly(tmp_path, tiny_base):
    config, state = tiny_base
    vae = {"first_stage_model.decoder.conv_in.weight": torch.zeros(2, 2)}  # other parts of a checkpoint are ignored
    unet = load_sd15_unet(_ldm_file(tmp_path / "model.safetensors", config, state, vae), single_file_config=config)
    loaded = unet.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_ldm_names_of_the_full_sd15_layout():
    places = unet_module_map(MotionConfig.from_unet_config(SD15_UNET_CONFIG))
    expect = {
        "conv_in.weight": "input_blocks.0.0.weight",
        "down_blocks.0.resnets.1.conv1.weight": "input_blocks.2.0.in_layers.2.weight",
        "down_blocks.1.resnets.0.conv_shortcut.weight": "input_blocks.4.0.skip_connection.weight",
        "down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k.weight": (
            "input_blocks.8.1.transformer_blocks.0.attn2.to_k.weight"
        ),
        "down_blocks.2.downsamplers.0.conv.weight": "input_blocks.9.0.op.weight",
        "down_blocks.3.resnets.1.time_emb_proj.bias": "input_blocks.11.0.emb_layers.1.bias",
        "mid_block.attentions.0.proj_in.weight": "middle_block.1.proj_in.weight",
        "mid_block.resnets.1.norm2.weight": "middle_block.2.out_layers.0.weight",
        "up_blocks.0.upsamplers.0.conv.weight": "output_blocks.2.1.conv.weight",
        "up_blocks.1.upsamplers.0.conv.bias": "output_blocks.5.2.conv.bias",
        "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2.weight": (
            "output_blocks.11.1.transformer_blocks.0.ff.net.2.weight"
        ),
        "up_blocks.3.resnets.2.conv2.weight": "output_blocks.11.0.out_layers.3.weight",
        "time_embedding.linear_2.weight": "time_embed.2.weight",
        "conv_norm_out.bias": "out.0.bias",
        "conv_out.weight": "out.2.weight",
    }
    assert {k: diffusers_to_ldm_key(k, places) for k in expect} == expect


def test_diffusers_folder_and_model_root(tmp_path, tiny_base):
    config, state = tiny_base
    unet_dir = tmp_path / "model" / "unet"
    unet_dir.mkdir(parents=True)
    (unet_dir / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", **config}))
    save_file(state, str(unet_dir / "diffusion_pytorch_model.safetensors"))
    for path in (tmp_path / "model", unet_dir):
        loaded = load_sd15_unet(path).state_dict()
        assert all(torch.equal(loaded[k], state[k]) for k in state)


def _family_file(tmp_path, name, shapes):
    tensors = {LDM_UNET_PREFIX + k: torch.zeros(s) for k, s in shapes.items()}
    path = tmp_path / name
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    "name,shapes,message",
    [
        (
            "sdxl.safetensors",
            {
                "input_blocks.0.0.weight": (320, 4, 3, 3),
                "label_emb.0.0.weight": (1280, 2816),
                "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 2048),
            },
            "SDXL",
        ),
        (
            "sd21.safetensors",
            {
                "input_blocks.0.0.weight": (320, 4, 3, 3),
                "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
            },
            "Stable Diffusion 2",
        ),
        (
            "inpaint.safetensors",
            {
                "input_blocks.0.0.weight": (320, 9, 3, 3),
                "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
            },
            "9 input channels",
        ),
    ],
)
def test_other_families_are_refused(tmp_path, name, shapes, message):
    with pytest.raises(CheckpointError, match=message):
        load_sd15_unet(_family_file(tmp_path, name, shapes))


def test_file_without_unet_and_missing_path(tmp_path):
    vae_only = tmp_path / "vae.safetensors"
    save_file({"first_stage_model.encoder.conv_in.weight": torch.zeros(1)}, str(vae_only))
    with pytest.raises(CheckpointError, match="no Stable Diffusion UNet"):
        load_sd15_unet(vae_only)
    with pytest.raises(CheckpointError, match="not found"):
        load_sd15_unet(tmp_path / "missing.ckpt")
