"""Classifier-free guidance over text and audio, exactly as the official pipeline combines its branches.

Both the standalone sampler (on noise predictions) and the ComfyUI guider (on denoised latents, which are an
affine function of the noise prediction, so the same combination applies) use these functions. Every guidance
mode is written as one ordinary CFG step (``cfg_terms``), so a host's CFG hooks see what the sampler combines.
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


@dataclass(frozen=True)
class CFGTerms:
    """One guidance step written as ordinary classifier-free guidance: ``uncond + scale * (cond - uncond)``.

    This is the form hosts' CFG hooks consume (ComfyUI's ``sampler_cfg_function`` / ``sampler_post_cfg_function``
    and the CFG++ samplers built on them). ``uncond`` is always an evaluated branch: the fully unconditional
    one under dual guidance, the guidance's own baseline under single guidance, the one branch without guidance.
    """

    cond: torch.Tensor
    uncond: torch.Tensor
    scale: float

    def combined(self) -> torch.Tensor:
        return self.uncond + (self.cond - self.uncond) * self.scale


def cfg_terms(outputs: Sequence[torch.Tensor], audio_scale: float, text_scale: float) -> CFGTerms:
    """The branch outputs of ``guidance_branches`` (same order) as one CFG step.

    * No guidance: ``cond = uncond =`` the one branch, scale 1.
    * Audio-only (text-only) guidance: ``uncond`` = the null-audio (null-text) branch, ``cond`` = the full branch,
      scale = the audio (text) guidance.
    * Dual guidance, officially ``e(0,0) + s_t (e(t,0) - e(0,0)) + s_a (e(t,a) - e(t,0))``: ``uncond = e(0,0)``
      (negative prompt, null audio), scale ``s_t`` (the prompt's CFG scale, as in a plain KSampler) and
      ``cond = e(t,0) + (s_a / s_t) (e(t,a) - e(t,0))``, the prompt's prediction with the audio guidance folded in,
      so that ``uncond + s_t (cond - uncond)`` is the official combination.
    """
    branches = guidance_branches(audio_scale, text_scale)
    if len(outputs) != len(branches):
        raise InvalidInputError(f"expected {len(branches)} branch outputs for these scales, got {len(outputs)}.")
    if len(branches) == 3:
        uncond, text, text_audio = outputs
        return CFGTerms(text + (text_audio - text) * (audio_scale / text_scale), uncond, text_scale)
    if len(branches) == 2:
        base, full = outputs
        return CFGTerms(full, base, audio_scale if branches[0].text else text_scale)
    return CFGTerms(outputs[0], outputs[0], 1.0)


def combine_guidance(outputs: Sequence[torch.Tensor], audio_scale: float, text_scale: float) -> torch.Tensor:
    """Combine the branch outputs of ``guidance_branches`` (same order) into the guided prediction."""
    terms = cfg_terms(outputs, audio_scale, text_scale)
    return terms.cond if len(outputs) == 1 else terms.combined()
