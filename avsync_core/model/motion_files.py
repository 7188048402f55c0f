"""Motion-module files: extract the trained AVSyncD weights from an official checkpoint, save them, load them.

The command over these functions is ``python -m avsync_core.motion_io``.

Our files hold only the trained tensors, under their official names, in one safetensors file whose metadata
records the format version, the frames and fps trained, the audio token width and the UNet layout. Official
checkpoints (a folder, or a single file of the full 3D UNet) load through the same function, so either source
works everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..checkpoints import (
    WEIGHT_SUFFIXES,
    find_weights,
    read_safetensors_metadata,
    read_state_dict,
    write_safetensors_atomic,
)
from ..errors import CheckpointError, existing_path
from .motion_module import MotionConfig, MotionModule, infer_motion_config, is_motion_key
from .official import read_official_unet_config, resolve_official_unet_folder
from .operations import Operations

FORMAT = "avsyncd-motion-module"
FORMAT_VERSION = 1
OFFICIAL_FRAMES = 12
OFFICIAL_FPS = 6.0


@dataclass
class MotionModuleInfo:
    """What a motion module was made for; ``source`` says where it came from, for messages and metadata."""

    config: MotionConfig
    frames: int = OFFICIAL_FRAMES
    fps: float = OFFICIAL_FPS
    source: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


def save_motion_module(
    path: str | os.PathLike,
    motion: MotionModule,
    *,
    frames: int = OFFICIAL_FRAMES,
    fps: float = OFFICIAL_FPS,
    extra_metadata: dict[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Write the trained tensors and their metadata atomically (temporary file, then rename)."""
    state = {k: v.to(dtype) if dtype else v for k, v in motion.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "frames": str(frames),
        "fps": str(fps),
        "audio_dim": str(motion.config.audio_dim),
        "unet_layout": motion.config.to_json(),
        "written_by": f"avsync_core {__version__}",
        **(extra_metadata or {}),
    }
    write_safetensors_atomic(path, state, metadata)


def load_motion_module(
    path: str | os.PathLike,
    attention_heads: tuple[int, ...] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    operations: Operations = nn,
) -> tuple[MotionModule, MotionModuleInfo]:
    """Load our safetensors file, an official checkpoint folder, or an official single-file UNet.

    ``attention_heads`` is needed only for files that do not record it (head counts are invisible in tensor
    shapes); SD1.5's 8 heads are assumed otherwise. ``operations`` are the layer classes to build it from.
    """
    state, info = read_motion_state(path, attention_heads, dtype)  # cast while reading: no second copy
    with torch.device("meta"):  # no random init: the loaded tensors are assigned
        motion = MotionModule(info.config, zero_init=False, operations=operations)
    motion.load_official_state_dict(state, info.source)
    return motion.to(device=device, dtype=dtype).eval(), info


def read_motion_state(
    path: str | os.PathLike, attention_heads: tuple[int, ...] | None = None, dtype: torch.dtype | None = None
) -> tuple[dict[str, torch.Tensor], MotionModuleInfo]:
    path = existing_path(path, "Motion module")
    if path.is_dir():
        return _read_official_folder(path, dtype)
    if path.suffix not in WEIGHT_SUFFIXES:
        raise CheckpointError(
            f"{path.name} is not an AVSyncD motion module: expected a .safetensors file or an official checkpoint "
            "folder."
        )
    metadata = read_safetensors_metadata(path) if path.suffix == ".safetensors" else {}
    if metadata.get("format") == FORMAT:
        return _read_ours(path, metadata, dtype)
    state = read_state_dict(path, is_motion_key, dtype)
    if not state:
        raise CheckpointError(
            f"{path.name} holds no AVSyncD weights (no conv_temp/_temp/_audio tensors). Is it a plain SD1.5 "
            "checkpoint? Load it with the checkpoint loader and pick an AVSyncD motion module here."
        )
    config = infer_motion_config(state, attention_heads)
    return state, MotionModuleInfo(config, source=str(path))


def _read_ours(
    path: Path, metadata: dict[str, str], dtype: torch.dtype | None
) -> tuple[dict[str, torch.Tensor], MotionModuleInfo]:
    version = int(metadata.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path.name} was written by a newer version of this plugin (motion-module format {version}; this "
            f"version reads up to {FORMAT_VERSION}). Update the plugin."
        )
    try:
        config = MotionConfig.from_json(metadata["unet_layout"])
        frames, fps = int(metadata["frames"]), float(metadata["fps"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path.name} has damaged motion-module metadata ({exc}).") from exc
    state = read_state_dict(path, dtype=dtype)
    return state, MotionModuleInfo(config, frames, fps, str(path), metadata)


def _read_official_folder(path: Path, dtype: torch.dtype | None) -> tuple[dict[str, torch.Tensor], MotionModuleInfo]:
    folder = resolve_official_unet_folder(path)
    config = read_official_unet_config(folder)
    state = read_state_dict(find_weights(folder), is_motion_key, dtype)
    return state, MotionModuleInfo(MotionConfig.from_unet_config(config), source=str(folder))


def extract_motion_module(
    official: str | os.PathLike, out: str | os.PathLike, dtype: torch.dtype | None = None
) -> MotionModuleInfo:
    """Write the trained part of an official checkpoint as one of our files (about a quarter of the size in
    float32, an eighth in float16). Any source ``load_motion_module`` reads works, so this also re-casts ours."""
    motion, info = load_motion_module(official)
    save_motion_module(
        out,
        motion,
        frames=info.frames,
        fps=info.fps,
        extra_metadata={"source": info.metadata.get("source", f"official AVSyncD: {Path(official).name}")},
        dtype=dtype,
    )
    return info
