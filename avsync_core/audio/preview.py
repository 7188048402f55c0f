"""A picture of what AVSyncD hears per frame: the waveform, each frame's audio window, the clips and frame times.

The segment masks are what make the animation follow the sound, yet they are invisible in a graph. This draws
them: the top panel is the waveform with each frame's window shaded (numbered above), below it one lane per frame
of a clip holding a bar for every clip's window of that frame, and at the bottom the time each frame is shown in
the video. A frame's window is its ``segment_time_windows`` time patches, turned into seconds exactly as the audio
reaches them: the clip's 2 s mel (centre-cropped when the clip is longer), 10 ms mel frames of 25 ms, and the
ImageBind stem's 16-frame patches at a stride of 10.
Pure numpy + Pillow (no plotting library), so it runs anywhere the pack does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import InvalidInputError
from .mel import CLIP_SECONDS
from .segments import segment_time_seconds
from .waveform import SAMPLE_RATE, Waveform, mix_to_mono
from .windows import ClipWindow

BACKGROUND = (30, 30, 30)
PANEL = (42, 42, 42)
WAVE = (230, 230, 230)
TEXT = (220, 220, 220)
CLIP_LINE = (255, 200, 60)
NO_AUDIO = (70, 70, 70)
# Neighbouring frames get different hues so overlapping windows stay apart.
PALETTE = ((86, 156, 255), (255, 120, 90), (110, 210, 120), (200, 130, 255), (255, 200, 80), (80, 210, 210))
BAND_ALPHA = 0.28


@dataclass(frozen=True)
class FrameSpan:
    """The audio one frame of one clip attends to, in seconds of the whole sound."""

    clip: int
    frame: int  # index inside the clip
    global_frame: int
    start_seconds: float
    stop_seconds: float
    shown_seconds: float  # when the frame appears in the video
    heard_stop_seconds: float  # past this (< stop_seconds) the clip's mel is padding, not sound

    @property
    def padded(self) -> bool:
        return self.heard_stop_seconds < self.stop_seconds


def frame_audio_spans(windows: Sequence[ClipWindow], frames: int, fps: float) -> list[FrameSpan]:
    """Every clip's per-frame audio windows, clip by clip, frame by frame."""
    if not windows:
        raise InvalidInputError("frame_audio_spans needs at least one clip window.")
    patches = segment_time_seconds(frames)
    target = int(CLIP_SECONDS * SAMPLE_RATE)
    spans = []
    for window in windows:
        if window.frames != frames:
            raise InvalidInputError(f"Clip {window.index} has {window.frames} frames, not {frames}.")
        held = round(min(window.audio_seconds, window.duration_seconds) * SAMPLE_RATE)
        crop = (held - target) // 2 / SAMPLE_RATE if held > target else 0.0  # melspectrogram's centre crop
        origin = window.start_seconds + crop
        heard_end = origin + min(held, target) / SAMPLE_RATE  # past it the mel is padding
        for i, (start, stop) in enumerate(patches):
            start_seconds = origin + start
            stop_seconds = origin + stop
            spans.append(
                FrameSpan(
                    clip=window.index,
                    frame=i,
                    global_frame=window.first_frame + i,
                    start_seconds=start_seconds,
                    stop_seconds=stop_seconds,
                    shown_seconds=(window.first_frame + i) / fps,
                    heard_stop_seconds=max(start_seconds, min(stop_seconds, heard_end)),
                )
            )
    return spans


class TimeAxis:
    """Seconds to pixel columns across a plot of ``width`` minus the ``left`` and ``right`` margins, from 0 to
    ``end_seconds``: the time axis the pictures of the pack share (fields of the layout dataclasses below)."""

    width: int
    left: int
    right: int
    end_seconds: float

    @property
    def plot_width(self) -> int:
        return self.width - self.left - self.right

    def x(self, seconds: float) -> float:
        return self.left + seconds / self.end_seconds * self.plot_width

    def columns(self, start: float, stop: float) -> tuple[int, int]:
        """[first, last) pixel columns covering [start, stop) seconds, at least one column wide."""
        first = math.floor(self.x(max(0.0, start)))
        last = math.ceil(self.x(min(self.end_seconds, stop)))
        return first, max(first + 1, last)


@dataclass(frozen=True)
class PreviewLayout(TimeAxis):
    """Where everything sits in the picture; tests read the bars back through it."""

    frames: int
    end_seconds: float
    width: int
    left: int = 46
    right: int = 16
    header: int = 24
    numbers: int = 16
    wave_height: int = 110
    axis: int = 20
    lane_height: int = 14
    lane_gap: int = 2
    frame_axis: int = 30

    @staticmethod
    def for_clips(frames: int, end_seconds: float) -> PreviewLayout:
        plot = int(min(2000, max(700, 400 * end_seconds)))
        lane = max(3, min(14, 200 // frames))
        return PreviewLayout(frames, end_seconds, plot + 46 + 16, lane_height=lane, lane_gap=1 if lane < 8 else 2)

    @property
    def wave_top(self) -> int:
        return self.header + self.numbers

    @property
    def lanes_top(self) -> int:
        return self.wave_top + self.wave_height + self.axis

    @property
    def height(self) -> int:
        return self.lanes_top + self.frames * (self.lane_height + self.lane_gap) + self.frame_axis

    def lane(self, frame: int) -> tuple[int, int]:
        """[top, bottom) rows of the lane of frame ``frame`` (index inside a clip)."""
        top = self.lanes_top + frame * (self.lane_height + self.lane_gap)
        return top, top + self.lane_height


def preview_layout(windows: Sequence[ClipWindow], frames: int, fps: float) -> PreviewLayout:
    """The layout ``render_frame_preview`` uses: time runs from 0 to the end of the last clip or window."""
    last = windows[-1].start_seconds + windows[-1].duration_seconds
    return PreviewLayout.for_clips(
        frames, max([last] + [s.stop_seconds for s in frame_audio_spans(windows, frames, fps)])
    )


def band_colour(frame: int) -> tuple[int, int, int]:
    return PALETTE[frame % len(PALETTE)]


def padding_colour(frame: int) -> tuple[int, int, int]:
    """The dimmed bar colour of the part of a window that hears padding."""
    return tuple((np.asarray(band_colour(frame)) + np.asarray(BACKGROUND)) // 2)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size only
        return ImageFont.load_default()


def _envelope(samples: np.ndarray, sample_rate: int, layout: PreviewLayout) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of the samples under each pixel column (zeros where there is no audio)."""
    lo = np.zeros(layout.plot_width, dtype=np.float32)
    hi = np.zeros(layout.plot_width, dtype=np.float32)
    edges = np.floor(np.arange(layout.plot_width + 1) / layout.plot_width * layout.end_seconds * sample_rate)
    edges = np.minimum(edges.astype(np.int64), samples.shape[0])
    has = edges[1:] > edges[:-1]
    if samples.shape[0] and has.any():
        starts = edges[:-1][has]
        lo[has] = np.minimum.reduceat(samples, starts)[: has.sum()]
        hi[has] = np.maximum.reduceat(samples, starts)[: has.sum()]
        # reduceat runs each segment up to the next start; the last column stops at its own edge.
        last = np.flatnonzero(has)[-1]
        lo[last] = samples[edges[last] : edges[last + 1]].min()
        hi[last] = samples[edges[last] : edges[last + 1]].max()
    return lo, hi


def render_frame_preview(
    waveform: Waveform, windows: Sequence[ClipWindow], frames: int, fps: float, every_start: bool = False
) -> np.ndarray:
    """(H, W, 3) uint8 picture of which sound each frame hears (see the module docstring). ``every_start``: the
    sound was also encoded from every frame, for context windows; the title says what their windows hear."""
    if not isinstance(waveform, Waveform):
        raise InvalidInputError(f"Expected a Waveform, got {type(waveform).__name__}.")
    spans = frame_audio_spans(windows, frames, fps)
    layout = preview_layout(windows, frames, fps)
    end = layout.end_seconds
    image = np.empty((layout.height, layout.width, 3), dtype=np.float32)
    image[:] = BACKGROUND
    top, bottom = layout.wave_top, layout.wave_top + layout.wave_height
    image[top:bottom, layout.left : layout.left + layout.plot_width] = PANEL

    for span in spans:  # shaded windows over the waveform; overlaps blend
        first, last = layout.columns(span.start_seconds, span.stop_seconds)
        region = image[top:bottom, first:last]
        region += BAND_ALPHA * (np.asarray(band_colour(span.frame), dtype=np.float32) - region)
    lanes_bottom = layout.lane(frames - 1)[1]
    for window in windows:  # clip boundaries, under the bars
        for t in (window.start_seconds, window.start_seconds + window.duration_seconds):
            image[top:lanes_bottom, min(round(layout.x(min(t, end))), layout.width - 1)] = CLIP_LINE
    lane_ends = [-1] * frames
    for span in spans:  # one bar per frame and clip, in the frame's lane, a column apart from the previous one
        lane_top, lane_bottom = layout.lane(span.frame)
        first, last = layout.columns(span.start_seconds, span.stop_seconds)
        first = min(max(first, lane_ends[span.frame] + 1), last - 1)
        heard = first
        if span.heard_stop_seconds > span.start_seconds:
            heard = min(max(first + 1, math.ceil(layout.x(span.heard_stop_seconds))), last)
        image[lane_top:lane_bottom, first:heard] = band_colour(span.frame)
        image[lane_top:lane_bottom, heard:last] = padding_colour(span.frame)
        lane_ends[span.frame] = last

    audio_end = waveform.duration
    silent = layout.columns(audio_end, end) if audio_end < end else None
    if silent:  # the last clip runs past the sound: the model hears padding there
        region = image[top:bottom, silent[0] : silent[1]]
        region += 0.7 * (np.asarray(NO_AUDIO, dtype=np.float32) - region)

    samples = mix_to_mono(waveform.samples).numpy()[0]
    lo, hi = _envelope(samples, waveform.sample_rate, layout)
    peak = float(max(np.abs(lo).max(initial=0.0), np.abs(hi).max(initial=0.0))) or 1.0
    middle, half = (top + bottom) / 2, layout.wave_height / 2 - 4
    for column in range(layout.plot_width):
        y0 = round(middle - hi[column] / peak * half)
        y1 = round(middle - lo[column] / peak * half)
        image[y0 : y1 + 1, layout.left + column] = WAVE

    picture = Image.fromarray(image.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    small, label = _font(11), _font(12)
    for window in windows:
        if len(windows) > 1:
            draw.text(
                (layout.x(window.start_seconds) + 3, top + 2), f"clip {window.index + 1}", fill=CLIP_LINE, font=small
            )

    if silent and silent[1] - silent[0] >= 60:
        draw.text(((silent[0] + silent[1]) / 2, bottom - 12), "no sound", fill=TEXT, font=small, anchor="mm")

    # Frame numbers above the shaded windows, where they fit.
    last_x = -1e9
    for span in spans:
        x = layout.x((span.start_seconds + span.stop_seconds) / 2)
        if x - last_x >= 16:
            draw.text(
                (x, layout.header + layout.numbers / 2),
                str(span.global_frame),
                fill=band_colour(span.frame),
                font=small,
                anchor="mm",
            )
            last_x = x
    for frame in range(frames):  # lane names: the frame's index inside its clip
        lane_top, lane_bottom = layout.lane(frame)
        if layout.lane_height >= 9 or frame % 5 == 0:
            draw.text((layout.left - 6, (lane_top + lane_bottom) / 2), f"f{frame}", fill=TEXT, font=small, anchor="rm")

    step = _nice_step(end, layout.plot_width)  # seconds axis under the waveform
    for k in range(int(end / step + 1e-9) + 1):
        x = layout.x(k * step)
        draw.line([(x, bottom), (x, bottom + 4)], fill=TEXT)
        draw.text((x, bottom + 5), f"{k * step:g} s", fill=TEXT, font=small, anchor="mt")

    axis_y = lanes_bottom + 4  # when each frame is shown in the video
    shown = sorted({(s.global_frame, s.shown_seconds) for s in spans})
    draw.text((layout.left - 6, axis_y + 4), "shown", fill=TEXT, font=small, anchor="rt")
    last_x = -1e9
    for frame, seconds in shown:
        x = layout.x(seconds)
        draw.line([(x, axis_y), (x, axis_y + 5)], fill=TEXT)
        if x - last_x >= 18:
            draw.text((x, axis_y + 7), str(frame), fill=TEXT, font=small, anchor="mt")
            last_x = x

    clips = f"{len(windows)} clip{'s' if len(windows) > 1 else ''} of {windows[0].duration_seconds:.2f} s"
    title = f"{frames} frames at {fps:g} fps, {clips}, sound {audio_end:.2f} s: what each frame hears"
    if any(s.padded for s in spans):
        title += " (dim: padding)"
    if windows[0].duration_seconds < CLIP_SECONDS - 1e-6:
        title += f"; clips under {CLIP_SECONDS:g} s leave later frames hearing padding"
    if every_start and len(windows) > 1:
        title += f"; also from every frame (context windows: frames s..s+{frames - 2} hear the 2 s from frame s-1)"
    draw.text((layout.left, 5), title, fill=TEXT, font=label)
    return np.asarray(picture)


def _nice_step(seconds: float, pixels: int) -> float:
    """A 1-2-5 tick step that leaves at least ~60 px between labels."""
    raw = seconds * 60 / max(pixels, 1)
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)
