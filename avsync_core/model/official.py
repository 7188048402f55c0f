"""The layout of an official AVSyncD checkpoint (lzhangbj/ASVA's ``save_pretrained`` output).

A release folder (``…/ckpts/checkpoint-<N>/modules``) holds ``unet/`` (the full 3D UNet: SD1.5 + the trained
additions, diffusers naming) and ``audio_encoder/`` (ImageBind's audio branch). This module knows where things
sit in it and how its 3D UNet config relates to SD1.5's 2D one; it needs neither diffusers nor ComfyUI.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..checkpoints import model_subfolder, read_json
from ..errors import CheckpointError

BLOCKS_3D_TO_2D = {
    "FFSpatioAudioTempCrossAttnDownBlock3D": "CrossAttnDownBlock2D",
    "FFSpatioTempResDownBlock3D": "DownBlock2D",
    "FFSpatioAudioTempCrossAttnUNetMidBlock3D": "UNetMidBlock2DCrossAttn",
    "FFSpatioTempResUpBlock3D": "UpBlock2D",
    "FFSpatioAudioTempCrossAttnUpBlock3D": "CrossAttnUpBlock2D",
}
_CONFIG_3D_ONLY = ("_class_name", "_diffusers_version", "_name_or_path", "audio_cross_attention_dim")


def resolve_official_unet_folder(path: str | os.PathLike) -> Path:
    """An official checkpoint root (with ``unet/``) or the ``unet/`` folder itself."""
    folder = model_subfolder(Path(path), "unet")
    if folder is not None:
        return folder
    raise CheckpointError(
        f"{path} is not an AVSyncD checkpoint folder: expected unet/config.json (or config.json) with the UNet weights."
    )


def is_official_unet_config(config: dict) -> bool:
    """Official 3D UNet configs carry the audio token width; SD1.5's 2D ones do not."""
    return "audio_cross_attention_dim" in config


def read_official_unet_config(folder: Path) -> dict:
    """The 3D UNet config of an official ``unet/`` folder, refusing plain SD1.5 configs with the fix."""
    config = read_json(folder / "config.json", "UNet config")
    if not is_official_unet_config(config):
        raise CheckpointError(
            f"{folder / 'config.json'} is not an AVSyncD UNet config (it has no audio cross-attention). Point to the "
            "folder of an official AVSyncD checkpoint (the one holding unet/ and audio_encoder/)."
        )
    return config


def base_config_from_official(config: dict) -> dict:
    """The SD1.5 ``UNet2DConditionModel`` config inside an official AVSyncD (3D) UNet config."""
    base = {k: v for k, v in config.items() if k not in _CONFIG_3D_ONLY}
    try:
        for key in ("down_block_types", "up_block_types"):
            base[key] = [_block_2d(t) for t in config[key]]
        base["mid_block_type"] = _block_2d(config["mid_block_type"])
    except KeyError as exc:
        raise CheckpointError(f"The AVSyncD UNet config has no {exc} entry; is it a damaged config.json?") from None
    except TypeError as exc:
        raise CheckpointError(f"The AVSyncD UNet config has a malformed block list ({exc}).") from None
    return base


def _block_2d(block_type: str) -> str:
    if block_type not in BLOCKS_3D_TO_2D:
        raise CheckpointError(
            f"UNet block type {block_type!r} is not part of AVSyncD (expected the audio-conditioned "
            f"blocks {sorted(BLOCKS_3D_TO_2D)})."
        )
    return BLOCKS_3D_TO_2D[block_type]
