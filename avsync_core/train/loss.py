"""The paper's training loss, with every random draw passed in explicitly.

Taking the draws as arguments lets the loss be checked against the official trainer's recorded draws, and lets
the training loop draw them per sample from a seed derived from (run seed, step, sample position). A sample's
noise, timestep and audio-drop decision then do not depend on how many processes share the batch, on gradient
accumulation, or on where a run was resumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..sampling.schedulers import make_scheduler

Tensor = torch.Tensor


def training_alphas_cumprod() -> Tensor:
    """ᾱ of the DDPM schedule AVSyncD trains with (SD1.5's scaled-linear betas, 1000 steps), float32."""
    return make_scheduler("ddpm").alphas_cumprod.clone()


def add_noise(x0: Tensor, noise: Tensor, timesteps: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·noise with ᾱ_t per batch element (diffusers' ``add_noise``, same op order)."""
    alphas = alphas_cumprod.to(device=x0.device, dtype=x0.dtype)
    a = alphas[timesteps.to(x0.device)]
    shape = (-1,) + (1,) * (x0.dim() - 1)
    return (a**0.5).reshape(shape) * x0 + ((1 - a) ** 0.5).reshape(shape) * noise


def select_audio(
    keep: Tensor, tokens: Tensor, masks: Tensor, null_tokens: Tensor, null_masks: Tensor
) -> tuple[Tensor, Tensor]:
    """Per batch element, the audio tokens AND masks, or the null ones where ``keep`` is False."""
    b = keep.shape[0]
    k = keep.to(tokens.device).reshape(b, 1, 1)
    tokens_out = torch.where(k, tokens, null_tokens.expand_as(tokens).to(tokens.dtype))
    masks_out = torch.where(k.to(masks.device), masks, null_masks.expand_as(masks))
    return tokens_out, masks_out


def diffusion_loss(
    unet: Callable[..., Tensor],
    latents: Tensor,
    text: Tensor,
    audio_tokens: Tensor,
    audio_masks: Tensor,
    null_audio_tokens: Tensor,
    null_audio_masks: Tensor,
    keep_audio: Tensor,
    timesteps: Tensor,
    noise: Tensor,
    alphas_cumprod: Tensor,
) -> tuple[Tensor, Tensor]:
    """Epsilon MSE on frames 1..F-1 of ``unet``'s prediction; returns ``(loss, prediction)``.

    ``latents`` ``(b, c, F, h, w)`` are the clean x0; every frame is noised at the element's timestep, then
    frame 0 is put back clean (it is the given image). ``text`` is ``(b, n, d)``; ``audio_tokens`` and
    ``null_audio_tokens`` are ``(b|1, L, D)``; the masks are ``(b|1, F, L)`` or ``(F, L)`` bool. Text and audio
    are the same for every frame of a clip.
    """
    if latents.dim() != 5 or latents.shape[2] < 2:
        raise InvalidInputError(f"latents must be (batch, channels, frames >= 2, h, w), got {tuple(latents.shape)}.")
    b, _, frames = latents.shape[:3]
    if noise.shape != latents.shape:
        raise InvalidInputError(f"noise must have the latents' shape {tuple(latents.shape)}, got {tuple(noise.shape)}.")
    if keep_audio.shape != (b,) or keep_audio.dtype != torch.bool or timesteps.shape != (b,):
        raise InvalidInputError(
            f"keep_audio must be ({b},) bool and timesteps ({b},), got {tuple(keep_audio.shape)} "
            f"{keep_audio.dtype} and {tuple(timesteps.shape)}."
        )
    tokens = _per_element(audio_tokens, b)
    null_tokens = _per_element(null_audio_tokens, b)
    masks = _frame_masks(audio_masks, b, frames)
    null_masks = _frame_masks(null_audio_masks, b, frames)
    tokens, masks = select_audio(keep_audio, tokens, masks, null_tokens, null_masks)

    noisy = add_noise(latents, noise, timesteps, alphas_cumprod)
    sample = torch.cat([latents[:, :, :1], noisy[:, :, 1:]], dim=2)
    pred = unet(sample, timesteps, text, tokens, masks)
    loss = F.mse_loss(pred[:, :, 1:].float(), noise[:, :, 1:].float())
    return loss, pred


def _per_element(tokens: Tensor, b: int) -> Tensor:
    if tokens.dim() != 3 or tokens.shape[0] not in (1, b):
        raise InvalidInputError(f"audio tokens must be ({b} or 1, tokens, width), got {tuple(tokens.shape)}.")
    return tokens.expand(b, *tokens.shape[1:])


def _frame_masks(masks: Tensor, b: int, frames: int) -> Tensor:
    if masks.dtype != torch.bool:
        raise InvalidInputError(f"audio masks must be bool (True = attend), got {masks.dtype}.")
    if masks.dim() == 2:
        masks = masks[None]
    if masks.dim() != 3 or masks.shape[0] not in (1, b) or masks.shape[1] != frames:
        raise InvalidInputError(f"audio masks must be ({frames}, L) or ({b}, {frames}, L), got {tuple(masks.shape)}.")
    return masks.expand(b, *masks.shape[1:])


# -- per-sample draws ----------------------------------------------------------------------------------------


@dataclass
class SampleDraws:
    """The random inputs of the loss for a batch, each row drawn from its own sample's generator."""

    keep_audio: Tensor  # (b,) bool
    timesteps: Tensor  # (b,) int64
    noise: Tensor  # (b, c, F, h, w): diffusion noise
    latent_noise: Tensor  # (b, c, F, h, w): the VAE posterior sample's noise


def sample_seed(seed: int, step: int, position: int) -> int:
    """A 63-bit generator seed for one sample, mixed so that nearby (step, position) pairs are unrelated."""
    state = np.random.SeedSequence([int(seed) % 2**63, int(step), int(position)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def draw_for_samples(
    seed: int,
    step: int,
    positions: list[int] | Tensor,
    latent_shape: tuple[int, ...],
    audio_drop_prob: float,
    num_timesteps: int = 1000,
) -> SampleDraws:
    """Draws for the samples at global ``positions`` of optimizer step ``step``; ``latent_shape`` is per sample.

    Each sample draws, in this order: its audio keep decision (uniform < 1 − p, the official rule), its
    timestep, its diffusion noise and its VAE posterior noise, on the CPU so every device gives the same numbers.
    """
    keep, steps, noise, latent_noise = [], [], [], []
    for position in [int(p) for p in positions]:
        g = torch.Generator().manual_seed(sample_seed(seed, step, position))
        keep.append(torch.rand((), generator=g) < 1.0 - audio_drop_prob)
        steps.append(torch.randint(0, num_timesteps, (), generator=g))
        noise.append(torch.randn(latent_shape, generator=g))
        latent_noise.append(torch.randn(latent_shape, generator=g))
    return SampleDraws(torch.stack(keep), torch.stack(steps), torch.stack(noise), torch.stack(latent_noise))
