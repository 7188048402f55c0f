"""Audio as the model wants it: a float32 (channels, samples) tensor with its rate, and the conversions on it.

Kept apart from decoding so that everything that only handles audio in memory (ComfyUI's AUDIO values, the mel,
the encoder) does not depend on the container code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchaudio

from ..errors import AudioError, InvalidInputError

SAMPLE_RATE = 16000  # ImageBind's audio rate: everything is resampled to it before the mel


@dataclass
class Waveform:
    """Float32 audio, channels first."""

    samples: torch.Tensor  # (channels, T) float32
    sample_rate: int

    def __post_init__(self) -> None:
        if not isinstance(self.samples, torch.Tensor) or self.samples.ndim != 2:
            shape = tuple(self.samples.shape) if isinstance(self.samples, torch.Tensor) else type(self.samples)
            raise InvalidInputError(f"Waveform samples must be a (channels, samples) tensor, got {shape}.")
        if not self.samples.is_floating_point():
            raise InvalidInputError(f"Waveform samples must be floating point, got {self.samples.dtype}.")
        self.samples = self.samples.to(torch.float32)
        self.sample_rate = check_rate(self.sample_rate, "Waveform sample_rate")

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    def to_mono(self) -> "Waveform":
        return Waveform(mix_to_mono(self.samples), self.sample_rate)

    def resampled(self, sample_rate: int) -> "Waveform":
        return Waveform(resample(self.samples, self.sample_rate, sample_rate), sample_rate)


def check_rate(rate: Any, what: str) -> int:
    """``rate`` as an int, or an error naming ``what`` when it is not a positive whole number of Hz."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or int(rate) <= 0:
        raise InvalidInputError(f"{what} must be a positive whole number of Hz, got {rate!r}.")
    return int(rate)


def check_finite(samples: torch.Tensor, where: str, sample_rate: int | None = None) -> None:
    """Refuse NaN/inf samples instead of silently zeroing them.

    A NaN in the input turns every mel bin and every audio token it touches into NaN, which poisons the whole
    video; replacing it with silence would hide a broken upstream node. The error names where the bad samples
    came from and, when the rate is known, the time of the first one.
    """
    bad = ~torch.isfinite(samples)
    if not bool(bad.any()):
        return
    n_nan = int(torch.isnan(samples).sum())
    n_inf = int(bad.sum()) - n_nan
    first = int(bad.reshape(-1, samples.shape[-1]).any(dim=0).nonzero()[0]) if samples.ndim else 0
    at = f" (first at {first / sample_rate:.3f} s)" if sample_rate else f" (first at sample {first})"
    raise AudioError(
        f"{where} contains {n_nan} NaN and {n_inf} infinite sample value(s){at}. Audio must be finite; "
        "check the node or file that produced it (clip or normalise it before it reaches AVSync)."
    )


def mix_to_mono(samples: torch.Tensor) -> torch.Tensor:
    """(C, T) or (T,) -> (1, T), the average of the channels (returned as is when already mono)."""
    if samples.ndim == 1:
        return samples.unsqueeze(0)
    if samples.ndim != 2:
        raise InvalidInputError(f"Expected audio shaped (channels, samples), got {tuple(samples.shape)}.")
    if samples.shape[0] == 1:
        return samples
    return samples.mean(dim=0, keepdim=True)


def resample(samples: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """Band-limited resampling along the last axis (torchaudio's sinc filter, the official code's choice)."""
    orig = check_rate(orig, "Original sample rate")
    new = check_rate(new, "Target sample rate")
    if orig == new:
        return samples
    if not samples.is_floating_point():
        raise InvalidInputError(f"Only floating point audio can be resampled, got {samples.dtype}.")
    return torchaudio.functional.resample(samples, orig, new)
