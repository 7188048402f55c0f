"""One sampling run in a host that folds videos, frames and guidance branches into one UNet batch (ComfyUI).

Such a host calls the UNet on ``(chunks * videos * frames, c, h, w)`` rows: one chunk per guidance branch (the
host decides how many chunks it batches together and in which order), each chunk holding every frame of every
video. ``SamplingRun`` holds what the run needs besides the host's own state (the clean first frames, the audio
each branch hears, the segment masks) and is the one place of the first-frame rule: frame 0 of every clip is the
given image's latent, in the sampler's input, in the model's input, in every denoised estimate and in the result.
``ContextRun`` is the same for a whole sound sampled in context windows (``context.py``): the host hands the model
one window at a time, and the run gives the ``SamplingRun`` of that window (its video's picture, its 2 s of audio).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from einops import rearrange

from ..audio.condition import AudioCondition
from ..errors import InvalidInputError
from ..model.additions import AudioContext, gather_index
from .context import window_start

Tensor = torch.Tensor


class _FirstFrame:
    """The first-frame rule over ``(videos * frames, c, h, w)`` latents, for runs with ``first_latents`` and
    ``frames`` (the frames of one video in the sampler's latent)."""

    frames: int
    first_latents: Tensor

    @property
    def videos(self) -> int:
        return self.first_latents.shape[0]

    def pin_input(self, x: Tensor, scale: Tensor) -> Tensor:
        """The sampler's latents with frame 0 set so that the host's input scaling (``scale``, broadcastable to
        ``first_latents``, e.g. ``1 / sqrt(1 + sigma^2)``) turns it into the clean latent: everything between the
        sampler and the UNet (ControlNet hints, model wrappers) then sees the clean frame; ``model_input`` pins
        it exactly."""
        return _with_first(x, self.first_latents / scale, self.frames)

    def pin_denoised(self, denoised: Tensor) -> Tensor:
        """A denoised estimate with frame 0 set to the clean latent (it is known, not estimated)."""
        return _with_first(denoised, self.first_latents, self.frames)

    def pin_result(self, samples: Tensor, latent_image: Tensor) -> Tensor:
        """The sampler's result with frame 0 of every video equal to the given latent, bit for bit."""
        first = rearrange(latent_image, "(v f) c h w -> v f c h w", f=self.frames)[:, 0]
        return _with_first(samples, first, self.frames)


@dataclass(frozen=True)
class SamplingRun(_FirstFrame):
    """``first_latents`` is ``(videos, c, h, w)`` in the UNet's latent space; ``tokens``/``null_tokens`` are
    ``(1 or videos, L, D)`` (or ``(1 or videos, frames, L, D)`` for per-frame tokens); ``masks`` ``(frames, L)``."""

    frames: int
    first_latents: Tensor
    tokens: Tensor
    null_tokens: Tensor
    masks: Tensor
    branch_audio: tuple[bool, ...] = (True,)  # branch index -> real audio (True) or null audio
    index: Tensor | None = field(default=None, compare=False)  # the masks' gather index, computed once per run

    def __post_init__(self) -> None:
        if self.frames < 2:
            raise InvalidInputError(
                f"AVSyncD animates at least 2 frames (frame 0 is the given image); got {self.frames}."
            )
        if self.masks.shape[0] != self.frames:
            raise InvalidInputError(
                f"The audio condition was encoded for {self.masks.shape[0]} frames per clip, but {self.frames} frames "
                "are "
                "being sampled. Encode the audio with the same frame count."
            )
        for name, tokens in (("tokens", self.tokens), ("null tokens", self.null_tokens)):
            if tokens.shape[-2] != self.masks.shape[-1] or tokens.shape[-1] != self.null_tokens.shape[-1]:
                raise InvalidInputError(
                    f"The audio condition is inconsistent: its {name} are {tuple(tokens.shape)} but its masks cover "
                    f"{self.masks.shape[-1]} tokens and its null tokens are {self.null_tokens.shape[-1]} wide. "
                    "Encode the audio again with 'AVSync Encode Audio' / encode_audio_condition."
                )
        if self.index is None:
            object.__setattr__(self, "index", gather_index(self.masks[None].cpu()))

    @classmethod
    def for_window(
        cls, audio: AudioCondition, window: int, first_latents: Tensor, branch_audio: Sequence[bool] = (True,)
    ) -> "SamplingRun":
        """The run of clip ``window`` of an encoded sound, starting from ``first_latents``."""
        window = audio.check_window(window)
        return cls(
            frames=audio.frames,
            first_latents=first_latents,
            tokens=audio.tokens[window : window + 1],
            null_tokens=audio.null_tokens,
            masks=audio.masks,
            branch_audio=tuple(branch_audio),
        )

    def in_window(self, rows: Sequence[int] | None) -> "SamplingRun":
        """This run for a model call; a clip is never split into context windows (``rows`` must be None)."""
        if rows is not None:
            raise InvalidInputError(
                "The model was handed a context window of a single clip; context windows need the whole sound's "
                "latent (see ContextRun)."
            )
        return self

    def with_branches(self, branch_audio: Sequence[bool]) -> "SamplingRun":
        return replace(self, branch_audio=tuple(branch_audio))

    def model_input(self, x: Tensor, branch_indices: Sequence[int]) -> tuple[Tensor, AudioContext]:
        """Frame 0 of every clip set to the clean latent, and the audio each chunk's branch hears."""
        chunks = len(branch_indices)
        per_chunk = self.videos * self.frames
        if x.shape[0] != chunks * per_chunk:
            raise InvalidInputError(
                f"The sampler passed {x.shape[0]} latent frames for {chunks} guidance branch(es); expected "
                f"{chunks} x {self.videos} video(s) x {self.frames} frames. The latent batch must hold whole clips of "
                f"{self.frames} frames."
            )
        if tuple(x.shape[-2:]) != tuple(self.first_latents.shape[-2:]):
            raise InvalidInputError(
                f"The latent is {tuple(x.shape[-2:])} but the first frame is {tuple(self.first_latents.shape[-2:])}; "
                "area or tiled conditioning that crops the latent is not supported with AVSyncD."
            )
        x = _with_first(x, self.first_latents.repeat(chunks, 1, 1, 1), self.frames)
        tokens = torch.cat(
            [self._per_video(self.tokens if self.branch_audio[i] else self.null_tokens).to(x) for i in branch_indices]
        )
        masks = self.masks.to(x.device)[None].expand(chunks * self.videos, -1, -1)
        index = None if self.index is None else self.index.to(x.device)
        return x, AudioContext(tokens, self.frames, masks, index)

    def _per_video(self, tokens: Tensor) -> Tensor:
        return tokens.expand(self.videos, *tokens.shape[1:])


@dataclass(frozen=True)
class ContextRun(_FirstFrame):
    """A whole sound sampled in context windows: the sampler's latent holds ``audio.total_frames`` frames per video
    (``frames``); each model call is one anchored window (``context.anchored_windows``), given by its latent rows."""

    audio: AudioCondition
    first_latents: Tensor
    branch_audio: tuple[bool, ...] = (True,)
    index: Tensor | None = field(default=None, compare=False)  # the masks' gather index, shared by every window

    def __post_init__(self) -> None:
        if self.index is None:
            object.__setattr__(self, "index", gather_index(self.audio.masks[None].cpu()))

    @property
    def frames(self) -> int:  # type: ignore[override]
        return self.audio.total_frames

    def in_window(self, rows: Sequence[int] | None) -> SamplingRun:
        """The run of the window at latent ``rows`` (frame 0 of its video, then its new frames): that video's
        picture and the 2 s its audio starts at. ``None`` (no window) is only possible when one clip is all."""
        if rows is None:
            if self.frames != self.audio.frames:
                raise InvalidInputError(
                    f"The model was called on all {self.frames} frames of a context-window run at once; the host must "
                    "hand it one window of one clip at a time (the AVSync guider sets up that handler)."
                )
            video, start = None, 0
        else:
            video, start = window_start(rows, self.frames, self.audio.frames)
        return SamplingRun(
            frames=self.audio.frames,
            first_latents=self.first_latents if video is None else self.first_latents[video : video + 1],
            tokens=self.audio.tokens_from(start),
            null_tokens=self.audio.null_tokens,
            masks=self.audio.masks,
            branch_audio=self.branch_audio,
            index=self.index,
        )


def check_fits_model(
    audio_width: int,
    model_audio_width: int,
    latent_channels: int | None = None,
    model_latent_channels: int | None = None,
    *,
    audio_input: str = "the audio condition",
    latent_input: str = "the first-frame latent",
) -> None:
    """The checks the standalone model makes on its inputs, for hosts that call the UNet themselves: the audio
    tokens' width must be the motion module's, the latent's channels the UNet's. ``*_input`` names what the user
    connects, so the message says which input to change."""
    if audio_width != model_audio_width:
        raise InvalidInputError(
            f"{audio_input} holds audio tokens of width {audio_width}, but this AVSyncD motion module takes "
            f"{model_audio_width}-wide tokens. Encode the audio with the ImageBind encoder the motion module was made "
            "for (imagebind_huge's tokens are 768 wide)."
        )
    if latent_channels is not None and latent_channels != model_latent_channels:
        raise InvalidInputError(
            f"{latent_input} has {latent_channels} channels, but this model's UNet takes {model_latent_channels}. "
            "Encode the first frame with the VAE of the SD1.5 checkpoint the model comes from."
        )


def _with_first(latents: Tensor, first: Tensor, frames: int) -> Tensor:
    """A copy of ``(clips * frames, c, h, w)`` latents with frame 0 of every clip set to ``first``
    ``(clips, c, h, w)``."""
    out = latents.clone()
    out.view(-1, frames, *out.shape[1:])[:, 0] = first.to(out)
    return out


def clip_latents(first_latents: Tensor, frames: int) -> Tensor:
    """``(videos * frames, c, h, w)`` latents: each clip starts at its first-frame latent, the rest is zero."""
    return _with_first(
        first_latents.new_zeros(first_latents.shape[0] * frames, *first_latents.shape[1:]), first_latents, frames
    )
