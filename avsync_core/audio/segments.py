"""Which audio tokens each video frame may attend to (AVSyncD's per-frame segment masks).

The 19 time patches of a 2 s window are split into one window per frame; windows overlap when 19 does not
divide evenly. Token 0 (ImageBind's cls) is always visible; token 1 + 19 * row + t is frequency row ``row``
(0..11) at time patch ``t`` (0..18). The windows reproduce the official ``_auto_split`` exactly, including
``np.round``'s round-half-to-even of the window starts.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InvalidInputError
from ..model.additions import gather_index
from .imagebind.config import ImageBindAudioConfig
from .mel import FRAME_LENGTH_MS, FRAME_SHIFT_MS

TIME_PATCHES = 19
FREQ_PATCHES = 12
NUM_TOKENS = 1 + FREQ_PATCHES * TIME_PATCHES  # 229
_STEM = ImageBindAudioConfig()
PATCH_STEP_SECONDS = _STEM.stride * FRAME_SHIFT_MS / 1000.0  # 0.1 s between time patches
PATCH_SECONDS = ((_STEM.kernel - 1) * FRAME_SHIFT_MS + FRAME_LENGTH_MS) / 1000.0  # 0.175 s of sound per patch
# 2 s at 120 fps; far beyond any animation, and past it frames would share single 100 ms patches many times over.
MAX_FRAMES = 240


def _check_frames(frames: int) -> int:
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or not 1 <= frames <= MAX_FRAMES:
        raise InvalidInputError(
            f"frames per audio window must be a whole number from 1 to {MAX_FRAMES}, got {frames!r}."
        )
    return int(frames)


def segment_time_windows(frames: int) -> list[tuple[int, int]]:
    """[start, stop) time-patch window of each frame: equal widths ceil(19 / frames), starts spread evenly."""
    frames = _check_frames(frames)
    width = math.ceil(TIME_PATCHES / frames)
    starts = np.round(np.linspace(0, TIME_PATCHES - width, frames, endpoint=True)).astype(np.int64)
    return [(int(s), int(s) + width) for s in starts]


def segment_time_seconds(frames: int) -> list[tuple[float, float]]:
    """[start, stop) seconds of the 2 s mel each frame attends to (its time patches, 0.175 s each, 0.1 s apart)."""
    return [
        (start * PATCH_STEP_SECONDS, (stop - 1) * PATCH_STEP_SECONDS + PATCH_SECONDS)
        for start, stop in segment_time_windows(frames)
    ]


def segment_time_masks(frames: int) -> torch.Tensor:
    """(frames, 19) bool: the time patches each frame sees."""
    windows = segment_time_windows(frames)
    mask = torch.zeros(len(windows), TIME_PATCHES, dtype=torch.bool)
    for i, (start, stop) in enumerate(windows):
        mask[i, start:stop] = True
    return mask


def segment_masks(frames: int) -> torch.Tensor:
    """(frames, 229) bool, True = the frame may attend to the token."""
    time = segment_time_masks(frames)
    tokens = time.unsqueeze(1).expand(-1, FREQ_PATCHES, -1).reshape(time.shape[0], -1)
    return torch.cat([torch.ones(time.shape[0], 1, dtype=torch.bool), tokens], dim=1)


def segment_index(frames: int) -> torch.Tensor:
    """(frames, 1 + 12 * width) int64: the tokens each frame sees, ascending (cls first); the gather index
    attention uses instead of the mask, since every frame sees the same number of tokens."""
    return gather_index(segment_masks(frames)[None])
