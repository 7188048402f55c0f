"""Classifier-free guidance over text and audio, exactly as the official pipeline combines its branches.

Both the standalone sampler (on noise predictions) and the ComfyUI guider (on denoised latents, which are an
affine function of the noise prediction, so the same combination applies) use these two functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import InvalidInputError


@dataclass(frozen=True)
class Branch:
    """One UNet evaluation of a guidance step: with the prompt or the null text, with the audio or null audio."""

    text: bool
    audio: bool


def guidance_branches(audio_scale: float, text_scale: float) -> tuple[Branch, ...]:
    """The branches to evaluate, in the official batch order; a scale of 1 or less turns that guidance off."""
    for name, value in (("audio guidance", audio_scale), ("text guidance", text_scale)):
        if value < 0:
            raise InvalidInputError(f"{name} must be 0 or more (1 = off, the paper uses 4 for audio); got {value}.")
    audio_cfg, text_cfg = audio_scale > 1.0, text_scale > 1.0
    if audio_cfg and text_cfg:
        return Branch(False, False), Branch(True, False), Branch(True, True)
    if text_cfg:
        return Branch(False, True), Branch(True, True)
    if audio_cfg:
        return Branch(True, False), Branch(True, True)
    return (Branch(True, True),)


def combine_guidance(outputs: Sequence[torch.Tensor], audio_scale: float, text_scale: float) -> torch.Tensor:
    """Combine the branch outputs of ``guidance_branches`` (same order) into the guided prediction."""
    branches = guidance_branches(audio_scale, text_scale)
    if len(outputs) != len(branches):
        raise InvalidInputError(f"expected {len(branches)} branch outputs for these scales, got {len(outputs)}.")
    if len(branches) == 3:
        uncond, text, text_audio = outputs
        return uncond + text_scale * (text - uncond) + audio_scale * (text_audio - text)
    if len(branches) == 2:
        base, full = outputs
        scale = audio_scale if branches[0].text else text_scale
        return base + scale * (full - base)
    return outputs[0]
