"""The one ModelPatcher that owns each model the pack loads, so only comfy.model_management moves its weights."""

from __future__ import annotations

import comfy.model_management
import comfy.model_patcher
import torch

_OWNER = "_avsync_owner"


class _Shell(torch.nn.Module):
    """ModelPatcher writes ``device`` and its bookkeeping onto the module it holds. The library's models keep
    ``device`` read-only (it follows their weights), so the patcher holds those in this shell."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner


def owner(
    module: torch.nn.Module,
    load_device: torch.device | None = None,
    offload_device: torch.device | None = None,
) -> comfy.model_patcher.ModelPatcher:
    """The patcher owning ``module``, made on first use and kept on it, so every node that uses the module books
    and moves the same weights. Devices default to ComfyUI's compute and offload devices. A module that runs
    where its host says (``execution_device``) is told the load device: its weights may stay offloaded."""
    patcher = getattr(module, _OWNER, None)
    if patcher is None:
        load_device = load_device or comfy.model_management.get_torch_device()
        offload_device = offload_device or comfy.model_management.unet_offload_device()
        held = _Shell(module) if isinstance(getattr(type(module), "device", None), property) else module
        patcher = comfy.model_patcher.ModelPatcher(held, load_device=load_device, offload_device=offload_device)
        if hasattr(module, "execution_device"):
            module.execution_device = load_device
        object.__setattr__(module, _OWNER, patcher)  # a plain attribute, not a submodule
    return patcher


def owned(patcher: comfy.model_patcher.ModelPatcher) -> torch.nn.Module:
    """The module a patcher made by :func:`owner` owns."""
    return patcher.model.inner if isinstance(patcher.model, _Shell) else patcher.model
