"""Motion-module files: extraction from official checkpoints, our safetensors format, loading into a base."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from avsync_core import CheckpointError
from avsync_core.checkpoints import read_state_dict
from avsync_core.model.motion_files import (
    FORMAT,
    extract_motion_module,
    load_motion_module,
    read_motion_state,
    save_motion_module,
)
from avsync_core.model.motion_module import MotionModule, is_motion_key
from avsync_core.model.unet import AVSyncUNet
from avsync_core.sd15.unet import load_sd15_unet
from conftest import load_golden


def _forward(unet, case="forward_1", model="unet_tiny_c"):
    t = load_golden(model, f"{case}.safetensors")
    with torch.no_grad():
        return unet(
            t["in.sample"],
            t["in.timestep"],
            t["in.encoder_hidden_states"],
            t["in.audio_encoder_hidden_states"],
            t["in.audio_attention_mask"],
        )


def test_motion_keys_are_exactly_the_official_trained_keys():
    full = load_golden("unet_tiny_c", "unet_tiny_c.safetensors")
    motion = {k for k in full if is_motion_key(k)}
    assert motion == {k for k in full if "_temp" in k or "_audio" in k}
    assert len(full) - len(motion) == 684  # the SD1.5 part, as the golden README counts it


def test_extract_save_load_round_trip_gives_identical_outputs(official_tiny_c, unet_tiny_c, tmp_path):
    out_file = tmp_path / "avsync_motion.safetensors"
    info = extract_motion_module(official_tiny_c, out_file)
    assert (info.frames, info.fps) == (12, 6.0)

    meta = json.loads(json.dumps(read_motion_state(out_file)[1].metadata))
    assert meta["format"] == FORMAT and meta["format_version"] == "1"
    assert meta["frames"] == "12" and meta["fps"] == "6.0" and meta["audio_dim"] == "48"
    assert set(load_file(str(out_file))) == {
        k for k in load_golden("unet_tiny_c", "unet_tiny_c.safetensors") if is_motion_key(k)
    }

    base = load_sd15_unet(official_tiny_c)  # the SD1.5 part of the official folder
    motion, _ = load_motion_module(out_file)
    rebuilt = AVSyncUNet(base, motion).eval()
    assert torch.equal(_forward(rebuilt), _forward(unet_tiny_c))
    assert not list(tmp_path.glob(".*.tmp")), "atomic write must not leave temporary files"


def test_official_single_file_unet_loads_as_motion_module(official_tiny_c, unet_tiny_c, tmp_path):
    single = tmp_path / "avsyncd_unet.safetensors"
    single.write_bytes((official_tiny_c / "unet" / "diffusion_pytorch_model.safetensors").read_bytes())
    motion, info = load_motion_module(single, attention_heads=(4, 4, 4, 4))
    assert info.config == unet_tiny_c.motion.config
    for key, value in motion.state_dict().items():
        assert torch.equal(value, unet_tiny_c.motion.state_dict()[key]), key


def test_official_bin_weights_load(official_tiny_a, unet_tiny_a, tmp_path):
    folder = tmp_path / "ckpt" / "unet"
    folder.mkdir(parents=True)
    (folder / "config.json").write_bytes((official_tiny_a / "unet" / "config.json").read_bytes())
    torch.save(load_golden("unet_tiny_a", "unet_tiny_a.safetensors"), folder / "diffusion_pytorch_model.bin")
    unet = AVSyncUNet.from_official(folder.parent)
    assert torch.equal(_forward(unet, model="unet_tiny_a"), _forward(unet_tiny_a, model="unet_tiny_a"))


def test_fresh_module_is_the_identity_on_the_temporal_paths(official_tiny_c):
    """Zero-initialised like the official: every ``conv_temp`` returns its input, and temporal attention adds only
    its ``to_out`` bias (the official init zeroes the weight, not the bias), so no frame sees another through
    them. The trained module of the same layout does mix frames: the check can tell the two apart."""
    trained, _ = load_motion_module(official_tiny_c)
    fresh = MotionModule(trained.config)
    frames, g = 3, torch.Generator().manual_seed(0)
    for name in fresh.conv_names():
        x = torch.randn(2 * frames, fresh.mix(name).conv_temp.out_features, 4, 4, generator=g)
        with torch.no_grad():
            assert torch.equal(fresh.mix(name)(x, frames), x), name
            assert not torch.allclose(trained.mix(name)(x, frames), x, atol=1e-4), name
    for name in fresh.block_names():
        block, trained_block = fresh.block(name), trained.block(name)
        x = torch.randn(2 * frames, 5, block.norm_temp.normalized_shape[0], generator=g)
        bias = block.attn_temp.to_out[0].bias
        with torch.no_grad():
            assert torch.equal(block.temporal_residual(x, frames), bias.expand_as(x)), name
            trained_residual = trained_block.temporal_residual(x, frames)
            assert not torch.allclose(trained_residual, trained_block.attn_temp.to_out[0].bias.expand_as(x)), name


def test_trained_motion_module_changes_the_output_of_a_base(official_tiny_c, unet_tiny_c):
    base = load_sd15_unet(official_tiny_c)
    fresh = AVSyncUNet.from_base(base, audio_dim=48).eval()
    assert not torch.allclose(_forward(fresh), _forward(unet_tiny_c), atol=1e-3)


def test_plain_sd_file_is_refused_with_a_clear_message(tmp_path):
    full = load_golden("unet_tiny_c", "unet_tiny_c.safetensors")
    plain = tmp_path / "sd15.safetensors"
    save_file({k: v for k, v in full.items() if not is_motion_key(k)}, str(plain))
    with pytest.raises(CheckpointError, match="no AVSyncD weights"):
        load_motion_module(plain)


def test_mismatched_shapes_name_the_tensor(official_tiny_c, tmp_path):
    motion, _ = load_motion_module(official_tiny_c)
    state = motion.state_dict()
    state["conv_in.conv_temp.weight"] = torch.zeros(7, 21)
    broken = tmp_path / "broken.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(broken))
    with pytest.raises(CheckpointError, match="conv_in.conv_temp.weight"):
        load_motion_module(broken, attention_heads=(4, 4, 4, 4))


@pytest.mark.parametrize("dropped", ["conv_out.conv_temp.weight", "up_blocks.3.attentions.2.transformer_blocks.0."])
def test_truncated_official_single_file_names_the_missing_tensors(tmp_path, dropped):
    full = load_golden("unet_tiny_c", "unet_tiny_c.safetensors")
    path = tmp_path / "truncated.safetensors"
    save_file({k: v for k, v in full.items() if not k.startswith(dropped)}, str(path))
    expected = rf"truncated.safetensors does not hold AVSyncD weights.*Missing: {dropped}"
    with pytest.raises(CheckpointError, match=expected):
        load_motion_module(path, attention_heads=(4, 4, 4, 4))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="cut.safetensors is not a readable safetensors file"):
        load_motion_module(cut)


@pytest.mark.parametrize(
    "config, message",
    [
        ("{bad json", "config.json is not a readable UNet config file"),
        ("[1, 2]", "config.json is not a UNet config file: expected a JSON object"),
        ('{"audio_cross_attention_dim": 48}', "UNet config has no 'down_block_types' entry"),
        ({"down_block_types": [["a list"]] * 4}, "UNet config has a malformed entry"),
        ({"block_out_channels": None}, "UNet config has a malformed entry"),
        ({"layers_per_block": "two"}, "layers_per_block two is not an SD1.5 layout"),
    ],
)
def test_malformed_config_json_is_a_clear_error(official_tiny_c, tmp_path, config, message):
    folder = tmp_path / "official"
    shutil.copytree(official_tiny_c, folder)
    config_file = folder / "unet" / "config.json"
    if isinstance(config, dict):  # the real config with some entries broken
        config = json.dumps({**json.loads(config_file.read_text()), **config})
    config_file.write_text(config)
    with pytest.raises(CheckpointError, match=message):
        AVSyncUNet.from_official(folder)
    with pytest.raises(CheckpointError, match=message):
        load_motion_module(folder)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reading_in_a_half_dtype_casts_each_tensor_like_a_full_read(official_tiny_c, tmp_path, dtype):
    motion, _ = load_motion_module(official_tiny_c)
    ours = tmp_path / "motion.safetensors"
    save_motion_module(ours, motion)
    for source in (ours, official_tiny_c):
        half, _ = load_motion_module(source, dtype=dtype)
        full = motion.state_dict()
        assert all(torch.equal(v, full[k].to(dtype)) for k, v in half.state_dict().items()), source
    mixed = tmp_path / "mixed.safetensors"
    save_file({"a": torch.arange(6.0).reshape(2, 3), "steps": torch.tensor([3, 4])}, str(mixed))
    state = read_state_dict(mixed, dtype=dtype)
    assert state["a"].dtype == dtype and torch.equal(state["a"].float(), torch.arange(6.0).reshape(2, 3))
    assert state["steps"].dtype == torch.int64 and state["steps"].tolist() == [3, 4]
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(ours.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="cut.safetensors is not a readable safetensors file"):
        load_motion_module(cut, dtype=dtype)


def test_newer_format_is_refused(official_tiny_c, tmp_path):
    motion, _ = load_motion_module(official_tiny_c)
    path = tmp_path / "future.safetensors"
    save_motion_module(path, motion, extra_metadata={"format_version": "99"})
    with pytest.raises(CheckpointError, match="newer version"):
        load_motion_module(path)


def test_missing_and_unknown_paths(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_motion_module(tmp_path / "nope.safetensors")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not an AVSyncD motion module"):
        load_motion_module(tmp_path / "notes.txt")
    with pytest.raises(CheckpointError, match="not an AVSyncD checkpoint folder"):
        load_motion_module(tmp_path)


def test_motion_module_for_another_layout_is_refused_by_the_base(official_tiny_a, official_tiny_c):
    motion_a, _ = load_motion_module(official_tiny_a)
    with pytest.raises(CheckpointError, match="block channels"):
        AVSyncUNet(load_sd15_unet(official_tiny_c), motion_a)


def test_fresh_module_is_zero_initialised_like_the_official():
    motion = MotionModule()
    state = motion.state_dict()
    assert all(state[k].abs().sum() == 0 for k in state if "conv_temp" in k)
    assert all(state[k].abs().sum() == 0 for k in state if k.endswith("attn_temp.to_out.0.weight"))
