"""ImageBind's log-mel input, computed exactly as the official AVSyncD data pipeline does.

A one-frame shift here moves every audio token, and the segment masks then hand each video frame the wrong
slice of sound, so every step below mirrors the reference: centre crop of longer clips, no sample padding of
shorter ones, Kaldi filterbank with ImageBind's settings, zero padding in the log domain, then normalisation.
Unlike the reference, the caller's waveform is never modified (the reference subtracts the mean in place).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torchaudio

from ..errors import AudioError, InvalidInputError
from .waveform import SAMPLE_RATE, check_finite

NUM_MEL_BINS = 128
TARGET_FRAMES = 204
MEL_MEAN = -4.268
MEL_STD = 9.138
CLIP_SECONDS = 2.0
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0


def min_samples(sample_rate: int = SAMPLE_RATE) -> int:
    """Shortest input that yields one filterbank frame (one 25 ms window)."""
    return int(sample_rate * FRAME_LENGTH_MS / 1000.0)


def _as_row(samples: torch.Tensor) -> torch.Tensor:
    if not isinstance(samples, torch.Tensor):
        raise InvalidInputError(f"Expected a waveform tensor, got {type(samples).__name__}.")
    if samples.ndim == 1:
        samples = samples.unsqueeze(0)
    if samples.ndim != 2 or samples.shape[0] != 1:
        raise InvalidInputError(
            f"The mel input must be mono, shaped (T,) or (1, T); got {tuple(samples.shape)}. "
            "Mix it to mono first (mix_to_mono)."
        )
    if not samples.is_floating_point():
        raise InvalidInputError(f"The waveform must be floating point, got {samples.dtype}.")
    return samples.to(torch.float32)


def melspectrogram(
    samples: torch.Tensor, sample_rate: int = SAMPLE_RATE, clip_seconds: float = CLIP_SECONDS
) -> torch.Tensor:
    """Mono waveform -> normalised log-mel (1, 128, 204), the official ``waveform_to_melspectrogram``.

    Longer input is centre-cropped to ``clip_seconds`` (start (N - target) // 2). Shorter input is not padded in
    samples: it gives fewer filterbank frames, and the missing frames are zeros in the log domain (+0.467 after
    normalisation), exactly as the reference. Input shorter than one 25 ms window has no frame at all and is
    refused.
    """
    row = _as_row(samples)
    check_finite(row, "The waveform given to melspectrogram", sample_rate)
    target = int(clip_seconds * sample_rate)
    if target <= 0:
        raise InvalidInputError(f"clip_seconds must be positive, got {clip_seconds!r}.")
    length = row.shape[1]
    start = (length - target) // 2 if length > target else 0
    clip = row[:, start : start + target]
    if clip.shape[1] < min_samples(sample_rate):
        raise AudioError(
            f"The audio is {clip.shape[1]} samples ({1000.0 * clip.shape[1] / sample_rate:.1f} ms) long; at least "
            f"{min_samples(sample_rate)} samples (one 25 ms window) are needed for a mel frame."
        )
    clip = clip - clip.mean()
    fbank = torchaudio.compliance.kaldi.fbank(
        clip,
        htk_compat=True,
        sample_frequency=sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=NUM_MEL_BINS,
        dither=0.0,
        frame_length=FRAME_LENGTH_MS,
        frame_shift=FRAME_SHIFT_MS,
    ).transpose(0, 1)
    missing = TARGET_FRAMES - fbank.shape[1]
    if missing > 0:
        fbank = torch.nn.functional.pad(fbank, (0, missing), mode="constant", value=0.0)
    else:
        fbank = fbank[:, :TARGET_FRAMES]
    return ((fbank - MEL_MEAN) / MEL_STD).unsqueeze(0)


def melspectrogram_batch(
    waveforms: torch.Tensor | Sequence[torch.Tensor],
    sample_rate: int = SAMPLE_RATE,
    clip_seconds: float = CLIP_SECONDS,
) -> torch.Tensor:
    """A list of mono waveforms (any lengths), or a (b, T) / (b, 1, T) tensor -> (b, 1, 128, 204)."""
    if isinstance(waveforms, torch.Tensor):
        if waveforms.ndim == 3 and waveforms.shape[1] == 1:
            waveforms = waveforms[:, 0]
        if waveforms.ndim != 2:
            raise InvalidInputError(
                f"Expected a batch of mono waveforms shaped (b, T) or (b, 1, T), got {tuple(waveforms.shape)}."
            )
        waveforms = list(waveforms)
    if len(waveforms) == 0:
        raise InvalidInputError("melspectrogram_batch got no waveforms.")
    return torch.stack([melspectrogram(w, sample_rate, clip_seconds) for w in waveforms])


def null_melspectrogram(
    batch: int = 1, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The null audio input: an all-zero normalised mel (not the mel of silence), as the official pipeline uses."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InvalidInputError(f"batch must be a positive integer, got {batch!r}.")
    return torch.zeros(batch, 1, NUM_MEL_BINS, TARGET_FRAMES, device=device, dtype=dtype)
