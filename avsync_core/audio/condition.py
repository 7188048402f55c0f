"""Everything the UNet needs from one sound: tokens per window, null tokens, and the frames' masks.

Chained clips need the tokens of every clip window; context windows (``sampling/context.py``) start at any frame,
so ``every_start`` encodes the 2 s starting at every frame once per sound (``start_tokens``), and the chained
clips' tokens are rows of it (the same tensors, so both modes hear exactly the same audio)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from ..errors import AudioError, InvalidInputError
from .imagebind import ImageBindAudioEncoder
from .mel import melspectrogram, min_samples, null_melspectrogram
from .segments import segment_masks
from .waveform import SAMPLE_RATE, Waveform, check_finite
from .windows import ClipWindow, check_clip_duration, clip_windows, start_windows, window_samples


@dataclass
class AudioCondition:
    tokens: torch.Tensor  # (W, 229, D): one token set per window, after the final LayerNorm
    null_tokens: torch.Tensor  # (1, 229, D): the encoder's output on the all-zero mel
    masks: torch.Tensor  # (frames, 229) bool: the same for every window
    frames: int
    fps: float
    windows: list[ClipWindow] = field(default_factory=list)
    start_tokens: torch.Tensor | None = None  # (S, 229, D): the 2 s from frame j for every j (``every_start``)

    @property
    def num_windows(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def total_frames(self) -> int:
        """Frames of the whole animation, frame 0 included: 1 + clips x (frames - 1), in either long-sound mode."""
        return 1 + self.num_windows * (self.frames - 1)

    def tokens_from(self, frame: int) -> torch.Tensor:
        """(1, 229, D): what a window whose frame 0 sits at ``frame`` hears, the 2 s starting at ``frame / fps``.

        Every start needs ``start_tokens``; without them only the chained clips' starts (multiples of frames - 1)
        are known, which is all that context windows without overlap use."""
        last = self.total_frames - self.frames
        if isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame <= last:
            raise InvalidInputError(f"A window's frame 0 must be a frame from 0 to {last}, got {frame!r}.")
        if self.start_tokens is not None:
            return self.start_tokens[frame : frame + 1]
        clip, offset = divmod(frame, self.frames - 1)
        if offset:
            raise InvalidInputError(
                f"A context window starts at frame {frame}, between the chained clips' starts, but the audio was "
                "encoded for chained clips only. Encode it for every window start ('AVSync Encode Audio' with "
                "window_starts = every frame, or encode_audio_condition(..., every_start=True)), or use overlap 0."
            )
        return self.tokens[clip : clip + 1]

    def check_window(self, window: int) -> int:
        """``window`` if this sound has that clip window, else an error listing the ones it has."""
        if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window < self.num_windows:
            raise InvalidInputError(
                f"window {window} does not exist: the audio has {self.num_windows} window(s) "
                f"(0..{self.num_windows - 1})."
            )
        return window

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "AudioCondition":
        """Tokens moved/cast; masks stay bool and only move."""
        return replace(
            self,
            tokens=self.tokens.to(device=device, dtype=dtype),
            null_tokens=self.null_tokens.to(device=device, dtype=dtype),
            start_tokens=None if self.start_tokens is None else self.start_tokens.to(device=device, dtype=dtype),
            masks=self.masks.to(device=device),
        )


def encode_audio_condition(
    encoder: ImageBindAudioEncoder,
    waveform: Waveform,
    frames: int = 12,
    fps: float = 6.0,
    max_windows: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 8,
    every_start: bool = False,
) -> AudioCondition:
    """Encode every window of ``waveform`` (any rate and channel count) for a frames-per-window animation.

    Runs without gradients on the encoder's device and dtype, ``batch_size`` windows at a time, and calls
    ``progress(done, total)`` after each batch. Silence is valid audio; NaN/inf samples are refused.
    The returned tensors live on the encoder's device. ``frames / fps`` must be the encoder's 2 s window.
    ``every_start`` also encodes the 2 s from every frame (``frames - 1`` times as many windows), which context
    windows with overlap need; the clips' tokens are then rows of those.
    """
    if not isinstance(waveform, Waveform):
        raise InvalidInputError(
            f"Expected a Waveform, got {type(waveform).__name__}; use decode_audio or from_comfy_audio."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive whole number, got {batch_size!r}.")
    check_clip_duration(frames, fps)
    check_finite(waveform.samples, "The audio to encode", waveform.sample_rate)
    audio = waveform.to_mono().resampled(SAMPLE_RATE)
    if audio.num_samples < min_samples(SAMPLE_RATE):
        raise AudioError(
            f"The audio is {1000 * waveform.duration:.1f} ms long; at least 25 ms are needed to compute a mel frame."
        )
    masks = segment_masks(frames)
    windows = clip_windows(audio.duration, frames, fps, max_windows)
    encoded = start_windows(windows, audio.duration, fps) if every_start else windows
    chunks = []
    with torch.no_grad():
        null_tokens = encoder.encode_tokens(null_melspectrogram(1))
        for i in range(0, len(encoded), batch_size):
            batch = encoded[i : i + batch_size]
            mels = torch.stack([melspectrogram(window_samples(audio, w)) for w in batch])
            chunks.append(encoder.encode_tokens(mels))
            if progress is not None:
                progress(i + len(batch), len(encoded))
    tokens = torch.cat(chunks)
    return AudioCondition(
        tokens=tokens[:: frames - 1] if every_start else tokens,
        null_tokens=null_tokens,
        masks=masks.to(encoder.device),
        frames=frames,
        fps=float(fps),
        windows=windows,
        start_tokens=tokens if every_start else None,
    )
