"""ComfyUI's AUDIO value (``{"waveform": (B, C, T) tensor, "sample_rate": int}``) to and from a Waveform.

A plain dict conversion, so it lives in the host-free library and every AUDIO producer (core Load Audio, video
loaders, this pack's loader) feeds the encoder the same way.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..errors import InvalidInputError
from .waveform import SAMPLE_RATE, Waveform, check_finite, check_rate, mix_to_mono, resample


def to_comfy_audio(waveform: Waveform) -> dict:
    """ComfyUI's AUDIO value: {"waveform": (1, C, T) float32 CPU tensor, "sample_rate": int}."""
    return {
        "waveform": waveform.samples.detach().to("cpu", torch.float32).unsqueeze(0).contiguous(),
        "sample_rate": int(waveform.sample_rate),
    }


def from_comfy_audio(
    audio: Mapping[str, Any],
    index: int = 0,
    sample_rate: int | None = SAMPLE_RATE,
    mono: bool = True,
) -> Waveform:
    """Item ``index`` of a ComfyUI AUDIO batch, mixed to mono and resampled (None keeps its rate)."""
    if not isinstance(audio, Mapping) or "waveform" not in audio or "sample_rate" not in audio:
        raise InvalidInputError(
            'Expected a ComfyUI AUDIO value, a dict {"waveform": tensor [batch, channels, samples], '
            f'"sample_rate": int}}; got {type(audio).__name__}'
            + (f" with keys {sorted(audio)}" if isinstance(audio, Mapping) else "")
            + "."
        )
    wave = audio["waveform"]
    rate = check_rate(audio["sample_rate"], "AUDIO sample_rate")
    if not isinstance(wave, torch.Tensor):
        raise InvalidInputError(f'AUDIO "waveform" must be a torch tensor, got {type(wave).__name__}.')
    if wave.ndim != 3:
        raise InvalidInputError(f'AUDIO "waveform" must be shaped [batch, channels, samples], got {tuple(wave.shape)}.')
    batch, channels, length = wave.shape
    if channels > 64 and length <= 8:
        raise InvalidInputError(
            f'AUDIO "waveform" {tuple(wave.shape)} looks like [batch, samples, channels]; ComfyUI uses '
            "[batch, channels, samples]."
        )
    if batch == 0 or channels == 0 or length == 0:
        raise InvalidInputError(f'AUDIO "waveform" is empty: shape {tuple(wave.shape)}.')
    if not wave.is_floating_point():
        raise InvalidInputError(f'AUDIO "waveform" must be floating point in [-1, 1], got {wave.dtype}.')
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < batch:
        raise InvalidInputError(f"AUDIO batch index {index!r} is out of range: the batch holds {batch} item(s).")
    samples = wave[index].detach().to("cpu", torch.float32)
    check_finite(samples, f"AUDIO item {index}", rate)
    if mono:
        samples = mix_to_mono(samples)
    if sample_rate is not None:
        samples = resample(samples, rate, check_rate(sample_rate, "sample_rate"))
        rate = sample_rate
    return Waveform(samples, rate)
