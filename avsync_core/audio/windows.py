"""Cutting a clip of any length into the model's unit: F frames at a frame rate, one audio window each.

AVSyncD animates 12 frames at 6 fps from 2 s of audio. A longer animation is generated window by window, each
window starting from the last frame of the previous one, so window k's frame 0 is global frame k * (F - 1) and
its audio starts at k * (F - 1) / fps seconds and lasts F / fps seconds.

Tail rule: a further window is made only while its first new frame (its frame 1) still has a whole frame of
audio, i.e. while k * (F - 1) + 1 < the number of whole frames in the clip; a shorter tail is dropped. The last
window's audio may stop before the window ends: its mel is padded exactly as the official code pads short clips,
and ``audio_seconds`` says how much real audio it holds. A clip shorter than one window gives one window.

The encoder hears 2 s per window and its segment masks split those 2 s over the F frames, so F / fps must be 2 s
(12 @ 6, 16 @ 8, 24 @ 12): ``check_clip_duration`` refuses anything else, since the mel would crop or pad the
window to 2 s and put the sound out of step with the frames. The window arithmetic itself works for any rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import AudioError, InvalidInputError
from .waveform import SAMPLE_RATE, Waveform

# Frame counts are taken as whole when within this many frames of an integer (float seconds * fps rounding).
_FRAME_EPS = 1e-6
ENCODER_WINDOW_SECONDS = 2.0  # the audio ImageBind hears per clip, split over the frames by the segment masks


@dataclass(frozen=True)
class ClipWindow:
    index: int
    start_seconds: float
    duration_seconds: float
    first_frame: int  # global index of the window's frame 0
    frames: int
    audio_seconds: float  # real audio inside the window (< duration_seconds only for a last, short window)

    @property
    def last_frame(self) -> int:
        return self.first_frame + self.frames - 1


def _check_layout(frames: int, fps: float) -> tuple[int, float]:
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise InvalidInputError(
            f"frames per window must be a whole number >= 2 (windows chain on their shared frame), got {frames!r}."
        )
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise InvalidInputError(f"fps must be a number, got {fps!r}.") from None
    if not math.isfinite(fps) or fps <= 0:
        raise InvalidInputError(f"fps must be a positive number, got {fps!r}.")
    return frames, fps


def check_clip_duration(frames: int, fps: float) -> None:
    """Refuse a frames/fps pair whose clip is not the encoder's 2 s window, saying which fps fits."""
    frames, fps = _check_layout(frames, fps)
    seconds = frames / fps
    if not math.isclose(seconds, ENCODER_WINDOW_SECONDS, rel_tol=1e-6):
        fitting = frames / ENCODER_WINDOW_SECONDS
        raise InvalidInputError(
            f"{frames} frames at {fps:g} fps cover {seconds:.3g} s, but the audio encoder hears "
            f"{ENCODER_WINDOW_SECONDS:g} s per clip, so sound and frames would drift apart. Set fps to "
            f"frames / {ENCODER_WINDOW_SECONDS:g} = {fitting:g} for {frames} frames (12 frames -> 6 fps)."
        )


def clip_windows(
    total_seconds: float, frames: int = 12, fps: float = 6.0, max_windows: int | None = None
) -> list[ClipWindow]:
    """Consecutive chained windows covering ``total_seconds`` of audio (see the module docstring for the tail)."""
    frames, fps = _check_layout(frames, fps)
    try:
        total = float(total_seconds)
    except (TypeError, ValueError):
        raise InvalidInputError(f"total_seconds must be a number, got {total_seconds!r}.") from None
    if not math.isfinite(total) or total <= 0:
        raise InvalidInputError(f"total_seconds must be a positive number of seconds, got {total_seconds!r}.")
    bad_cap = isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 1
    if max_windows is not None and bad_cap:
        raise InvalidInputError(f"max_windows must be a positive whole number or None, got {max_windows!r}.")
    whole_frames = math.floor(total * fps + _FRAME_EPS)
    if whole_frames < 1:
        raise AudioError(
            f"The audio is {total:.3f} s long, shorter than one frame at {fps:g} fps ({1 / fps:.3f} s); "
            "give at least one frame of audio."
        )
    step = frames - 1
    count = 1 + max(0, math.ceil((whole_frames - 1) / step) - 1)
    if max_windows is not None:
        count = min(count, max_windows)
    duration = frames / fps
    windows = []
    for k in range(count):
        first = k * step
        start = first / fps
        windows.append(ClipWindow(k, start, duration, first, frames, min(duration, max(0.0, total - start))))
    return windows


def start_windows(chain: list[ClipWindow], total_seconds: float, fps: float) -> list[ClipWindow]:
    """A window at every frame the chained ``clip_windows`` span: window j's frame 0 is frame j, its audio starts at
    j / fps. Context windows (``sampling/context.py``) start anywhere, so they need one of these per start; window
    ``k * (F - 1)`` is chained clip k, with the same start, duration and samples."""
    if not chain:
        raise InvalidInputError("start_windows needs the chained clip windows of the sound (at least one).")
    first = chain[0]
    last_start = chain[-1].first_frame
    windows = []
    for j in range(last_start + 1):
        start = j / fps
        audio = min(first.duration_seconds, max(0.0, float(total_seconds) - start))
        windows.append(ClipWindow(j, start, first.duration_seconds, j, first.frames, audio))
    return windows


def window_samples(waveform: Waveform, window: ClipWindow) -> torch.Tensor:
    """The (1, n) 16 kHz mono audio of ``window``; n is shorter than the window only at the end of the clip."""
    if waveform.sample_rate != SAMPLE_RATE or waveform.channels != 1:
        raise InvalidInputError(
            f"window_samples needs 16 kHz mono audio, got {waveform.channels} channel(s) at {waveform.sample_rate} Hz; "
            "convert it first (waveform.to_mono().resampled(16000))."
        )
    first = round(window.start_seconds * SAMPLE_RATE)
    stop = first + round(window.duration_seconds * SAMPLE_RATE)
    piece = waveform.samples[:, first:stop]
    if piece.shape[1] == 0:
        raise InvalidInputError(
            f"Window {window.index} starts at {window.start_seconds:.3f} s, after the end of the audio "
            f"({waveform.duration:.3f} s)."
        )
    return piece
