"""Sampling in hosts that fold videos, frames and guidance branches into one UNet batch (ComfyUI).

Such a host calls the UNet on ``(chunks * videos * frames, c, h, w)`` rows: one chunk per guidance branch (the
host decides how many chunks it batches together and in which order), each chunk holding every frame of every
video. ``FoldedRun`` turns such a call into what the official model sees: the clean first-frame latent in frame
0 and, for every chunk, the audio tokens of its branch with the per-frame segment masks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch

from .errors import InvalidInputError
from .layers import AudioContext

Tensor = torch.Tensor


@dataclass(frozen=True)
class FoldedRun:
    """One sampling run: ``first_latents`` is ``(videos, c, h, w)`` in the UNet's latent space."""

    frames: int
    first_latents: Tensor
    tokens: Tensor  # (1 or videos, L, D), or (1 or videos, frames, L, D) for per-frame tokens
    null_tokens: Tensor  # same layouts
    masks: Tensor  # (frames, L) bool
    branch_audio: tuple[bool, ...] = (True,)  # branch index -> real audio (True) or null audio

    def __post_init__(self) -> None:
        if self.frames < 2:
            raise InvalidInputError(f"AVSyncD animates at least 2 frames (frame 0 is the given image); got {self.frames}.")
        if self.masks.shape[0] != self.frames:
            raise InvalidInputError(
                f"The audio condition was encoded for {self.masks.shape[0]} frames per clip, but {self.frames} frames are "
                "being sampled. Encode the audio with the same frame count."
            )

    @property
    def videos(self) -> int:
        return self.first_latents.shape[0]

    def with_branches(self, branch_audio: Sequence[bool]) -> "FoldedRun":
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
        x = x.clone()
        x.view(chunks, self.videos, self.frames, *x.shape[1:])[:, :, 0] = self.first_latents.to(x)
        tokens = torch.cat(
            [self._per_video(self.tokens if self.branch_audio[i] else self.null_tokens).to(x) for i in branch_indices]
        )
        masks = self.masks.to(x.device)[None].expand(chunks * self.videos, -1, -1)
        return x, AudioContext(tokens, self.frames, masks)

    def _per_video(self, tokens: Tensor) -> Tensor:
        return tokens.expand(self.videos, *tokens.shape[1:])

    def pin_first_frame(self, latents: Tensor, scale: Tensor | None = None) -> Tensor:
        """The same latents with frame 0 of every clip set to the clean latent divided by ``scale`` (a host's
        input scaling, so that its model input comes out clean; None for estimates of the clean latent)."""
        first = self.first_latents if scale is None else self.first_latents / scale
        out = latents.clone()
        out.view(self.videos, self.frames, *out.shape[1:])[:, 0] = first.to(out)
        return out


def clip_latents(first_latents: Tensor, frames: int) -> Tensor:
    """``(videos * frames, c, h, w)`` latents: each clip starts at its first-frame latent, the rest is zero."""
    videos = first_latents.shape[0]
    out = first_latents.new_zeros(videos, frames, *first_latents.shape[1:])
    out[:, 0] = first_latents
    return out.view(videos * frames, *first_latents.shape[1:])


def chain_windows(windows: Sequence[Tensor], frames: int) -> Tensor:
    """Join consecutive windows of ``(videos * frames, ...)`` latents; each window after the first starts at
    the previous one's last frame, so that shared frame is kept once: ``videos * (1 + W * (frames - 1))`` rows."""
    parts = []
    for w, latents in enumerate(windows):
        clips = latents.view(-1, frames, *latents.shape[1:])
        parts.append(clips if w == 0 else clips[:, 1:])
    joined = torch.cat(parts, dim=1)
    return joined.reshape(-1, *joined.shape[2:])
