"""Training checkpoints: ``checkpoints/checkpoint-<step>/`` with the motion module and the resume state.

A checkpoint folder is written under a hidden temporary name and renamed into place only when every file in it
is complete and synced, so a crash or a kill at any moment leaves either the whole new checkpoint or none of
it, and the previous checkpoints untouched. Only folders named ``checkpoint-<step>`` are ever resumed from.

Each folder holds:
* ``motion_module.safetensors``: the trained weights, loadable by the ComfyUI nodes and by ``AVSyncUNet``;
* ``state.pt``: optimizer, learning-rate scheduler, gradient scaler, RNG states, step and data position;
* ``meta.json``: step, epoch and a summary, written last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..model.motion_files import save_motion_module
from ..model.motion_module import MotionModule

MOTION_FILE = "motion_module.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
STATE_FORMAT = "avsync-train-state"
STATE_VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d+)$")
_TEMP_PREFIX = ".tmp-checkpoint-"
_TRASH_PREFIX = ".old-checkpoint-"


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir() and all((path / f).is_file() for f in (MOTION_FILE, STATE_FILE, META_FILE)):
            found.append((int(match[1]), path))
    return sorted(found)


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    motion: MotionModule,
    state: dict[str, Any],
    meta: dict[str, Any],
    *,
    frames: int,
    fps: float,
    motion_metadata: dict[str, str] | None = None,
    keep_last: int = 3,
    keep_every: int = 0,
) -> Path:
    """Write ``checkpoint-<step>`` atomically, then prune to the newest ``keep_last`` (plus ``keep_every``
    multiples)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    temp = root / f"{_TEMP_PREFIX}{step:08d}-{os.getpid()}"
    if temp.exists():
        shutil.rmtree(temp)
    temp.mkdir()
    try:
        save_motion_module(temp / MOTION_FILE, motion, frames=frames, fps=fps, extra_metadata=motion_metadata)
        _write_state(temp / STATE_FILE, {"format": STATE_FORMAT, "version": STATE_VERSION, **state})
        _write_text(temp / META_FILE, json.dumps({"step": step, **meta}, indent=2))
        _fsync_dir(temp)
        if final.exists():  # re-saving a step (a run resumed from an older checkpoint): swap, never merge
            trash = root / f"{_TRASH_PREFIX}{step:08d}-{os.getpid()}"
            os.replace(final, trash)
            os.replace(temp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(temp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    prune(root, keep_last, keep_every)
    return final


def prune(root: Path, keep_last: int, keep_every: int = 0) -> None:
    """Delete older checkpoints and leftovers of interrupted writes (ours are gone by now)."""
    checkpoints = list_checkpoints(root)
    for step, path in checkpoints[: max(len(checkpoints) - keep_last, 0)]:
        if not (keep_every and step % keep_every == 0):
            shutil.rmtree(path, ignore_errors=True)
    for path in root.iterdir():
        if path.name.startswith((_TEMP_PREFIX, _TRASH_PREFIX)):
            shutil.rmtree(path, ignore_errors=True)


def resolve_resume(spec: str | None, root: str | os.PathLike) -> Path | None:
    """``latest`` -> the newest complete checkpoint (None if there is none yet); a path -> that checkpoint."""
    if spec is None:
        return None
    if spec == "latest":
        found = list_checkpoints(root)
        return found[-1][1] if found else None
    path = Path(spec).expanduser()
    if path.is_dir() and _NAME.match(path.name) is None and list_checkpoints(path):
        return list_checkpoints(path)[-1][1]  # a checkpoints/ folder: its newest
    missing = [f for f in (MOTION_FILE, STATE_FILE, META_FILE) if not (path / f).is_file()]
    if not path.is_dir() or missing:
        raise CheckpointError(
            f"Cannot resume from {path}: not a complete training checkpoint "
            f"(missing {', '.join(missing) or 'the folder'}). "
            "Use --resume latest, or a checkpoints/checkpoint-<step> folder."
        )
    return path


def load_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged pickle can raise anything
        raise CheckpointError(f"{path / STATE_FILE} cannot be read ({type(exc).__name__}: {exc}).") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path / STATE_FILE} is not a training state written by this trainer.")
    if state.get("version", 0) > STATE_VERSION:
        raise CheckpointError(f"{path / STATE_FILE} was written by a newer version of the trainer; update the plugin.")
    return state


def _write_state(path: Path, state: dict[str, Any]) -> None:
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
