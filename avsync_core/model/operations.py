"""The layer-class convention the library's models are built with, so a host can stream their weights.

A model takes ``operations``: an object with drop-in layer classes (``Linear``, ``LayerNorm``, ``Conv2d``),
``torch.nn`` by default. ComfyUI passes ``comfy.ops.manual_cast``, whose layers cast (and in low-VRAM mode
copy) their weights to the input's device and dtype on every call; the library never imports the host.
"""

from __future__ import annotations

from typing import Any

import torch

Operations = Any  # ``torch.nn`` or a host's namespace of drop-in layer classes


def cast_to_input(param: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A raw parameter (a token, a position embedding, an attention's packed projection) on ``x``'s device and
    dtype. A host that streams weights only moves layers it knows (ComfyUI never moves the parameters of a module
    with children in low-VRAM mode), so such parameters may sit on the offload device; a no-op when they do not."""
    return param.to(device=x.device, dtype=x.dtype)
