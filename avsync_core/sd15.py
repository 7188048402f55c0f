"""Loading the frozen SD1.5 UNet from whatever users have: a diffusers folder or a single-file checkpoint.

Single files are converted with this project's own LDM -> diffusers table (``naming``), so no config has to be
fetched from a hub. Other model families are recognised from tensor shapes and refused with a clear reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from .checkpoints import WEIGHT_SUFFIXES, find_weights, model_subfolder, read_state_dict
from .errors import CheckpointError
from .motion_module import MotionConfig, is_motion_key
from .naming import ldm_to_diffusers_state_dict
from .unet import base_config_from_official, load_strict, move_module

SD15_UNET_CONFIG: dict = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
LDM_UNET_PREFIX = "model.diffusion_model."


def load_sd15_unet(
    path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    single_file_config: dict | None = None,
) -> UNet2DConditionModel:
    """The SD1.5 UNet of a diffusers folder (model root or ``unet/``), an AVSyncD folder, or a single file.

    Single files do not carry a config; ``single_file_config`` (SD1.5's by default) describes their layout.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"SD1.5 model not found: {path}")
    unet = _from_folder(path) if path.is_dir() else _from_single_file(path, single_file_config or SD15_UNET_CONFIG)
    return move_module(unet, device, dtype).eval()


def _from_folder(path: Path) -> UNet2DConditionModel:
    folder = model_subfolder(path, "unet")
    if folder is None:
        raise CheckpointError(
            f"{path} is not a diffusers model folder: expected unet/config.json (or config.json) beside the UNet weights."
        )
    config = json.loads((folder / "config.json").read_text())
    if "audio_cross_attention_dim" in config:  # an official AVSyncD UNet: its SD1.5 part is the base
        config = base_config_from_official(config)
        keep = lambda k: not is_motion_key(k)  # noqa: E731
    else:
        keep = None
    _check_family(_config_shapes(config), folder)
    return _build(config, read_state_dict(find_weights(folder), keep), folder)


def _from_single_file(path: Path, config: dict) -> UNet2DConditionModel:
    if path.suffix not in WEIGHT_SUFFIXES:
        raise CheckpointError(f"{path.name} is not a checkpoint file ({', '.join(WEIGHT_SUFFIXES)}).")
    state = read_state_dict(path, lambda k: k.startswith(LDM_UNET_PREFIX) or not k.startswith(("first_stage_model.", "cond_stage_model.", "conditioner.")))
    ldm = {k[len(LDM_UNET_PREFIX):]: v for k, v in state.items() if k.startswith(LDM_UNET_PREFIX)}
    if not ldm and "conv_in.weight" in state:  # a bare diffusers-named UNet state dict
        _check_family(_diffusers_shapes(state), path)
        return _build(config, {k: v for k, v in state.items() if not is_motion_key(k)}, path)
    if not ldm:
        raise CheckpointError(
            f"{path.name} holds no Stable Diffusion UNet (no {LDM_UNET_PREFIX}* tensors). Use an SD1.5 checkpoint."
        )
    _check_family(_ldm_shapes(ldm), path)
    with torch.device("meta"):
        names = list(UNet2DConditionModel.from_config(config).state_dict())
    return _build(config, ldm_to_diffusers_state_dict(ldm, names, MotionConfig.from_unet_config(config)), path)


def _config_shapes(config: dict) -> dict[str, tuple[int, ...] | None]:
    text = config.get("cross_attention_dim", 768)
    return {
        "in": (0, config.get("in_channels", 4)),
        "text": (0, text if isinstance(text, int) else -1),
        "label": (0,) if config.get("addition_embed_type") else None,
    }


def _shapes(state: dict[str, torch.Tensor], conv_in: str, text_key: str, label: str) -> dict[str, tuple[int, ...] | None]:
    """The shapes that tell model families apart: input channels, text width, SDXL's label embedding."""
    names = {"in": conv_in, "text": text_key, "label": label}
    return {role: tuple(state[key].shape) if key in state else None for role, key in names.items()}


def _ldm_shapes(ldm: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...] | None]:
    return _shapes(ldm, "input_blocks.0.0.weight", "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "label_emb.0.0.weight")


def _diffusers_shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...] | None]:
    return _shapes(
        state, "conv_in.weight", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", "add_embedding.linear_1.weight"
    )


def _check_family(shapes: dict[str, tuple[int, ...] | None], path: Path) -> None:
    text = shapes["text"]
    if shapes["label"] is not None or (text is not None and text[1] == 2048):
        raise CheckpointError(f"{path.name} is an SDXL checkpoint; AVSyncD needs a Stable Diffusion 1.5 checkpoint.")
    if text is not None and text[1] == 1024:
        raise CheckpointError(f"{path.name} is a Stable Diffusion 2.x checkpoint; AVSyncD needs Stable Diffusion 1.5.")
    if shapes["in"] is None or text is None or text[1] < 0:
        raise CheckpointError(f"{path.name} does not have the Stable Diffusion 1.5 UNet layout.")
    if shapes["in"][1] != 4:
        raise CheckpointError(
            f"{path.name} takes {shapes['in'][1]} input channels (an inpainting or depth model?); AVSyncD needs a "
            "regular 4-channel Stable Diffusion 1.5 checkpoint."
        )


def _build(config: dict, state: dict[str, torch.Tensor], source: Path) -> UNet2DConditionModel:
    with torch.device("meta"):  # no random init: the loaded tensors are assigned
        unet = UNet2DConditionModel.from_config(config)
    load_strict(unet, state, str(source))
    return unet
