"""Clips from files, the way the official ``animation_eval.py`` loads them.

Frames are sampled at 6 fps from the clip start (the first frame shown at or after each time), centre-cropped
to a square and resized to ``image_size`` (256, the official evaluation size); the metrics' own 224 transform
comes after. The sound of the same 2 s is decoded at 16 kHz and turned into the log-mel. A generated clip
must hold exactly 12 frames at 6 fps; a ground-truth video is any length, and ``num_clips`` 2 s clips are
taken uniformly from it (the centre one when only one is asked for).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import SAMPLE_RATE, decode_audio, melspectrogram
from ..errors import InvalidInputError
from ..video import center_crop_resize, probe_video, read_frames
from .preprocess import CLIP_FPS, CLIP_FRAMES, audio_to_mel

CLIP_SECONDS = CLIP_FRAMES / CLIP_FPS
EVAL_IMAGE_SIZE = 256
_FPS_TOLERANCE = 1e-3


@dataclass
class Clip:
    video: torch.Tensor  # (3, 12, S, S) float in [0, 1]
    mel: torch.Tensor  # (1, 128, 204)


def _frames(path: Path, start: float, image_size: int) -> torch.Tensor:
    images = read_frames(path, start + np.arange(CLIP_FRAMES) / CLIP_FPS)  # (12, H, W, 3) uint8
    frames = torch.stack(
        [center_crop_resize(torch.from_numpy(im).permute(2, 0, 1)[None], image_size)[0] for im in images]
    )
    return frames.permute(1, 0, 2, 3).contiguous()


def _clip_mel(path: Path, start: float) -> torch.Tensor:
    return melspectrogram(decode_audio(path, start, CLIP_SECONDS, sample_rate=SAMPLE_RATE, mono=True).samples)


def check_generated_clip(path: str | os.PathLike, needs_sound: bool = False) -> None:
    """A generated clip must be the metrics' unit: 12 frames at 6 fps (with a sound track if ``needs_sound``)."""
    p = Path(os.fspath(path))
    info = probe_video(p)
    if needs_sound and not info.has_audio:
        raise InvalidInputError(f"{p} has no sound track; give the clip's audio with --audio.")
    frames = round(info.video_duration * info.fps) if info.fps else 0
    if info.fps is None or abs(info.fps - CLIP_FPS) > _FPS_TOLERANCE or frames != CLIP_FRAMES:
        rate = f"{info.fps:g} fps" if info.fps else "an unknown frame rate"
        raise InvalidInputError(
            f"{p} holds {frames} frames at {rate} ({info.video_duration:.2f} s); the synchronisation metrics take "
            f"exactly {CLIP_FRAMES} frames at {CLIP_FPS:g} fps (2 s), as the official evaluation does. Resample it to "
            f"{CLIP_FRAMES} frames at {CLIP_FPS:g} fps (e.g. ffmpeg -i in.mp4 -vf fps=6 -frames:v 12 out.mp4), or "
            "score each 2 s window of a longer animation separately."
        )


def load_generated_clip(
    path: str | os.PathLike, audio: str | os.PathLike | None = None, image_size: int = EVAL_IMAGE_SIZE
) -> Clip:
    """A generated 12-frame clip with its own sound track, or with the centre 2 s of a separate audio file."""
    p = Path(os.fspath(path))
    check_generated_clip(p, needs_sound=audio is None)
    frames = _frames(p, 0.0, image_size)
    if audio is not None:
        sound = decode_audio(audio, sample_rate=None, mono=True)
        return Clip(frames, audio_to_mel(sound.samples, sound.sample_rate))
    return Clip(frames, _clip_mel(p, 0.0))


def clip_starts(duration: float, clips: int, clip_seconds: float = CLIP_SECONDS) -> list[float]:
    """Start times of ``clips`` clips spread uniformly over ``duration`` seconds (the centre one for a single
    clip), as the official generation and evaluation place them; a source shorter than a clip gives starts at 0."""
    span = max(duration - clip_seconds, 0.0)
    if clips == 1:
        return [span / 2.0]
    return [float(t) for t in np.linspace(0.0, span, num=clips, endpoint=True)]


def reference_clip_starts(path: str | os.PathLike, num_clips: int) -> list[float]:
    """Start times of ``num_clips`` 2 s clips spread uniformly over a ground-truth video (the official sampling)."""
    p = Path(os.fspath(path))
    info = probe_video(p)
    if not info.has_audio:
        raise InvalidInputError(f"Reference video {p} has no sound track; the ground truth needs its own audio.")
    duration = info.duration
    if duration < CLIP_SECONDS - 1e-6:
        raise InvalidInputError(f"Reference video {p} is {duration:.2f} s long; a clip takes {CLIP_SECONDS:g} s.")
    return clip_starts(duration, num_clips)


def load_reference_clip(path: str | os.PathLike, start: float, image_size: int = EVAL_IMAGE_SIZE) -> Clip:
    """12 frames at 6 fps from ``start`` and the sound of the same 2 s."""
    p = Path(os.fspath(path))
    if not math.isfinite(start) or start < 0:
        raise InvalidInputError(f"Clip start must be a time >= 0 s, got {start!r}.")
    return Clip(_frames(p, start, image_size), _clip_mel(p, start))


def load_reference_video(path: str | os.PathLike, image_size: int = EVAL_IMAGE_SIZE) -> torch.Tensor:
    """A reference clip for the single-clip metrics: like a generated clip, 12 frames at 6 fps."""
    p = Path(os.fspath(path))
    check_generated_clip(p)
    return _frames(p, 0.0, image_size)
