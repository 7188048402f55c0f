"""The standalone sampling loop: diffusers schedulers, frame 0 pinned to the image, text/audio guidance.

Frame 0 is the clean latent of the given image at every step and is never updated; only frames 1..F-1 go
through the scheduler. Unlike the official pipeline, the scheduler's input scaling and initial noise scale
touch only the noisy frames (which is the same for DDIM/PNDM and right for sigma-space schedulers such as
Euler), and guidance works for any batch size.

One official quirk is kept on purpose, because the paper's results were sampled with it: the official loop
writes each PNDM step back into the latents in place, and PNDM keeps a reference to the sample of its first
call for its warm-up (second) call, so that call starts from the already-updated latents.
``official_pndm_warmup=False`` gives the textbook PLMS warm-up instead.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from diffusers import PNDMScheduler
from tqdm.auto import tqdm

from ..audio.condition import AudioCondition
from ..errors import InvalidInputError
from ..model.unet import AVSyncUNet
from .chain import ClipRequest, sample_chained_clips, window_seed
from .guidance import Branch, combine_guidance, guidance_branches

Tensor = torch.Tensor


@dataclass
class StepInfo:
    """Handed to the callback after every scheduler step."""

    index: int
    total: int
    timestep: Tensor
    latents: Tensor  # (b, c, F, h, w), frame 0 included
    guided_eps: Tensor  # (b, c, F-1, h, w), what went into scheduler.step
    unet_output: Tensor  # (k*b, c, F, h, w), the raw branch outputs


def checked_branches(
    audio: AudioCondition, steps: int, audio_scale: float, text_scale: float, null_text: Tensor | None
) -> list:
    """The guidance branches of a run, after the checks every standalone loop (one clip, context windows) needs."""
    if not isinstance(audio, AudioCondition):
        raise InvalidInputError(
            "audio must be an AudioCondition (from avsync_core.audio.encode_audio_condition), "
            f"got {type(audio).__name__}."
        )
    if steps < 1:
        raise InvalidInputError(f"steps must be at least 1, got {steps}.")
    branches = guidance_branches(audio_scale, text_scale)
    if any(not br.text for br in branches) and null_text is None:
        raise InvalidInputError("text guidance above 1 needs the null (empty-prompt) text encoding.")
    return branches


def sample_video_latents(
    unet: AVSyncUNet,
    scheduler,
    first_frame_latents: Tensor,
    text: Tensor,
    audio: AudioCondition,
    *,
    window: int | Sequence[int] = 0,
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
    """Generate ``(b, c, F, h, w)`` latents whose frame 0 is ``first_frame_latents`` ``(b, c, h, w)``.

    ``audio`` gives the frame count F, the segment masks and the null audio; ``window`` picks which of its
    clip windows the videos hear (one index for all, or one per video). ``text`` is ``(b|1, n, d)``;
    ``null_text`` is needed when ``text_scale`` > 1. Item ``i`` of a batch draws its noise from ``seed + i``
    (modulo 2**64, ``chain.window_seed``), so it equals a batch-1 run with that seed (for deterministic
    schedulers). ``callback`` may raise to stop sampling (e.g. on a user interrupt).
    """
    branches = checked_branches(audio, steps, audio_scale, text_scale, null_text)
    frames = audio.frames
    if frames < 2:
        raise InvalidInputError(f"AVSyncD animates at least 2 frames (frame 0 is the given image); got {frames}.")
    seed = fresh_seed() if seed is None else seed
    device, dtype = unet.device, unet.dtype
    first = _batch_of("first_frame_latents", first_frame_latents, 4).to(device, dtype)
    b, c, h, w = first.shape
    noise = _initial_noise(init_noise, (b, c, frames - 1, h, w), seed).to(device, dtype)
    tokens = _window_tokens(audio, window, b)
    text_in, audio_in, masks_in = _branch_inputs(
        branches, b, frames, text, null_text, tokens, audio.null_tokens, audio.masks
    )
    text_in, audio_in, masks_in = text_in.to(device, dtype), audio_in.to(device, dtype), masks_in.to(device)

    scheduler.set_timesteps(steps, device=device)
    step_kwargs = _step_kwargs(scheduler, seed, device)
    in_place = official_pndm_warmup and isinstance(scheduler, PNDMScheduler)
    noisy = noise * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="AVSync sampling")):
        model_in = torch.cat([first[:, :, None], scheduler.scale_model_input(noisy, t)], dim=2)
        with torch.no_grad():
            out = unet(model_in.repeat(len(branches), 1, 1, 1, 1), t, text_in, audio_in, masks_in)
        eps = combine_guidance(out.chunk(len(branches)), audio_scale, text_scale)[:, :, 1:]
        prev = scheduler.step(eps, t, noisy, **step_kwargs).prev_sample
        if in_place:
            noisy.copy_(prev)
        else:
            noisy = prev
        if callback is not None:
            callback(StepInfo(i, len(timesteps), t, torch.cat([first[:, :, None], noisy], dim=2), eps, out))
    return torch.cat([first[:, :, None], noisy], dim=2)


def sample_long_video_latents(
    unet: AVSyncUNet,
    scheduler,
    first_frame_latents: Tensor,
    text: Tensor,
    audio: AudioCondition,
    *,
    seed: int | None = None,
    steps: int = 50,
    windows: int | None = None,
    progress: bool = True,
    callback: Callable[[int, StepInfo], None] | None = None,
    **sample_kwargs,
) -> Tensor:
    """``(b, c, 1 + W * (F - 1), h, w)``: every clip window of ``audio`` (or the first ``windows``), chained by
    ``chain.sample_chained_clips`` (clip k starts at clip k-1's last frame, hears window k, draws its noise from
    ``seed + k`` modulo 2**64). Each clip runs ``sample_video_latents`` with a fresh copy of ``scheduler``
    (multistep schedulers keep state); ``sample_kwargs`` go to it (guidance scales, null text...).
    ``callback(window, step_info)`` is called after every step; one progress bar covers clips x steps."""
    seed = fresh_seed() if seed is None else seed
    count = audio.num_windows if windows is None else windows
    probe = type(scheduler).from_config(scheduler.config)
    probe.set_timesteps(steps)
    bar = tqdm(total=count * len(probe.timesteps), disable=not progress, desc="AVSync sampling", unit="step")

    def sample_clip(request: ClipRequest) -> Tensor:
        def on_step(info: StepInfo) -> None:
            bar.update(1)
            if callback is not None:
                callback(request.window, info)

        latents = sample_video_latents(
            unet,
            type(scheduler).from_config(scheduler.config),
            request.first_latents,
            text,
            audio,
            window=request.window,
            steps=steps,
            seed=request.seed,
            progress=False,
            callback=on_step,
            **sample_kwargs,
        )
        return latents.transpose(1, 2)

    with bar:
        first = _batch_of("first_frame_latents", first_frame_latents, 4)
        return sample_chained_clips(audio, first, sample_clip, seed, windows).transpose(1, 2)


def _window_tokens(audio: AudioCondition, window: int | Sequence[int], batch: int) -> Tensor:
    """``(1 or batch, L, D)``: the tokens of the window each video hears."""
    indices = [window] if isinstance(window, int) else list(window)
    if len(indices) not in (1, batch):
        raise InvalidInputError(f"window must be one index or one per video ({batch}), got {len(indices)} indices.")
    return audio.tokens[[audio.check_window(i) for i in indices]]


def _batch_of(name: str, value: Tensor, dims: int) -> Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() != dims or not value.is_floating_point():
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise InvalidInputError(f"{name} must be a {dims}-D float tensor, got {shape}.")
    return value


def fresh_seed() -> int:
    """A non-deterministic seed that leaves the caller's random state alone (``torch.seed()`` reseeds the global
    generator as a side effect)."""
    return torch.Generator().seed()


def _initial_noise(init_noise: Tensor | None, shape: tuple[int, ...], seed: int) -> Tensor:
    if init_noise is not None:
        if tuple(init_noise.shape) != shape:
            raise InvalidInputError(
                f"init_noise must have shape {shape} (frames 1..F-1), got {tuple(init_noise.shape)}."
            )
        return init_noise
    return torch.cat(
        [
            torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(window_seed(seed, i)))
            for i in range(shape[0])
        ]
    )


def _expand(name: str, value: Tensor, batch: int) -> Tensor:
    if value.shape[0] == batch:
        return value
    if value.shape[0] == 1:
        return value.expand(batch, *value.shape[1:])
    raise InvalidInputError(f"{name} has batch {value.shape[0]}; expected 1 or {batch}.")


def _branch_inputs(
    branches: tuple[Branch, ...],
    batch: int,
    frames: int,
    text: Tensor,
    null_text: Tensor | None,
    audio: Tensor,
    null_audio: Tensor,
    masks: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Text, audio tokens and masks for the whole guidance batch (branch-major, as the official pipeline)."""
    text = _expand("text", text, batch)
    audio = _expand("audio_tokens", audio, batch)
    null_audio = _expand("null_audio_tokens", null_audio, batch)
    null_text = _expand("null_text", null_text, batch) if null_text is not None else None
    if masks.dim() == 2:
        masks = masks[None]
    if masks.shape[1:] != (frames, audio.shape[1]) or masks.dtype != torch.bool:
        raise InvalidInputError(
            f"audio_masks must be a bool ({frames}, {audio.shape[1]}) or (batch, {frames}, {audio.shape[1]}) tensor, "
            f"got {masks.dtype} {tuple(masks.shape)}."
        )
    masks = _expand("audio_masks", masks, batch)
    texts = [text if br.text else null_text for br in branches]
    audios = [audio if br.audio else null_audio for br in branches]
    return torch.cat(texts), torch.cat(audios), masks.repeat(len(branches), 1, 1)


def _step_kwargs(scheduler, seed: int, device: torch.device) -> dict:
    params = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict = {}
    if "eta" in params:
        kwargs["eta"] = 0.0
    if "generator" in params:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
        kwargs["generator"] = generator
    return kwargs
