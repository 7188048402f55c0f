"""Long sound as context windows: every frame denoised together, every window anchored on the picture.

Chaining (``chain.py``) starts clip k from clip k-1's last generated frame, so later clips drift from the picture.
Here all ``T = 1 + W * (F - 1)`` frames of the animation are noisy latents at once; at every step the model runs
on overlapping windows and their predictions are fused. A window is what one AVSyncD clip is: frame 0 = the
picture's clean latent (the anchor) plus ``F - 1`` consecutive new frames starting at frame ``s``. It hears the
2 s from frame ``s - 1`` (``AudioCondition.tokens_from``), exactly as a chained clip whose frame 0 sits at frame
``s - 1`` would, with the same per-frame segment masks, and the guidance of one clip.

The schedule places windows of ``F - 1`` new frames ``F - 1 - overlap`` apart, the last one moved back to end on
the last frame. With overlap 0 the windows are the chained clips' frames. Each frame's prediction is the weighted
mean of the windows holding it (``fuse_weights``); the cost is ``(F - 1) / (F - 1 - overlap)`` times the UNet frames
of chaining per step. Host independent: the standalone loop (``context_loop.py``) and ComfyUI's context handler
(``nodes/context_windows.py``) both take their windows and weights from here.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import InvalidInputError

LONG_SOUND_MODES = ("chain", "context")
FUSE_METHODS = ("pyramid", "flat", "overlap-linear")
DEFAULT_OVERLAP = 4
# The smallest weight of a ramp: above zero, so that a frame held by one window alone keeps a defined mean.
_RAMP_FLOOR = 1e-37


def check_long_sound(mode: str) -> str:
    if mode not in LONG_SOUND_MODES:
        raise InvalidInputError(f"long sound mode must be one of {', '.join(LONG_SOUND_MODES)}, got {mode!r}.")
    return mode


def check_overlap(overlap: int, frames: int) -> int:
    """``overlap`` new frames shared by neighbouring windows: 0 .. F - 2 (a window has F - 1 new frames)."""
    new = frames - 1
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < new:
        raise InvalidInputError(
            f"overlap must be a whole number from 0 to {new - 1}: a window holds the picture and {new} new frames, "
            f"and neighbouring windows must advance by at least one frame; got {overlap!r}."
        )
    return overlap


def check_fuse(method: str) -> str:
    if method not in FUSE_METHODS:
        raise InvalidInputError(
            f"fuse method {method!r} is not supported with AVSyncD's anchored windows; use one of "
            f"{', '.join(FUSE_METHODS)}."
        )
    return method


def new_frame_schedule(noisy: int, new: int, overlap: int) -> list[list[int]]:
    """Windows over ``noisy`` frames numbered from 0: ``new`` consecutive frames each, ``new - overlap`` apart, the
    last one moved back to end on the last frame (one window when they all fit in one)."""
    if noisy <= new:
        return [list(range(noisy))]
    windows = []
    for start in range(0, noisy, new - overlap):
        if start + new >= noisy:
            windows.append(list(range(noisy - new, noisy)))
            break
        windows.append(list(range(start, start + new)))
    return windows


def anchored_windows(
    new_windows: Sequence[Sequence[int]], total_frames: int, frames: int, videos: int = 1
) -> list[list[int]]:
    """Rows of a ``(videos * total_frames)`` latent batch for each window: the video's frame 0, then its new frames.

    ``new_windows`` number the ``total_frames - 1`` new frames of one video from 0 (any schedule's output); each
    must be ``frames - 1`` consecutive frames, since a window is one AVSyncD clip."""
    noisy = total_frames - 1
    out = []
    for window in new_windows:
        window = [int(i) for i in window]
        consecutive = window == list(range(window[0], window[0] + len(window))) if window else False
        if len(window) != min(frames - 1, noisy) or not consecutive or window[0] < 0 or window[-1] >= noisy:
            raise InvalidInputError(
                f"A context window holds frames {window[:3]}...{window[-2:]} of the {noisy} new frames; AVSyncD needs "
                f"{frames - 1} consecutive new frames per window (the picture is added as frame 0). Use the "
                "standard_static or standard_uniform schedule with context_stride 1."
            )
        for video in range(videos):
            base = video * total_frames
            out.append([base] + [base + 1 + i for i in window])
    return out


def context_schedule(total_frames: int, frames: int, overlap: int, videos: int = 1) -> list[list[int]]:
    """The windows of an animation of ``total_frames`` frames (frame 0 included), per video."""
    new = frames - 1
    return anchored_windows(
        new_frame_schedule(total_frames - 1, new, check_overlap(overlap, frames)), total_frames, frames, videos
    )


def window_start(window: Sequence[int], total_frames: int, frames: int) -> tuple[int, int]:
    """(video, the frame of that video the window's audio starts at) of an anchored window."""
    window = [int(i) for i in window]
    video, anchor = divmod(window[0], total_frames)
    local = [i - video * total_frames for i in window]
    if len(window) != frames or anchor != 0 or local[1:] != list(range(local[1], local[1] + frames - 1)):
        raise InvalidInputError(
            f"A context window must be frame 0 of its video and {frames - 1} consecutive new frames; got rows "
            f"{window}. Give the model its windows through AVSyncD's context handler."
        )
    return video, local[1] - 1


def fuse_weights(method: str, window: Sequence[int], total_frames: int, overlap: int) -> torch.Tensor:
    """(len(window),) float32 weights of an anchored window's frames (one video's frame numbers) in the fused
    prediction; the anchor's is 1 (frame 0 is the picture whatever the weights).

    pyramid: highest in the window's middle, falling to 1 at its ends (FreeNoise's weighted mean). flat: all 1.
    overlap-linear: 1, except ramps over the ``overlap`` frames shared with the previous / next window."""
    method = check_fuse(method)
    new = len(window) - 1
    if method == "flat":
        weights = torch.ones(new)
    elif method == "pyramid":
        weights = torch.tensor([float(min(i + 1, new - i)) for i in range(new)])
    else:
        weights = torch.ones(new)
        if overlap > 0 and window[1] > 1:
            weights[:overlap] = torch.linspace(_RAMP_FLOOR, 1.0, overlap)
        if overlap > 0 and window[-1] < total_frames - 1:
            weights[new - overlap :] = torch.linspace(1.0, _RAMP_FLOOR, overlap)
    return torch.cat([torch.ones(1), weights])


def normalized_weights(windows: Sequence[Sequence[int]], method: str, total_frames: int, overlap: int) -> torch.Tensor:
    """(windows, total_frames) float32: each window's share of every frame; each frame's shares sum to 1."""
    weights = torch.zeros(len(windows), total_frames)
    for k, window in enumerate(windows):
        weights[k, list(window)] = fuse_weights(method, window, total_frames, overlap)
    counts = weights.sum(dim=0)
    if bool((counts == 0).any()):
        raise InvalidInputError(
            f"The context windows leave frames {torch.nonzero(counts == 0).flatten().tolist()} out."
        )
    return weights / counts


def unet_frames_factor(frames: int, overlap: int) -> float:
    """UNet frames per step of context windows relative to chaining, for long sound: (F - 1) / (F - 1 - overlap)."""
    new = frames - 1
    return new / (new - check_overlap(overlap, frames))
