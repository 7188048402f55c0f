"""The standalone sampling loop for long sound with context windows (``context.py``): diffusers schedulers.

All new frames of the animation are one latent; at every step each window (the picture + ``F - 1`` new frames)
runs through the UNet with its own 2 s of audio and the guidance of one clip, the guided noise predictions are
fused with ``normalized_weights``, and the scheduler steps every frame at once (schedulers act frame by frame,
so this is the per-clip step of ``loop.sample_video_latents`` on more frames). One window covering all frames is
that single-clip run, bit for bit.
"""

from __future__ import annotations

from typing import Callable

import torch
from diffusers import PNDMScheduler
from tqdm.auto import tqdm

from ..audio.condition import AudioCondition
from ..model.unet import AVSyncUNet
from .context import DEFAULT_OVERLAP, context_schedule, normalized_weights, window_start
from .guidance import combine_guidance
from .loop import StepInfo, _batch_of, _branch_inputs, _initial_noise, _step_kwargs, checked_branches, fresh_seed

Tensor = torch.Tensor


def sample_context_video_latents(
    unet: AVSyncUNet,
    scheduler,
    first_frame_latents: Tensor,
    text: Tensor,
    audio: AudioCondition,
    *,
    overlap: int = DEFAULT_OVERLAP,
    fuse: str = "pyramid",
    steps: int = 50,
    audio_scale: float = 4.0,
    text_scale: float = 1.0,
    null_text: Tensor | None = None,
    init_noise: Tensor | None = None,
    seed: int | None = None,
    progress: bool = True,
    callback: Callable[[StepInfo], None] | None = None,
    official_pndm_warmup: bool = True,
) -> Tensor:
    """``(b, c, T, h, w)`` latents of the whole sound, ``T = audio.total_frames``, frame 0 = ``first_frame_latents``.

    Arguments as ``loop.sample_video_latents``; ``overlap`` and ``fuse`` shape the windows (``context.py``).
    The noise of video ``i`` is drawn for all its new frames at once from ``seed + i``. ``callback`` gets the
    fused prediction as ``guided_eps`` and the last window's branch outputs as ``unet_output``.
    """
    branches = checked_branches(audio, steps, audio_scale, text_scale, null_text)
    frames, total = audio.frames, audio.total_frames
    windows = context_schedule(total, frames, overlap)
    weights = normalized_weights(windows, fuse, total, overlap)
    seed = fresh_seed() if seed is None else seed
    device, dtype = unet.device, unet.dtype
    first = _batch_of("first_frame_latents", first_frame_latents, 4).to(device, dtype)
    b, c, h, w = first.shape
    noise = _initial_noise(init_noise, (b, c, total - 1, h, w), seed).to(device, dtype)
    inputs = []
    for k, window in enumerate(windows):
        tokens = audio.tokens_from(window_start(window, total, frames)[1])
        branch_in = _branch_inputs(branches, b, frames, text, null_text, tokens, audio.null_tokens, audio.masks)
        new = [i - 1 for i in window[1:]]
        share = weights[k, window[1:]].to(device, dtype).view(1, 1, -1, 1, 1)
        inputs.append((new, share, *(t.to(device) for t in branch_in)))

    scheduler.set_timesteps(steps, device=device)
    step_kwargs = _step_kwargs(scheduler, seed, device)
    in_place = official_pndm_warmup and isinstance(scheduler, PNDMScheduler)
    noisy = noise * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    bar = tqdm(total=len(timesteps) * len(windows), disable=not progress, desc="AVSync context sampling")
    with bar:
        for i, t in enumerate(timesteps):
            scaled = scheduler.scale_model_input(noisy, t)
            eps = torch.zeros_like(noisy)
            for new, share, text_in, audio_in, masks_in in inputs:
                model_in = torch.cat([first[:, :, None], scaled[:, :, new]], dim=2)
                with torch.no_grad():
                    out = unet(
                        model_in.repeat(len(branches), 1, 1, 1, 1), t, text_in.to(dtype), audio_in.to(dtype), masks_in
                    )
                guided = combine_guidance(out.chunk(len(branches)), audio_scale, text_scale)[:, :, 1:]
                eps[:, :, new] += share * guided
                bar.update(1)
            prev = scheduler.step(eps, t, noisy, **step_kwargs).prev_sample
            if in_place:
                noisy.copy_(prev)
            else:
                noisy = prev
            if callback is not None:
                callback(StepInfo(i, len(timesteps), t, torch.cat([first[:, :, None], noisy], dim=2), eps, out))
    return torch.cat([first[:, :, None], noisy], dim=2)
