"""AV-Align, the weight-free synchronisation metric of TempoTokens (Yariv et al., ``av_align.py``).

Audio peaks are librosa's onsets (``onset_detect`` on ``onset_strength`` of the sound resampled to 22050 Hz
mono, as ``librosa.load`` gives it); video peaks are the local maxima (strictly above both neighbours and at
least 0.1) of the mean Farneback optical-flow magnitude between consecutive grayscale frames, at time
index / fps. The score is the IoU of the two peak sets, where an audio peak matches the first unused video peak
closer than one frame. Every clip length and frame rate works; the whole clip is used.

As in TempoTokens, the flow trajectory has one entry per frame: entry 0 repeats the flow of frames 0 -> 1, so a
motion between the first two frames can never be a peak.

**Silence and stillness.** TempoTokens divides by zero when neither stream has a peak (silent audio and a still
video). Here that case scores 0.0: nothing is aligned, and a clip with no events cannot show synchronisation.
Silent audio with a moving video (or the reverse) also scores 0.0, as the formula gives.

librosa and OpenCV do the signal processing, exactly as TempoTokens calls them. They are optional
dependencies (``pip install "comfyui-avsync[eval]"``), imported only here.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from ..audio import decode_audio
from ..errors import AVSyncError, InvalidInputError

LIBROSA_RATE = 22050  # librosa.load's default rate, which TempoTokens uses
MIN_FLOW_PEAK = 0.1
_FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2, "flags": 0}


@dataclass
class AVAlignResult:
    score: float
    audio_peaks: list[float]  # seconds
    video_peaks: list[float]  # seconds
    flow: list[float]  # mean flow magnitude per frame (entry 0 = flow of frames 0 -> 1)
    fps: float
    onset_strength: np.ndarray  # librosa's onset envelope, for plotting
    onset_times: np.ndarray  # seconds of each envelope value
    matches: list[tuple[float, float]]  # (audio peak, video peak) pairs counted in the intersection


def _optional(name: str) -> ModuleType:
    try:
        if name == "cv2":
            import cv2 as module
        else:
            import librosa as module
    except ImportError as exc:
        package = "opencv-python-headless" if name == "cv2" else "librosa"
        raise AVSyncError(
            f"AV-Align needs {package}, which is not installed ({exc}). Install the evaluation extras: "
            'pip install "comfyui-avsync[eval]" (in ComfyUI: pip install librosa opencv-python-headless, with '
            "ComfyUI's Python)"
        ) from None
    return module


# ------------------------------------------------------------------------------------------------ audio


@dataclass
class AudioOnsets:
    peaks: list[float]
    strength: np.ndarray
    times: np.ndarray


def audio_onsets(samples: torch.Tensor | np.ndarray, sample_rate: int) -> AudioOnsets:
    """Onset times (s) of a (T,) or (channels, T) waveform, with the onset-strength envelope they come from."""
    librosa = _optional("librosa")
    y = samples.detach().cpu().float().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples, np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)  # librosa.to_mono
    if y.ndim != 1 or y.size == 0:
        raise InvalidInputError(
            f"AV-Align needs a non-empty (samples,) or (channels, samples) waveform, got {y.shape}."
        )
    if not np.isfinite(y).all():
        raise InvalidInputError("The audio given to AV-Align contains NaN or infinite samples.")
    y = np.ascontiguousarray(y, dtype=np.float32)
    if sample_rate != LIBROSA_RATE:
        y = librosa.resample(y, orig_sr=sample_rate, target_sr=LIBROSA_RATE, res_type="soxr_hq")
    strength = librosa.onset.onset_strength(y=y, sr=LIBROSA_RATE)
    frames = librosa.onset.onset_detect(onset_envelope=strength, sr=LIBROSA_RATE)
    peaks = librosa.frames_to_time(frames, sr=LIBROSA_RATE)
    times = librosa.times_like(strength, sr=LIBROSA_RATE)
    return AudioOnsets([float(t) for t in peaks], strength, times)


# ------------------------------------------------------------------------------------------------ video


def read_video_bgr(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """All frames (F, H, W, 3) BGR uint8 and the frame rate, decoded by OpenCV as TempoTokens does."""
    cv2 = _optional("cv2")
    p = Path(os.fspath(path))
    if not p.is_file():
        raise InvalidInputError(f"Video file {p} does not exist.")
    capture = cv2.VideoCapture(str(p))
    try:
        if not capture.isOpened():
            raise InvalidInputError(f"OpenCV cannot open {p} as a video.")
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    if not frames:
        raise InvalidInputError(f"{p}: OpenCV decoded no frames.")
    if not fps > 0:
        raise InvalidInputError(f"{p}: the file gives no frame rate; AV-Align needs one to place the peaks in time.")
    return np.stack(frames), fps


def flow_trajectory(frames: np.ndarray, order: str = "rgb") -> list[float]:
    """Mean Farneback flow magnitude per frame of (F, H, W, 3) uint8 frames (``order`` "rgb" or "bgr")."""
    cv2 = _optional("cv2")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InvalidInputError(
            f"AV-Align takes (frames, height, width, 3) uint8 frames, got {frames.shape} {frames.dtype}."
        )
    if len(frames) < 2:
        raise InvalidInputError(f"AV-Align needs at least 2 frames to measure motion, got {len(frames)}.")
    if order not in ("rgb", "bgr"):
        raise InvalidInputError(f'order must be "rgb" or "bgr", got {order!r}.')
    code = cv2.COLOR_RGB2GRAY if order == "rgb" else cv2.COLOR_BGR2GRAY
    gray = [cv2.cvtColor(np.ascontiguousarray(frame), code) for frame in frames]
    flow = []
    for prev, curr in itertools.pairwise(gray):
        field = cv2.calcOpticalFlowFarneback(prev, curr, None, **_FARNEBACK)
        flow.append(float(cv2.mean(cv2.magnitude(field[..., 0], field[..., 1]))[0]))
    return [flow[0], *flow]


def video_peaks(flow: list[float], fps: float) -> list[float]:
    """Times (s) of the flow's strict local maxima that reach 0.1."""
    return [
        i / fps for i in range(1, len(flow) - 1) if flow[i - 1] < flow[i] > flow[i + 1] and flow[i] >= MIN_FLOW_PEAK
    ]


# ------------------------------------------------------------------------------------------------ score


def match_peaks(audio_peaks: list[float], video_peaks_s: list[float], fps: float) -> list[tuple[float, float]]:
    """Each audio peak takes the first unused video peak strictly within one frame of it."""
    used = [False] * len(video_peaks_s)
    pairs = []
    for audio_peak in audio_peaks:
        for j, video_peak in enumerate(video_peaks_s):
            if not used[j] and video_peak - 1 / fps < audio_peak < video_peak + 1 / fps:
                used[j] = True
                pairs.append((audio_peak, video_peak))
                break
    return pairs


def peak_iou(audio_peaks: list[float], video_peaks_s: list[float], fps: float) -> float:
    """Matched peaks / (audio peaks + video peaks - matched); 0.0 when neither stream has a peak."""
    return _iou(len(match_peaks(audio_peaks, video_peaks_s, fps)), len(audio_peaks), len(video_peaks_s))


def _iou(matched: int, audio: int, video: int) -> float:
    union = audio + video - matched
    return matched / union if union else 0.0


def av_align(
    frames: np.ndarray, fps: float, samples: torch.Tensor | np.ndarray, sample_rate: int, order: str = "rgb"
) -> AVAlignResult:
    """AV-Align of (F, H, W, 3) uint8 frames at ``fps`` with their sound."""
    if not fps or not np.isfinite(fps) or fps <= 0:
        raise InvalidInputError(f"fps must be a positive number, got {fps!r}.")
    onsets = audio_onsets(samples, sample_rate)
    flow = flow_trajectory(frames, order)
    peaks = video_peaks(flow, fps)
    matches = match_peaks(onsets.peaks, peaks, fps)
    score = _iou(len(matches), len(onsets.peaks), len(peaks))
    return AVAlignResult(score, onsets.peaks, peaks, flow, float(fps), onsets.strength, onsets.times, matches)


def av_align_file(video: str | os.PathLike, audio: str | os.PathLike | None = None) -> AVAlignResult:
    """AV-Align of a video file (decoded by OpenCV) with its own sound track or a separate audio file."""
    frames, fps = read_video_bgr(video)
    sound = decode_audio(audio if audio is not None else video, sample_rate=None, mono=True)
    return av_align(frames, fps, sound.samples[0], sound.sample_rate, order="bgr")
