"""Everything the UNet needs from one audio clip: tokens per window, null tokens, and the frames' masks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from ..errors import AudioError, InvalidInputError
from .imagebind import ImageBindAudioEncoder
from .mel import melspectrogram, min_samples, null_melspectrogram
from .segments import segment_masks
from .waveform import SAMPLE_RATE, Waveform, check_finite
from .windows import ClipWindow, check_clip_duration, clip_windows, window_samples


@dataclass
class AudioCondition:
    tokens: torch.Tensor  # (W, 229, D): one token set per window, after the final LayerNorm
    null_tokens: torch.Tensor  # (1, 229, D): the encoder's output on the all-zero mel
    masks: torch.Tensor  # (frames, 229) bool: the same for every window
    frames: int
    fps: float
    windows: list[ClipWindow] = field(default_factory=list)

    @property
    def num_windows(self) -> int:
        return int(self.tokens.shape[0])

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
) -> AudioCondition:
    """Encode every window of ``waveform`` (any rate and channel count) for a frames-per-window animation.

    Runs without gradients on the encoder's device and dtype, ``batch_size`` windows at a time, and calls
    ``progress(done, total)`` after each batch. Silence is valid audio; NaN/inf samples are refused.
    The returned tensors live on the encoder's device. ``frames / fps`` must be the encoder's 2 s window.
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
    chunks = []
    with torch.no_grad():
        null_tokens = encoder.encode_tokens(null_melspectrogram(1))
        for i in range(0, len(windows), batch_size):
            batch = windows[i : i + batch_size]
            mels = torch.stack([melspectrogram(window_samples(audio, w)) for w in batch])
            chunks.append(encoder.encode_tokens(mels))
            if progress is not None:
                progress(i + len(batch), len(windows))
    return AudioCondition(
        tokens=torch.cat(chunks),
        null_tokens=null_tokens,
        masks=masks.to(encoder.device),
        frames=frames,
        fps=float(fps),
        windows=windows,
    )
