"""The models training builds: SD1.5 VAE / CLIP text encoder / tokenizer from a diffusers folder or a single
file, other model families refused, only the motion module trainable, and fine-tuning from an official
checkpoint or a motion-module file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from avsync_core.errors import CheckpointError
from avsync_core.model.motion_files import save_motion_module
from avsync_core.model.unet import AVSyncUNet
from avsync_core.sd15.components import (
    SD15_VAE_CONFIG,
    load_text_encoder,
    load_tokenizer,
    load_vae,
    vae_ldm_name,
)
from avsync_core.train.config import load_config
from avsync_core.train.models import TINY_TEXT_CONFIG, TINY_VAE_CONFIG, build_models, byte_level_tokenizer
from conftest import load_golden

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_parts():
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    return AutoencoderKL.from_config(TINY_VAE_CONFIG), CLIPTextModel(CLIPTextConfig(**TINY_TEXT_CONFIG))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _ldm_file(path: Path, vae: AutoencoderKL, text, extra: dict | None = None) -> Path:
    """An LDM single file: VAE under first_stage_model.* (attention projections as 1x1 convs), CLIP under
    cond_stage_model.transformer.text_model.*."""
    levels = len(vae.config.block_out_channels)
    state = {}
    for name, value in vae.state_dict().items():
        ldm = vae_ldm_name(name, levels)
        if ".attn_1." in ldm and value.dim() == 2:
            value = value[:, :, None, None]
        state[f"first_stage_model.{ldm}"] = value.contiguous()
    for name, value in text.state_dict().items():
        if not name.endswith("position_ids"):
            state[f"cond_stage_model.transformer.text_model.{name.removeprefix('text_model.')}"] = value.contiguous()
    state.update(extra or {})
    save_file(state, str(path))
    return path


def test_vae_names_are_the_ldm_names_diffusers_converts_from():
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    vae = AutoencoderKL.from_config(TINY_VAE_CONFIG)
    levels = len(TINY_VAE_CONFIG["block_out_channels"])
    ldm = {f"first_stage_model.{vae_ldm_name(k, levels)}": v for k, v in vae.state_dict().items()}
    assert convert_ldm_vae_checkpoint(ldm, dict(vae.config)).keys() == vae.state_dict().keys()
    # Spot checks at SD1.5's real layout.
    assert vae_ldm_name("decoder.up_blocks.0.resnets.2.conv1.weight", 4) == "decoder.up.3.block.2.conv1.weight"
    assert (
        vae_ldm_name("encoder.down_blocks.1.resnets.0.conv_shortcut.weight", 4)
        == "encoder.down.1.block.0.nin_shortcut.weight"
    )
    assert vae_ldm_name("encoder.mid_block.attentions.0.to_out.0.bias", 4) == "encoder.mid.attn_1.proj_out.bias"
    assert vae_ldm_name("decoder.mid_block.resnets.1.norm2.weight", 4) == "decoder.mid.block_2.norm2.weight"
    assert vae_ldm_name("decoder.conv_norm_out.weight", 4) == "decoder.norm_out.weight"
    assert len(SD15_VAE_CONFIG["block_out_channels"]) == 4


def test_vae_and_text_encoder_load_from_a_single_file(tiny_parts, tmp_path):
    vae, text = tiny_parts
    path = _ldm_file(tmp_path / "model.safetensors", vae, text)
    assert _same_weights(load_vae(path, single_file_config=TINY_VAE_CONFIG), vae)
    assert _same_weights(load_text_encoder(path, single_file_config=TINY_TEXT_CONFIG), text)


def test_vae_text_encoder_and_tokenizer_load_from_a_diffusers_folder(tiny_parts, tmp_path):
    vae, text = tiny_parts
    vae.save_pretrained(tmp_path / "vae")
    text.save_pretrained(tmp_path / "text_encoder")
    byte_level_tokenizer().save_pretrained(tmp_path / "tokenizer")
    loaded = load_vae(tmp_path, dtype=torch.float16)
    assert loaded.dtype == torch.float16 and not any(p.requires_grad for p in loaded.parameters())
    assert _same_weights(load_vae(tmp_path), vae)
    assert _same_weights(load_text_encoder(tmp_path), text)
    ids = load_tokenizer(model_path=tmp_path)("a dog", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[:3] == byte_level_tokenizer()("a dog").input_ids[:3]


@pytest.mark.parametrize(
    "key, family", [("conditioner.embedders.0.transformer.text_model.x", "SDXL"), ("cond_stage_model.model.x", "2.x")]
)
def test_other_families_are_refused_before_any_tensor_is_read(tiny_parts, tmp_path, key, family, monkeypatch):
    import avsync_core.sd15.components as components

    vae, text = tiny_parts
    path = _ldm_file(tmp_path / "other.safetensors", vae, text, {key: torch.zeros(1)})
    monkeypatch.setattr(components, "read_state_dict", lambda *a, **k: pytest.fail("read tensors of a refused file"))
    with pytest.raises(CheckpointError, match=family):
        load_vae(path, single_file_config=TINY_VAE_CONFIG)
    with pytest.raises(CheckpointError, match=family):
        load_text_encoder(path)


def test_missing_parts_are_explained(tmp_path):
    save_file({"model.diffusion_model.x": torch.zeros(1)}, str(tmp_path / "unet_only.safetensors"))
    with pytest.raises(CheckpointError, match="holds no SD1.5 VAE"):
        load_vae(tmp_path / "unet_only.safetensors")
    for part in ("unet", "audio_encoder"):  # an official AVSyncD checkpoint's layout
        (tmp_path / "avsyncd" / part).mkdir(parents=True)
    with pytest.raises(CheckpointError, match="AVSyncD checkpoints hold only unet/ and audio_encoder/"):
        load_vae(tmp_path / "avsyncd")
    with pytest.raises(CheckpointError, match="not found"):
        load_text_encoder(tmp_path / "nowhere")


def test_tokenizer_comes_from_an_explicit_folder_or_comfyui(monkeypatch, tmp_path):
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    with pytest.raises(CheckpointError, match="Set model.tokenizer"):
        load_tokenizer(None, tmp_path / "model.safetensors")
    byte_level_tokenizer().save_pretrained(tmp_path / "tok")
    assert load_tokenizer(tmp_path / "tok")("ab").input_ids == byte_level_tokenizer()("ab").input_ids
    comfy = Path(os.environ.get("AVSYNC_TEST_COMFYUI", "/opt/ComfyUI"))
    if (comfy / "comfy" / "sd1_tokenizer").is_dir():
        monkeypatch.setenv("COMFYUI_PATH", str(comfy))
        assert load_tokenizer(None)("a dog").input_ids == [49406, 320, 1929, 49407]  # CLIP's own vocabulary


def test_only_the_motion_module_trains_and_frozen_parts_may_be_half():
    models = build_models(load_config(None, ["model.tiny=true"]).model, CPU, torch.bfloat16)
    trainable = [n for n, p in models.unet.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("motion.") for n in trainable)
    assert all(p.dtype == torch.float32 for p in models.unet.motion.parameters())
    for module in (models.unet.base, models.vae, models.audio_encoder):
        assert all(not p.requires_grad and p.dtype == torch.bfloat16 for p in module.parameters())
    assert models.vae_factor == 8 and models.audio_encoder.token_dim == models.unet.motion.config.audio_dim


def test_fine_tuning_starts_from_an_official_checkpoint_or_a_motion_module(official_tiny_c, tmp_path):
    official = AVSyncUNet.from_official(official_tiny_c).motion.state_dict()
    config = load_config(None, ["model.tiny=true", f"model.init_from={official_tiny_c}"])
    motion = build_models(config.model, CPU).unet.motion
    assert all(torch.equal(motion.state_dict()[k], v) for k, v in official.items())
    save_motion_module(tmp_path / "mm.safetensors", motion, frames=4, fps=2.0)
    config = load_config(None, ["model.tiny=true", f"model.init_from={tmp_path / 'mm.safetensors'}"])
    again = build_models(config.model, CPU).unet.motion
    assert all(torch.equal(again.state_dict()[k], v) for k, v in official.items())
    assert all(p.requires_grad for p in again.parameters())


def test_fine_tuning_from_a_motion_module_of_another_layout_is_refused(official_tiny_a):
    config = load_config(None, ["model.tiny=true", f"model.init_from={official_tiny_a}"])
    with pytest.raises(CheckpointError, match="Stable Diffusion 1.5"):
        build_models(config.model, CPU)


def test_tiny_models_can_use_the_golden_tiny_imagebind(tmp_path):
    golden = load_golden("imagebind_audio_tiny", "imagebind_audio_tiny.safetensors")
    save_file(golden, str(tmp_path / "ib.safetensors"))
    config = load_config(None, ["model.tiny=true", f"model.imagebind={tmp_path / 'ib.safetensors'}"])
    encoder = build_models(config.model, CPU).audio_encoder
    stem = golden["modality_preprocessors.audio.rgbt_stem.proj.weight"]
    assert torch.equal(encoder.stem.weight, stem)
