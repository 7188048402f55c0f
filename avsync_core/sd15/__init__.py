"""The frozen Stable Diffusion 1.5 parts: family detection (``family``, no diffusers), the UNet (``unet``) and
the VAE, CLIP text encoder and tokenizer (``components``), loaded from diffusers folders or single files."""

from __future__ import annotations

import torch
from torch import nn


def move_module(module: nn.Module, device: torch.device | str, dtype: torch.dtype) -> nn.Module:
    """Move without diffusers' per-model dtype warnings (AVSyncD keeps no module in a special precision)."""
    return nn.Module.to(module, device=device, dtype=dtype)
