"""Video files through PyAV: probe, read frames at chosen times with a seek, write an mp4 with sound.

Times are seconds from the container's start, FFmpeg's convention and the one ``audio.decode.decode_audio``
uses, so frames read here and sound decoded there for the same times stay in sync. Only the part of a file
around the requested times is decoded, because training videos can be long.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from .audio.waveform import Waveform, check_finite, resample
from .errors import InvalidInputError

# Seek this far before the first wanted frame, so that a frame whose timestamp is only just before the
# requested time (or a stream whose index is coarse) is not missed; earlier frames are dropped.
_SEEK_MARGIN_S = 0.25
# A frame whose timestamp equals a target time up to float noise counts as being at that time.
_TIME_EPS = 1e-6


@dataclass(frozen=True)
class VideoInfo:
    """What a file holds, read from its container metadata (nothing is decoded)."""

    width: int
    height: int
    fps: float | None
    video_duration: float
    has_audio: bool
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_duration: float | None = None

    @property
    def duration(self) -> float:
        """Seconds where both picture and sound exist (the official loader's min of the two)."""
        if self.audio_duration is None:
            return self.video_duration
        return min(self.video_duration, self.audio_duration)


def open_video(path: str | Path) -> av.container.InputContainer:
    """Open a file for reading; a missing or undecodable file becomes an InvalidInputError."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"Video file {path} does not exist.")
    try:
        container = av.open(str(path), "r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"Cannot read {path} as a video file ({exc}).") from exc
    if not container.streams.video:
        container.close()
        raise InvalidInputError(f"{path} has no video stream.")
    return container


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _stream_start(stream: av.stream.Stream) -> float:
    return _seconds(stream.start_time, stream.time_base) or 0.0


def _origin(container: av.container.InputContainer) -> float:
    return (container.start_time or 0) / av.time_base


def _stream_end(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    """Absolute end time of a stream; Matroska/WebM only know the container's duration."""
    length = _seconds(stream.duration, stream.time_base)
    if length is not None:
        return _stream_start(stream) + length
    if container.duration is None:
        return None
    return _origin(container) + container.duration / av.time_base


def probe_video(path: str | Path) -> VideoInfo:
    """Size, frame rate, durations and whether there is sound, from metadata only (fast)."""
    with open_video(path) as container:
        video = container.streams.video[0]
        origin = _origin(container)
        video_end = _stream_end(container, video)
        if video_end is None:
            raise InvalidInputError(f"{path}: the file does not say how long its video is.")
        rate = video.average_rate or video.guessed_rate
        info = dict(
            width=video.codec_context.width,
            height=video.codec_context.height,
            fps=float(rate) if rate else None,
            video_duration=video_end - origin,
            has_audio=bool(container.streams.audio),
        )
        if container.streams.audio:
            audio = container.streams.audio[0]
            audio_end = _stream_end(container, audio)
            info.update(
                audio_sample_rate=audio.codec_context.sample_rate,
                audio_channels=audio.codec_context.channels,
                audio_duration=None if audio_end is None else audio_end - origin,
            )
    return VideoInfo(**info)


def read_frames(path: str | Path, times: np.ndarray | list[float]) -> np.ndarray:
    """(F, H, W, 3) uint8: frame i is the first frame shown at or after ``times[i]`` (the official rule).

    ``times`` must increase. Decoding starts from a seek just before the first time; when the video ends
    first, its last frame is repeated.
    """
    times = np.asarray(times, dtype=np.float64)
    with open_video(path) as container:
        stream = container.streams.video[0]
        targets = _origin(container) + times
        container.seek(max(int((targets[0] - _SEEK_MARGIN_S) / stream.time_base), 0), stream=stream)
        frames: list[np.ndarray] = []
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            image = None
            # A source slower than the target rate serves several targets with one frame.
            while len(frames) < len(targets) and frame.time >= targets[len(frames)] - _TIME_EPS:
                if image is None:
                    image = frame.to_ndarray(format="rgb24")
                frames.append(image)
            if len(frames) == len(targets):
                break
    if not frames:
        raise InvalidInputError(f"{path}: no video frame could be decoded at or after {times[0]:.3f} s.")
    frames += [frames[-1]] * (len(targets) - len(frames))
    return np.stack(frames)


def center_crop_resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(F, 3, H, W) uint8 or float in [0, 1] -> (F, 3, size, size) float: the centre square, scaled to ``size``.

    The official training transform crops to the target's aspect ratio (the centre square, offset floored) and
    then applies torchvision's ``Resize(size)`` (bilinear, antialias: the ``interpolate`` call below) and
    ``CenterCrop(size)``, a no-op on the square. Resizing the whole frame first would shift the edges by a
    fraction of a pixel. Cropping before converting uint8 to float keeps the float copy small.
    """
    height, width = frames.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = frames[..., top : top + side, left : left + side]
    square = square.float().div_(255.0) if square.dtype == torch.uint8 else square.contiguous()
    if side == size:
        return square
    resized = F.interpolate(square, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized.clamp_(0.0, 1.0)


def _as_uint8_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        frames = frames.float().numpy() if frames.is_floating_point() else frames.numpy()
    frames = np.asarray(frames)
    if frames.ndim == 4 and frames.dtype == np.uint8 and frames.shape[-1] == 3:
        return frames
    if frames.ndim == 4 and np.issubdtype(frames.dtype, np.floating) and frames.shape[1] == 3:
        return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)
    raise InvalidInputError(
        f"Frames to write must be (F, H, W, 3) uint8 or (F, 3, H, W) float in [0, 1]; got shape "
        f"{tuple(frames.shape)} of {frames.dtype}."
    )


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides; repeat the last row/column rather than lose a pixel."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def write_video(
    path: str | Path,
    frames: np.ndarray | torch.Tensor,
    fps: float,
    audio: Waveform | None = None,
    *,
    video_codec: str | None = None,
    crf: int = 18,
) -> Path:
    """Write H.264 (or MPEG-4 Part 2 where libx264 is missing) yuv420p video with the sound muxed in as AAC.

    ``frames`` are (F, H, W, 3) uint8 or (F, 3, H, W) float in [0, 1]; odd sides are padded to even. The
    sound is written whole, whatever its length relative to the frames.
    """
    images = _pad_to_even(_as_uint8_frames(frames))
    if len(images) == 0:
        raise InvalidInputError("There are no frames to write.")
    if not fps > 0:
        raise InvalidInputError(f"fps must be positive, got {fps}.")
    sound = _aac_ready(audio) if audio is not None else None
    codec = video_codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=rate)
        video.height, video.width = images.shape[1:3]
        video.pix_fmt = "yuv420p"
        if codec == "libx264":
            video.options = {"crf": str(crf)}
        else:
            video.bit_rate = max(2_000_000, int(images.shape[1] * images.shape[2] * float(rate) * 2))
        audio_stream = None
        if sound is not None:
            audio_stream = container.add_stream("aac", rate=sound.sample_rate)
            audio_stream.layout = "mono" if sound.channels == 1 else "stereo"
        for index, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if audio_stream is not None:
            _encode_audio(container, audio_stream, sound)
    return path


def _aac_ready(audio: Waveform) -> Waveform:
    """Mono or stereo, finite, within [-1, 1], at a rate AAC can carry (else 48 kHz)."""
    if audio.channels not in (1, 2):
        raise InvalidInputError(f"Audio to write must be mono or stereo, got {audio.channels} channels.")
    samples = audio.samples.detach().to("cpu", torch.float32)
    check_finite(samples, "The audio to write", audio.sample_rate)
    rate = audio.sample_rate
    if rate not in (av.Codec("aac", "w").audio_rates or (rate,)):
        samples, rate = resample(samples, rate, 48000), 48000
    return Waveform(samples.clamp(-1.0, 1.0), rate)


def _encode_audio(container: av.container.OutputContainer, stream, audio: Waveform) -> None:
    samples = audio.samples.numpy()
    layout = "mono" if audio.channels == 1 else "stereo"
    chunk = stream.codec_context.frame_size or 1024
    for offset in range(0, samples.shape[1], chunk):
        piece = np.ascontiguousarray(samples[:, offset : offset + chunk])
        frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=layout)
        frame.sample_rate = audio.sample_rate
        frame.pts = offset
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
