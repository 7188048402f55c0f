"""Reading and writing weight files: safetensors, torch pickles, sharded diffusers folders; atomic writes.

Files are opened lazily (safetensors) or memory-mapped (torch), and only the requested keys are copied out,
so reading the UNet part of a 4 GB checkpoint does not cost 4 GB of RAM.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import CheckpointError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")


def read_state_dict(path: str | os.PathLike, keep: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """Tensors of one weight file (or a diffusers shard index), optionally only the keys ``keep`` accepts."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Weight file not found: {path}")
    if path.name.endswith(".index.json"):
        return _read_sharded(path, keep)
    if path.suffix == ".safetensors":
        return _read_safetensors(path, keep)
    if path.suffix in WEIGHT_SUFFIXES:
        return _read_torch(path, keep)
    raise CheckpointError(f"{path.name} is not a weight file this project reads ({', '.join(WEIGHT_SUFFIXES)}).")


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}).") from exc


def find_weights(folder: Path, stem: str = "diffusion_pytorch_model") -> Path:
    """The weights of a diffusers model folder: safetensors preferred, then .bin, each possibly sharded."""
    for name in (f"{stem}.safetensors", f"{stem}.safetensors.index.json", f"{stem}.bin", f"{stem}.bin.index.json"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise CheckpointError(
        f"No weights in {folder}: expected {stem}.safetensors or {stem}.bin (found: {', '.join(found) or 'nothing'})."
    )


def model_subfolder(path: Path, name: str) -> Path | None:
    """``path/name`` or ``path`` itself, whichever holds a diffusers ``config.json``: users point at a model root
    (``unet/``, ``vae/``, ... inside) as often as at the part's own folder."""
    for folder in (path / name, path):
        if (folder / "config.json").is_file():
            return folder
    return None


def write_safetensors_atomic(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _read_safetensors(path: Path, keep: Callable[[str], bool] | None) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if keep is None or keep(k)}
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}).") from exc


def _read_torch(path: Path, keep: Callable[[str], bool] | None) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} could not be read as a PyTorch weight file ({type(exc).__name__}: {exc}). "
            "If it is a pickle that needs code to load, convert it to .safetensors first."
        ) from exc
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(data).__name__}).")
    # Copy out of the memory map so the file can be closed and the pages released.
    return {k: v.clone() for k, v in data.items() if isinstance(v, torch.Tensor) and (keep is None or keep(k))}


def _read_sharded(index: Path, keep: Callable[[str], bool] | None) -> dict[str, torch.Tensor]:
    try:
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{index} is not a valid shard index ({exc}).") from exc
    shards: Iterable[str] = sorted({f for k, f in weight_map.items() if keep is None or keep(k)})
    out: dict[str, torch.Tensor] = {}
    for shard in shards:
        out.update(read_state_dict(index.parent / shard, keep))
    return out
