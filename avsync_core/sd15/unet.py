"""Loading the frozen SD1.5 UNet from whatever users have: a diffusers folder or a single-file checkpoint.

Single files are converted with this project's own LDM -> diffusers table (``unet_layout``), so no config has to
be fetched from a hub. Other model families are recognised from tensor shapes (``family``) and refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from ..checkpoints import (
    WEIGHT_SUFFIXES,
    find_weights,
    load_strict,
    model_subfolder,
    read_json,
    read_state_dict,
)
from ..errors import CheckpointError, existing_path
from ..model.motion_module import MotionConfig, is_motion_key
from ..model.official import base_config_from_official, is_official_unet_config
from ..model.unet_layout import ldm_to_diffusers_state_dict
from . import move_module
from .family import UNetTraits, check_sd15

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
    path = existing_path(path, "SD1.5 model")
    unet = _from_folder(path) if path.is_dir() else _from_single_file(path, single_file_config or SD15_UNET_CONFIG)
    return move_module(unet, device, dtype).eval()


def _from_folder(path: Path) -> UNet2DConditionModel:
    folder = model_subfolder(path, "unet")
    if folder is None:
        raise CheckpointError(
            f"{path} is not a diffusers model folder: expected unet/config.json (or config.json) beside the UNet "
            "weights."
        )
    config = read_json(folder / "config.json", "UNet config")
    if is_official_unet_config(config):  # an official AVSyncD UNet: its SD1.5 part is the base
        config = base_config_from_official(config)
        keep = lambda k: not is_motion_key(k)  # noqa: E731
    else:
        keep = None
    check_sd15(UNetTraits.from_diffusers_config(config), folder.name)
    return _build(config, read_state_dict(find_weights(folder), keep), folder)


def _from_single_file(path: Path, config: dict) -> UNet2DConditionModel:
    if path.suffix not in WEIGHT_SUFFIXES:
        raise CheckpointError(f"{path.name} is not a checkpoint file ({', '.join(WEIGHT_SUFFIXES)}).")
    # Only the UNet is read (LDM names, or a bare diffusers-named UNet): EMA copies, the VAE and the text
    # encoder stay on disk.
    state = read_state_dict(
        path,
        lambda k: k.startswith(
            (
                LDM_UNET_PREFIX,
                "conv_in.",
                "down_blocks.",
                "mid_block.",
                "up_blocks.",
                "time_embedding.",
                "conv_norm_out.",
                "conv_out.",
            )
        ),
    )
    ldm = {k[len(LDM_UNET_PREFIX) :]: v for k, v in state.items() if k.startswith(LDM_UNET_PREFIX)}
    if not ldm and "conv_in.weight" in state:  # a bare diffusers-named UNet state dict
        check_sd15(UNetTraits.from_diffusers_state(state), path.name)
        return _build(config, {k: v for k, v in state.items() if not is_motion_key(k)}, path)
    if not ldm:
        raise CheckpointError(
            f"{path.name} holds no Stable Diffusion UNet (no {LDM_UNET_PREFIX}* tensors). Use an SD1.5 checkpoint."
        )
    check_sd15(UNetTraits.from_ldm_state(ldm), path.name)
    with torch.device("meta"):
        names = list(UNet2DConditionModel.from_config(config).state_dict())
    return _build(config, ldm_to_diffusers_state_dict(ldm, names, MotionConfig.from_unet_config(config)), path)


def _build(config: dict, state: dict[str, torch.Tensor], source: Path) -> UNet2DConditionModel:
    with torch.device("meta"):  # no random init: the loaded tensors are assigned
        unet = UNet2DConditionModel.from_config(config)
    load_strict(unet, state, str(source), "a complete SD1.5 UNet")
    return unet
