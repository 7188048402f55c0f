"""Reading audio from anything FFmpeg can open.

The model wants 16 kHz mono. Users bring mp3s, phone videos and hour-long recordings, so decoding seeks to the
requested window instead of reading the file from the start, places every decoded frame by its timestamp (so
encoder priming, late-starting audio tracks and timestamp gaps land where the container says they belong), and
resamples a little more than the window so that, where the container's timestamps are sample-accurate, a window
cut from a file equals the same window cut from the whole decoded file.

Timeline: time 0 is the container's start time, which is FFmpeg's own convention (``ffmpeg -i x.mp3 x.wav``
starts at the same sample). An audio track that starts later than the container (a video whose sound begins
after its first picture) gets leading silence, so audio time t stays aligned with video time t.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
import numpy as np
import torch

from ..errors import AudioError, InvalidInputError, existing_path
from .waveform import SAMPLE_RATE, Waveform, check_finite, check_rate, resample

# Decoding a whole file is refused beyond this length: 30 min of 48 kHz audio is already ~350 MB of float32.
# Ask for a window (start/duration) instead, or raise the limit explicitly.
MAX_DECODE_SECONDS = 1800.0
# Lossy decoders need earlier packets to rebuild a frame (MP3 bit reservoir, AAC/Opus/Vorbis overlap), so a seek
# lands this far before the window and the extra samples are dropped.
_SEEK_PREROLL_SECONDS = 0.5
# Extra audio decoded on each side of a window before resampling; the resampling filter reaches < 1 ms.
_RESAMPLE_MARGIN_SECONDS = 0.01
_INT_SCALES = {"u8": 128.0, "s16": 32768.0, "s32": 2.0**31, "s64": 2.0**63}


def _check_seconds(value: Any, what: str, allow_zero: bool) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} must be a number of seconds, got {value!r}.") from None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidInputError(f"{what} must be a finite number of seconds {bound}, got {value!r}.")
    return seconds


# ----------------------------------------------------------------------------------------------- files


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise AudioError(
            f"FFmpeg cannot read {path} as an audio or video file ({err}). The file may be corrupt, truncated, "
            "or not a media file."
        ) from None


def _audio_stream(container: av.container.InputContainer, path: Path) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise AudioError(f"{path} has no audio stream (streams found: {', '.join(kinds)}).")
    stream = container.streams.audio[0]
    if stream.codec_context is None or not stream.codec_context.sample_rate:
        raise AudioError(f"{path}: the audio stream has no usable codec or sample rate; FFmpeg cannot decode it.")
    return stream


def _origin(container: av.container.InputContainer) -> Fraction:
    start = container.start_time
    return Fraction(start, av.time_base) if start is not None else Fraction(0)


def _frame_array(frame: av.AudioFrame, mono: bool) -> np.ndarray:
    """A decoded frame as float32 (channels, n), or (1, n) when mixing to mono."""
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T
    data = data[:, : frame.samples]
    name = frame.format.name.rstrip("p")
    if name in _INT_SCALES:
        offset = 128.0 if name == "u8" else 0.0
        data = (data.astype(np.float64) - offset) / _INT_SCALES[name]
    data = data.astype(np.float32, copy=False)
    if mono and data.shape[0] > 1:
        data = data.mean(axis=0, keepdims=True, dtype=np.float32)
    return data


@dataclass
class _Span:
    """Native-rate sample range [first, stop) to decode; stop None means to the end."""

    first: int
    stop: int | None


class _SeekMissed(Exception):
    """The demuxer landed after the wanted sample; decode from the start instead."""


def _collect(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    span: _Span,
    rate: int,
    mono: bool,
    seek: bool,
    max_samples: int,
    path: Path,
) -> tuple[list[tuple[int, np.ndarray]], int]:
    """Decode frames overlapping ``span``, each placed at its timestamp; returns (pieces, end of audio seen)."""
    origin = _origin(container)
    if seek:
        target = origin + Fraction(span.first, rate) - Fraction(_SEEK_PREROLL_SECONDS)
        container.seek(math.floor(target / stream.time_base), stream=stream, backward=True)
    # Timestamps are only as fine as the stream's time base (1 ms in Matroska), so frames that follow within
    # that jitter are taken as contiguous.
    tolerance = max(2, math.ceil(rate * (float(stream.time_base) + 0.001)))
    pieces: list[tuple[int, np.ndarray]] = []
    cursor: int | None = None
    furthest = 0
    channels: int | None = None
    for frame in _frames(container, stream):
        if frame.sample_rate != rate:
            raise AudioError(
                f"{path}: the audio changes sample rate mid-stream ({rate} -> {frame.sample_rate} Hz); "
                "convert it to a constant rate first."
            )
        pos = None if frame.pts is None else round((frame.pts * frame.time_base - origin) * rate)
        if cursor is None:
            if pos is None:
                if seek:
                    raise _SeekMissed
                pos = 0
            elif seek and pos > span.first + tolerance:
                raise _SeekMissed
        elif pos is None or abs(pos - cursor) <= tolerance:
            pos = cursor
        data = _frame_array(frame, mono)
        if channels is None:
            channels = data.shape[0]
        elif data.shape[0] != channels:
            raise AudioError(
                f"{path}: the number of channels changes mid-stream ({channels} -> {data.shape[0]}); "
                "decode it with mono=True or convert it first."
            )
        cursor = pos + data.shape[1]
        furthest = max(furthest, cursor)
        lo = max(pos, span.first)
        hi = cursor if span.stop is None else min(cursor, span.stop)
        if hi > lo:
            pieces.append((lo, data[:, lo - pos : hi - pos]))
        if cursor - span.first > max_samples:
            raise AudioError(
                f"{path}: more than {max_samples / rate:.0f} s of audio were requested in one piece. Decode a "
                "window with start/duration (long animations are encoded window by window), or raise max_seconds."
            )
        if span.stop is not None and cursor >= span.stop:
            break
    if seek and cursor is None:
        raise _SeekMissed  # nothing after the seek point: find out from the start where the audio ends
    return pieces, furthest


def _frames(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> Iterator[av.AudioFrame]:
    """Decoded frames; a packet the decoder rejects is skipped (its time becomes silence), as FFmpeg's tools do."""
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.InvalidDataError:
            continue
        yield from frames


def _assemble(pieces: list[tuple[int, np.ndarray]], first: int, stop: int, channels: int) -> torch.Tensor:
    """Join the decoded pieces; gaps between timestamps become silence, overlaps keep the later frame."""
    ends = [pos + data.shape[1] for pos, data in pieces]
    starts = [pos for pos, _ in pieces]
    if starts[0] == first and ends[-1] == stop and starts[1:] == ends[:-1]:
        return torch.from_numpy(np.concatenate([data for _, data in pieces], axis=1))
    out = np.zeros((channels, stop - first), dtype=np.float32)
    for pos, data in pieces:
        n = min(data.shape[1], stop - pos)
        out[:, pos - first : pos - first + n] = data[:, :n]
    return torch.from_numpy(out)


def decode_audio(
    path: str | os.PathLike,
    start: float = 0.0,
    duration: float | None = None,
    sample_rate: int | None = SAMPLE_RATE,
    mono: bool = True,
    *,
    max_seconds: float = MAX_DECODE_SECONDS,
) -> Waveform:
    """Decode ``duration`` seconds from ``start`` (to the end when None) of the first audio stream.

    The result is float32 (channels, T) at ``sample_rate`` (None keeps the file's rate), averaged to one channel
    when ``mono``. Only the window is decoded: the file is sought to just before ``start``. A window that runs past
    the end of the audio comes back shorter; a ``start`` at or past the end is an error.
    """
    p = existing_path(path, "Audio file", AudioError, file=True)
    start = _check_seconds(start, "start", allow_zero=True)
    if duration is not None:
        duration = _check_seconds(duration, "duration", allow_zero=False)
    max_seconds = _check_seconds(max_seconds, "max_seconds", allow_zero=False)
    if duration is not None and duration > max_seconds:
        raise InvalidInputError(
            f"duration {duration:.0f} s is above max_seconds ({max_seconds:.0f} s); decode it in windows."
        )
    with _open(p) as container:
        stream = _audio_stream(container, p)
        native = int(stream.codec_context.sample_rate)
        out_rate = native if sample_rate is None else check_rate(sample_rate, "sample_rate")
        span, keep_from, keep_to = _plan(start, duration, native, out_rate)
        declared = _declared_end(container, stream, native)
        if declared is not None and declared > 0:
            if round(start * native) >= declared:
                raise _past_end(p, start, declared / native)
            span.stop = declared if span.stop is None else min(span.stop, declared)
        max_samples = math.ceil((max_seconds + 1.0) * native)
        seek = span.first > _SEEK_PREROLL_SECONDS * native
        try:
            try:
                pieces, end = _collect(container, stream, span, native, mono, seek, max_samples, p)
            except (_SeekMissed, av.FFmpegError):
                if not seek:
                    raise
                container.seek(0)
                pieces, end = _collect(container, stream, span, native, mono, False, max_samples, p)
        except av.FFmpegError as err:
            raise AudioError(f"FFmpeg failed while decoding {p} ({err}); the file may be damaged.") from None
    stop = end if span.stop is None else min(end, span.stop)
    if not pieces or stop <= span.first:
        if end == 0:
            raise AudioError(f"{p}: the audio stream holds no decodable samples.")
        raise _past_end(p, start, end / native)
    channels = 1 if mono else pieces[0][1].shape[0]
    samples = _assemble(pieces, span.first, stop, channels)
    check_finite(samples, str(p), native)
    samples = resample(samples, native, out_rate)
    samples = samples[:, keep_from:keep_to]
    if samples.shape[1] == 0:
        raise _past_end(p, start, end / native)
    return Waveform(samples.contiguous(), out_rate)


def _past_end(path: Path, start: float, length: float) -> AudioError:
    return AudioError(f"{path}: start {start:.3f} s is at or past the end of the audio ({length:.3f} s long).")


def _plan(start: float, duration: float | None, native: int, out: int) -> tuple[_Span, int, int | None]:
    """Which native samples to decode, and which resampled samples to keep.

    The decoded span begins on the grid where native and output samples coincide (every native/gcd samples), so
    resampling it gives the very samples resampling the whole file would give at those times.
    """
    first_out = round(start * out)
    stop_out = None if duration is None else first_out + max(1, round(duration * out))
    if native == out:
        return _Span(first_out, stop_out), 0, None if stop_out is None else stop_out - first_out
    g = math.gcd(native, out)
    in_step, out_step = native // g, out // g
    margin = math.ceil(_RESAMPLE_MARGIN_SECONDS * out)
    block = max(0, first_out - margin) // out_step
    base = block * out_step
    stop = None if stop_out is None else -(-(stop_out + margin) // out_step) * in_step
    keep_to = None if stop_out is None else stop_out - base
    return _Span(block * in_step, stop), first_out - base, keep_to


def _declared_end(container: av.container.InputContainer, stream: av.audio.stream.AudioStream, rate: int) -> int | None:
    """End of the audio the container declares, in native samples on the decode timeline.

    Decoders emit whole codec frames, so AAC in MP4 ends with up to one frame of encoder padding past the
    edit list; the container's duration is where the audio really stops.
    """
    if not stream.duration:
        return None
    begin = Fraction(stream.start_time or 0) * stream.time_base
    return round((begin + stream.duration * stream.time_base - _origin(container)) * rate)


def probe_audio_duration(path: str | os.PathLike) -> float:
    """Length of the first audio stream in seconds on the decode timeline, without decoding.

    Uses the stream's declared duration, else the container's, else a pass over the packets (demuxing only).
    """
    p = existing_path(path, "Audio file", AudioError, file=True)
    with _open(p) as container:
        stream = _audio_stream(container, p)
        origin = _origin(container)
        declared = _declared_end(container, stream, int(stream.codec_context.sample_rate))
        if declared is not None:
            return declared / stream.codec_context.sample_rate
        if container.duration:
            return container.duration / av.time_base
        end = None
        try:
            for packet in container.demux(stream):
                if packet.pts is not None:
                    stop = (packet.pts + (packet.duration or 0)) * packet.time_base
                    end = stop if end is None else max(end, stop)
        except av.FFmpegError as err:
            raise AudioError(f"FFmpeg failed while reading {p} ({err}); the file may be damaged.") from None
        if end is None:
            raise AudioError(f"{p}: the audio stream has no timestamps, so its length is unknown.")
        return float(end - origin)


def check_decode_request(
    path: str | os.PathLike,
    start: float = 0.0,
    duration: float | None = None,
    *,
    max_seconds: float = MAX_DECODE_SECONDS,
) -> float:
    """The length of the audio ``decode_audio`` would return for this request, from the file's header only.

    Refuses what decoding would refuse only after reading the file (an unreadable or empty file, a start at or past
    the end, more than ``max_seconds`` in one piece), so a host can refuse it before any model is loaded.
    """
    start = _check_seconds(start, "start", allow_zero=True)
    if duration is not None:
        duration = _check_seconds(duration, "duration", allow_zero=False)
    max_seconds = _check_seconds(max_seconds, "max_seconds", allow_zero=False)
    length = probe_audio_duration(path)
    if start >= length:
        raise _past_end(Path(path), start, length)
    wanted = length - start if duration is None else min(duration, length - start)
    if wanted > max_seconds:
        raise InvalidInputError(
            f"{wanted:.0f} s of audio were requested in one piece, above the limit of {max_seconds:.0f} s. Load a "
            "window with start and duration (long animations are encoded window by window)."
        )
    return wanted
