"""What the ``python -m avsync_core.*`` commands share: one clear line and exit status 2 for bad input."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

import torch

from .errors import AVSyncError, InvalidInputError

EXIT_USER_ERROR = 2
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def run_command(prog: str, body: Callable[[], int | None]) -> int:
    """Run ``body``; a problem the user can fix (an ``AVSyncError``) is printed as one line and gives status 2.
    A traceback is printed only for a bug."""
    try:
        return body() or 0
    except AVSyncError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted.", file=sys.stderr)
        return 130


def dtype_argument(parser: argparse.ArgumentParser, default: str, help: str) -> None:
    """``--dtype`` from DTYPES; a default of ``auto`` is offered as a choice too (the command resolves it)."""
    choices = sorted(DTYPES) + (["auto"] if default == "auto" else [])
    parser.add_argument("--dtype", choices=choices, default=default, help=help)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``--dtype``: a DTYPES key, or ``auto`` = fp16 on a GPU, fp32 on the CPU (where half precision is slow)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def writable_output(path: str, what: str = "output") -> None:
    """Refuse an output path whose folder cannot be made or written, before any model is loaded."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise InvalidInputError(f"The {what} {target} is a folder; give a file name (e.g. {target / 'out.mp4'}).")
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"Cannot create the folder for the {what} {target} ({exc.strerror}).") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidInputError(f"Cannot write the {what} {target}: the folder {folder} is not writable.")
