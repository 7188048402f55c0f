"""Inputs of the official synchronisation metrics: 12 frames at 6 fps and the centre 2 s of sound.

The classifier and AlignSync were trained and evaluated on exactly this clip shape, so a clip of another
length is refused rather than stretched: the fix is to resample it to 12 frames at 6 fps. Frames go through the
official transform (both sides resized to 224 with antialiased bicubic, so the aspect ratio is NOT kept, a
no-op 224 centre crop, CLIP normalisation); sound is resampled to 16 kHz and turned into ImageBind's log-mel.
"""

from __future__ import annotations

import torch
from torchvision import transforms

from ..audio import SAMPLE_RATE, melspectrogram, resample
from ..errors import InvalidInputError

CLIP_FRAMES = 12
CLIP_FPS = 6.0
IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MEL_SHAPE = (1, 128, 204)
_RANGE_SLACK = 1e-3  # frames decoded or resized in float may stray this far outside [0, 1]


def check_video(video: torch.Tensor, name: str = "video") -> torch.Tensor:
    """(b, 3, 12, h, w) float frames in [0, 1], as the metrics take them; anything else is a clear error."""
    if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise InvalidInputError(f"{name} must be RGB clips shaped (batch, 3, frames, height, width), got {shape}.")
    frames = video.shape[2]
    if frames != CLIP_FRAMES:
        raise InvalidInputError(
            f"{name} has {frames} frames; the synchronisation metrics take exactly {CLIP_FRAMES} frames at "
            f"{CLIP_FPS:g} fps (2 s), as the official evaluation does. Resample the clip to {CLIP_FRAMES} frames at "
            f"{CLIP_FPS:g} fps (for a longer animation, score each 2 s window)."
        )
    if not video.is_floating_point():
        raise InvalidInputError(f"{name} must hold float frames in [0, 1], got {video.dtype}; divide uint8 by 255.")
    if not bool(torch.isfinite(video).all()):
        raise InvalidInputError(f"{name} contains NaN or infinite values.")
    low, high = float(video.min()), float(video.max())
    if low < -_RANGE_SLACK or high > 1.0 + _RANGE_SLACK:
        raise InvalidInputError(
            f"{name} must hold frames in [0, 1], but its values span [{low:.3g}, {high:.3g}]; "
            "divide 0-255 frames by 255."
        )
    return video


def check_reference(reference: torch.Tensor, video: torch.Tensor, name: str) -> torch.Tensor:
    """A reference clip must have the generated clip's batch, frame count and size."""
    check_video(reference, name)
    if tuple(reference.shape) != tuple(video.shape):
        raise InvalidInputError(
            f"{name} is shaped {tuple(reference.shape)} but the generated video is {tuple(video.shape)}; "
            "the reference must have the same batch, 12 frames and the same frame size."
        )
    return reference


def check_mel(mel: torch.Tensor, name: str = "mel") -> torch.Tensor:
    if not isinstance(mel, torch.Tensor) or mel.ndim != 4 or tuple(mel.shape[1:]) != MEL_SHAPE:
        shape = tuple(mel.shape) if isinstance(mel, torch.Tensor) else type(mel).__name__
        raise InvalidInputError(
            f"{name} must be ImageBind log-mels shaped (batch, 1, 128, 204), got {shape}; use audio_to_mel()."
        )
    return mel


def preprocess_video(video: torch.Tensor) -> torch.Tensor:
    """(b, 3, 12, h, w) in [0, 1] -> (b, 3, 12, 224, 224) CLIP-normalised, per frame, the official transform."""
    check_video(video)
    b, c, f, h, w = video.shape
    transform = transforms.Compose(
        [
            transforms.Resize(
                (IMAGE_SIZE, IMAGE_SIZE), interpolation=transforms.InterpolationMode.BICUBIC, antialias=True
            ),
            transforms.CenterCrop(IMAGE_SIZE),
            transforms.Normalize(mean=CLIP_MEAN, std=CLIP_STD),
        ]
    )
    frames = transform(video.float().permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w))
    return frames.reshape(b, f, c, IMAGE_SIZE, IMAGE_SIZE).permute(0, 2, 1, 3, 4).contiguous()


def audio_to_mel(samples: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Mono (T,) or (1, T) audio at any rate -> (1, 128, 204): resample to 16 kHz, then the centre 2 s log-mel.

    Several channels are averaged first (the official mel takes one channel).
    """
    if not isinstance(samples, torch.Tensor) or samples.ndim not in (1, 2) or samples.shape[-1] == 0:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise InvalidInputError(f"Audio must be a (samples,) or (channels, samples) tensor, got {shape}.")
    if samples.ndim == 2 and samples.shape[0] > 1:
        samples = samples.mean(dim=0, keepdim=True)
    return melspectrogram(resample(samples.float().reshape(1, -1), sample_rate, SAMPLE_RATE), SAMPLE_RATE)
