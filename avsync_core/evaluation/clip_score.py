"""Every synchronisation metric of one generated clip held in memory, for hosts that have frames, not files.

A host (the ComfyUI node) has the animation as channels-last frames (F, H, W, 3) in [0, 1] and its sound as a
waveform. This cuts the clip's 2 s of sound (from ``audio_start``, where the clip's audio window began), runs
the classifier once for the AVSync score and each RelSync, ImageBind for AlignSync, and AV-Align on the same
frames and sound, and returns everything the plot needs. The metrics are the official ones
(:mod:`.metrics`, :mod:`.av_align`); only the inputs are gathered here. Errors name the inputs as
``images``, ``audio``, ``reference_images`` and ``reference_audio``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidInputError
from .av_align import AVAlignResult, av_align
from .classifier import AVSyncClassifier
from .imagebind import ImageBindImageAudio
from .metrics import alignsync, avsync_scores, relsync
from .preprocess import CLIP_FPS, CLIP_FRAMES, audio_to_mel, check_video

CLIP_SECONDS = CLIP_FRAMES / CLIP_FPS
STEPS = 4  # progress steps: AVSync score, RelSync against the audio, against the video (+ AlignSync), AV-Align

Progress = Callable[[int, int], None]


@dataclass
class ClipScores:
    """NaN marks a metric that needs an input that was not given (a reference, ImageBind)."""

    avsync_score: float
    relsync_video: float  # against reference_images (same sound)
    relsync_audio: float  # against reference_audio (same video)
    alignsync: float  # needs reference_images and ImageBind
    av_align: AVAlignResult

    def named(self) -> dict[str, float]:
        """The computed scores under their display names, in reading order."""
        scores = {
            "AVSync score": self.avsync_score,
            "RelSync (ref. video)": self.relsync_video,
            "RelSync (ref. audio)": self.relsync_audio,
            "AlignSync": self.alignsync,
            "AV-Align": self.av_align.score,
        }
        return {name: value for name, value in scores.items() if not math.isnan(value)}


def frames_to_clip(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """(F, H, W, 3) frames in [0, 1] -> the metrics' (1, 3, F, H, W); 12 frames, checked with the fix."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InvalidInputError(f"{name} must be frames shaped (frames, height, width, 3), got {shape}.")
    return check_video(images[..., :3].permute(3, 0, 1, 2).unsqueeze(0).float().cpu(), name)


def clip_sound(samples: torch.Tensor, sample_rate: int, start: float, name: str = "audio") -> torch.Tensor:
    """(C, T) or (T,) waveform -> (T',) mono: the clip's 2 s from ``start`` seconds (shorter if the sound ends)."""
    if not isinstance(samples, torch.Tensor) or samples.ndim not in (1, 2) or samples.shape[-1] == 0:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise InvalidInputError(f"{name} must be a non-empty (channels, samples) waveform, got {shape}.")
    mono = samples.float().reshape(-1, samples.shape[-1]).mean(dim=0)
    duration = mono.shape[0] / sample_rate
    if not (math.isfinite(start) and 0 <= start < duration):
        raise InvalidInputError(
            f"{name} is {duration:.2f} s long, so the clip cannot start at {start:g} s; give the start of the audio "
            "window the clip was made from (0 for the first clip)."
        )
    first = round(start * sample_rate)
    return mono[first : first + round(CLIP_SECONDS * sample_rate)]


def _uint8_frames(clip: torch.Tensor) -> np.ndarray:
    """(1, 3, F, H, W) in [0, 1] -> (F, H, W, 3) uint8, quantised as an image or video file would store it."""
    return (clip[0].permute(1, 2, 3, 0).clamp(0, 1) * 255.0).to(torch.uint8).numpy()


def score_clip(
    classifier: AVSyncClassifier,
    images: torch.Tensor,
    samples: torch.Tensor,
    sample_rate: int,
    *,
    audio_start: float = 0.0,
    imagebind: ImageBindImageAudio | None = None,
    reference_images: torch.Tensor | None = None,
    reference_samples: torch.Tensor | None = None,
    reference_rate: int | None = None,
    progress: Progress | None = None,
) -> ClipScores:
    """All metrics of one 12-frame clip at 6 fps with its sound (and optional references)."""
    step = progress or (lambda done, total: None)
    step(0, STEPS)  # a host may stop here before any model runs
    video = frames_to_clip(images)
    sound = clip_sound(samples, sample_rate, audio_start)
    mel = audio_to_mel(sound, sample_rate)[None]
    reference = None
    if reference_images is not None:
        reference = frames_to_clip(reference_images, "reference_images")
        if reference.shape != video.shape:
            raise InvalidInputError(
                f"reference_images are {tuple(reference_images.shape)} but images are {tuple(images.shape)}; the "
                "reference must be 12 frames of the same size (scale one of them to the other's size)."
            )
    score = float(avsync_scores(classifier, mel, video)[0])
    step(1, STEPS)
    relsync_video = relsync_audio = alignsync_value = math.nan
    if reference_samples is not None:
        reference_sound = clip_sound(reference_samples, reference_rate, 0.0, "reference_audio")
        ref_mel = audio_to_mel(reference_sound, reference_rate)[None]
        relsync_audio = float(relsync(classifier, mel, video, ref_mel=ref_mel)[0])
    step(2, STEPS)
    if reference is not None and imagebind is not None:
        result = alignsync(classifier, imagebind, mel, video, reference)  # its RelSync is the one against the video
        relsync_video, alignsync_value = float(result.relsync[0]), float(result.alignsync[0])
    elif reference is not None:
        relsync_video = float(relsync(classifier, mel, video, ref_video=reference)[0])
    step(3, STEPS)
    aligned = av_align(_uint8_frames(video), CLIP_FPS, sound.numpy(), sample_rate)
    step(4, STEPS)
    return ClipScores(score, relsync_video, relsync_audio, alignsync_value, aligned)
