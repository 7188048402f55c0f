"""Weight files in and out: the one reader, the one strict loader and the atomic writers of the project.

Everything that loads weights (SD1.5 parts, motion modules, ImageBind, training checkpoints) goes through
``read_state_dict`` and ``load_strict``, so every format and wrapper is accepted everywhere and every mismatch is
reported the same way. Torch files are memory-mapped and safetensors files opened lazily; only the requested
keys are materialised, so reading the UNet part of a 4 GB checkpoint does not cost 4 GB of RAM. Tensors read
from a memory-mapped torch file stay backed by the file (copy-on-write) until they are moved or cast.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import CheckpointError, existing_path, preview

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
_TORCH_WRAPPERS = ("state_dict", "model", "module")  # trainer checkpoints nest the weights under these keys

KeyFilter = Callable[[str], bool]


def read_state_dict(
    path: str | os.PathLike, keep: KeyFilter | None = None, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Tensors of one weight file (or a diffusers shard index), optionally only the keys ``keep`` accepts.

    Reads safetensors, torch zip files (memory-mapped) and legacy torch pickles, never running pickled code,
    and unwraps ``{"state_dict": ...}``, ``{"model": ...}`` and ``{"module": ...}`` trainer checkpoints.
    ``dtype`` casts the floating-point tensors; a safetensors file is then read and cast one tensor at a time
    with plain reads, so loading an fp32 file as fp16 never holds (or maps) the fp32 copy.
    """
    path = existing_path(path, "Weight file")
    if path.name.endswith(".index.json"):
        return _read_sharded(path, keep, dtype)
    if path.suffix == ".safetensors":
        return _read_safetensors(path, keep) if dtype is None else _read_safetensors_as(path, keep, dtype)
    if path.suffix in WEIGHT_SUFFIXES:
        return _cast(_read_torch(path, keep), dtype)
    raise CheckpointError(f"{path.name} is not a weight file this project reads ({', '.join(WEIGHT_SUFFIXES)}).")


def read_keys(path: str | os.PathLike) -> list[str]:
    """The tensor names of a weight file, without reading its tensors (a safetensors header, a memory-mapped torch
    zip file, a shard index), so a file can be refused by what it holds before any weight is read."""
    path = existing_path(path, "Weight file")
    if path.name.endswith(".index.json"):
        return sorted(read_json(path, "shard index").get("weight_map", {}))
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                return list(f.keys())
        except Exception as exc:  # safetensors raises its own error types for damaged headers
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc}).") from exc
    return list(read_state_dict(path))


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    if dtype is None:
        return state
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}).") from exc


def read_json(path: Path, what: str = "config") -> dict:
    """A JSON object file, or a CheckpointError saying the file is damaged (instead of a JSONDecodeError)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable {what} file ({exc}).") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a {what} file: expected a JSON object, found {type(data).__name__}.")
    return data


def find_weights(folder: Path, stem: str = "diffusion_pytorch_model") -> Path:
    """The weights of a diffusers model folder: safetensors preferred, then .bin, each possibly sharded or a
    precision variant (``<stem>.fp16.safetensors``)."""
    for name in (f"{stem}.safetensors", f"{stem}.safetensors.index.json", f"{stem}.bin", f"{stem}.bin.index.json"):
        if (folder / name).is_file():
            return folder / name
    variants = sorted(folder.glob(f"{stem}.*.safetensors")) + sorted(folder.glob(f"{stem}.*.bin"))
    if variants:
        return variants[0]
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


def load_strict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    what: str,
    *,
    hint: str = "",
    allow_unexpected: bool = False,
    assign: bool = True,
) -> None:
    """Load ``state`` into ``module`` (assigned when it was built on the meta device), or say what does not fit.

    The error names the source, what it should hold, and the first few missing, unexpected and misshapen keys.
    ``allow_unexpected`` ignores extra keys (full checkpoints hold more than one part).
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = [] if allow_unexpected else sorted(set(state) - set(own))
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
        for k in sorted(set(own) & set(state))
        if tuple(own[k].shape) != tuple(state[k].shape)
    ]
    if missing or unexpected or wrong:
        problems = [
            f"{label}: {preview(items)}"
            for label, items in (("Missing", missing), ("Unexpected", unexpected), ("With the wrong shape", wrong))
            if items
        ]
        raise CheckpointError(
            f"{source} does not hold {what}. " + ". ".join(problems) + "." + (f" {hint}" if hint else "")
        )
    module.load_state_dict({k: state[k] for k in own}, strict=True, assign=assign)


def write_safetensors_atomic(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves a half-written file."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _replace_atomic(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """A text file (results, reports) written the same crash-safe way; newlines are written as given."""

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            f.write(text)

    _replace_atomic(Path(path), write)


def _replace_atomic(path: Path, write: Callable[[str], None]) -> None:
    """``write`` a temporary file next to ``path``, flush it to disk, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_safetensors(path: Path, keep: KeyFilter | None) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if keep is None or keep(k)}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}).") from exc


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _read_safetensors_as(path: Path, keep: KeyFilter | None, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Each tensor read into a buffer of its own and cast at once: the peak is the cast result plus one tensor."""
    out: dict[str, torch.Tensor] = {}
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
            for key, entry in header.items():
                if key == "__metadata__" or (keep is not None and not keep(key)):
                    continue
                start, end = entry["data_offsets"]
                f.seek(8 + size + start)
                raw = bytearray(end - start)
                if f.readinto(raw) != len(raw):
                    raise ValueError(f"tensor {key} runs past the end of the file")
                stored = _SAFETENSORS_DTYPES[entry["dtype"]]
                tensor = (
                    torch.frombuffer(raw, dtype=stored).reshape(entry["shape"])
                    if raw
                    else torch.zeros(entry["shape"], dtype=stored)
                )
                out[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}).") from None
    return out


def _read_torch(path: Path, keep: KeyFilter | None) -> dict[str, torch.Tensor]:
    try:
        try:
            data = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            log.warning("%s uses torch's legacy format and cannot be memory-mapped; loading all of it.", path)
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = re.search(r"GLOBAL ([\w.]+)", str(err))
        if blocked:
            raise CheckpointError(
                f"{path} contains Python objects besides tensors ({blocked.group(1)}) and is not loaded, because "
                "unpickling it could run code. Convert it to .safetensors first."
            ) from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (damaged, or not a checkpoint).") from None
    except Exception as err:  # torch raises many types for damaged or foreign files
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err}).") from None
    for wrapper in _TORCH_WRAPPERS:
        if isinstance(data, Mapping) and isinstance(data.get(wrapper), Mapping):
            data = data[wrapper]
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(data).__name__}).")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor) and (keep is None or keep(k))}


def _read_sharded(index: Path, keep: KeyFilter | None, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    try:
        weight_map: dict[str, str] = read_json(index, "shard index")["weight_map"]
    except KeyError as exc:
        raise CheckpointError(f"{index} is not a valid shard index (no {exc}).") from None
    shards: Iterable[str] = sorted({f for k, f in weight_map.items() if keep is None or keep(k)})
    out: dict[str, torch.Tensor] = {}
    for shard in shards:
        out.update(read_state_dict(index.parent / shard, keep, dtype))
    return out
