"""Sampling AVSyncD: guidance (``guidance``), the state of one sampling run in a host that folds frames and
guidance branches into the batch (``run``, used by ComfyUI; no diffusers), the chaining of clips over long audio
for any host (``chain``; no diffusers), context windows over long audio (``context``; no diffusers; the standalone
loop over them is ``context_loop``), the paper's PNDM and DDIM in sigma space for host samplers
(``official_schedule``; no diffusers), and the standalone loop over diffusers schedulers (``loop``, ``schedulers``).

The standalone names are importable from here too, loaded on first use so that importing ``run`` or
``guidance`` never pulls in diffusers.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "ClipRequest": "chain",
    "sample_chained_clips": "chain",
    "window_seed": "chain",
    "sample_long_video_latents": "loop",
    "sample_context_video_latents": "context_loop",
    "sample_video_latents": "loop",
    "StepInfo": "loop",
    "make_scheduler": "schedulers",
    "SCHEDULERS": "schedulers",
    "SD15_SCHEDULER_CONFIG": "schedulers",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
