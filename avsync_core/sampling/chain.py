"""Long audio: one animation made of chained clips, whichever sampler makes each clip.

Clip k hears audio window k (``audio/windows.py``), starts from the last frame of clip k-1 (clip 0 from the
given image) and draws its noise from ``window_seed(seed, k)``. The policy lives here once; a host hands in a
function that samples one clip: the standalone loop over diffusers schedulers (``loop.sample_long_video_latents``)
or ComfyUI's guider with any ComfyUI sampler (the AVSync Sampler node). Neither diffusers nor ComfyUI is imported.

Latents here are ``(videos, frames, c, h, w)``: each host converts from its own layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..audio.condition import AudioCondition
from ..errors import AVSyncError, InvalidInputError

Tensor = torch.Tensor

# torch.Generator.manual_seed and ComfyUI's seed widget accept 0 .. 2**64 - 1.
SEED_MODULUS = 2**64


def window_seed(seed: int, window: int) -> int:
    """The seed of clip ``window``: ``seed + window``, wrapped modulo 2**64 so that a seed near the top of the
    range (ComfyUI's widget goes up to 2**64 - 1) stays a valid generator seed instead of overflowing."""
    return (int(seed) + int(window)) % SEED_MODULUS


@dataclass(frozen=True)
class ClipRequest:
    """What one clip is sampled from: its audio window, its first frames ``(videos, c, h, w)`` and its seed."""

    window: int
    first_latents: Tensor
    seed: int


# Returns the clip's latents (videos, frames, c, h, w) whose frame 0 is request.first_latents.
ClipSampler = Callable[[ClipRequest], Tensor]


def sample_chained_clips(
    audio: AudioCondition,
    first_latents: Tensor,
    sample_clip: ClipSampler,
    seed: int,
    windows: int | None = None,
) -> Tensor:
    """``(videos, 1 + W * (F - 1), c, h, w)``: the ``W`` clips of ``audio`` (all of its windows unless
    ``windows`` is given), each after the first starting at the previous clip's last frame, which is kept once."""
    if not isinstance(first_latents, torch.Tensor) or first_latents.dim() != 4:
        shape = tuple(first_latents.shape) if isinstance(first_latents, torch.Tensor) else type(first_latents).__name__
        raise InvalidInputError(f"first_latents must be (videos, channels, height, width); got {shape}.")
    count = audio.num_windows if windows is None else windows
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= audio.num_windows:
        raise InvalidInputError(f"windows must be 1..{audio.num_windows} (the audio's clip windows), got {windows!r}.")
    first, parts = first_latents, []
    for window in range(count):
        clip = sample_clip(ClipRequest(window, first, window_seed(seed, window)))
        expected = (first.shape[0], audio.frames, *first.shape[1:])
        if tuple(clip.shape) != expected:
            raise AVSyncError(f"The clip sampler returned {tuple(clip.shape)} latents; expected {expected}.")
        if not torch.equal(clip[:, 0], first.to(clip)):
            raise AVSyncError(f"The clip sampler changed frame 0 of clip {window}; it must keep the given first frame.")
        parts.append(clip if window == 0 else clip[:, 1:])
        first = clip[:, -1]
    return torch.cat(parts, dim=1)
