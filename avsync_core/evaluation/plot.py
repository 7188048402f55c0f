"""A picture of one clip's synchronisation that a person reads at a glance.

On one time axis: the sound's onset strength (librosa's envelope, what AV-Align takes its audio peaks from) and
the video's motion (mean optical-flow magnitude per frame, where its video peaks come from), each scaled to its
own maximum. Audio peaks are circles on the onset curve, video peaks squares on the motion curve, and every pair
AV-Align counts as matched is joined by a line. Under the axis, a lane shades the audio each frame hears in
AVSyncD (its segment of ImageBind time patches; even and odd frames on two rows, since neighbours overlap), and
the frame numbers stand at the times the frames are shown, in their row's colour. The scores are the title.
Pure numpy + Pillow (no plotting library), so it runs wherever the pack does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..audio import segment_time_seconds
from .av_align import AVAlignResult

WIDTH, HEIGHT = 960, 440
LEFT, RIGHT, TOP, BOTTOM = 56, 24, 58, 108  # margins around the plot area
LANE_TOP, LANE_ROW = 22, 12  # the lane of heard windows: its offset below the plot area, and its row height
BACKGROUND = (28, 28, 28)
PANEL = (40, 40, 40)
GRID = (70, 70, 70)
TEXT = (225, 225, 225)
ONSET = (255, 150, 60)
MOTION = (90, 160, 255)
AUDIO_PEAK = (255, 226, 80)
VIDEO_PEAK = (120, 240, 255)
MATCH = (110, 220, 120)
WINDOW_TINTS = ((176, 140, 220), (120, 190, 170))  # even and odd frames: neighbouring windows overlap
MARK_RADIUS = 5


@dataclass
class SyncPlot:
    """The picture (H, W, 3) uint8 and where its marks are, in pixels (x, y)."""

    pixels: np.ndarray
    audio_peaks: list[tuple[int, int]] = field(default_factory=list)
    video_peaks: list[tuple[int, int]] = field(default_factory=list)
    matches: list[tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    duration: float = 0.0

    def x(self, seconds: float) -> int:
        """The pixel column of a time."""
        return LEFT + round(seconds / self.duration * (WIDTH - LEFT - RIGHT - 1))


def _scaled(values: np.ndarray) -> np.ndarray:
    peak = float(np.max(values)) if values.size else 0.0
    return values / peak if peak > 0 else np.zeros_like(values)


def render_sync_plot(result: AVAlignResult, frames: int, scores: Mapping[str, float]) -> SyncPlot:
    """The plot of one clip: ``result`` from AV-Align on its ``frames`` frames, ``scores`` for the title."""
    duration = max(frames / result.fps, float(result.onset_times[-1]) if len(result.onset_times) else 0.0)
    plot = SyncPlot(np.zeros((HEIGHT, WIDTH, 3), np.uint8), duration=duration)
    bottom, height = HEIGHT - BOTTOM, HEIGHT - TOP - BOTTOM

    def y(value: float) -> int:  # value in [0, 1] of the curve's own maximum
        return bottom - round(value * (height - 12))

    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.rectangle([LEFT, TOP, WIDTH - RIGHT - 1, bottom - 1], fill=PANEL)
    small, large = ImageFont.load_default(13), ImageFont.load_default(17)  # Pillow >= 10.1

    for tick in np.arange(0.0, duration + 1e-9, 0.5):
        draw.line([(plot.x(tick), TOP), (plot.x(tick), bottom)], fill=GRID)
        draw.text((plot.x(tick), bottom + 4), f"{tick:g} s", fill=TEXT, font=small, anchor="mt")
    lane = bottom + LANE_TOP
    draw.text((LEFT - 8, lane + LANE_ROW), "heard", fill=TEXT, font=small, anchor="rm")
    for i, (start, stop) in enumerate(segment_time_seconds(frames)):
        top = lane + (i % 2) * LANE_ROW
        x0, x1 = plot.x(min(start, duration)), plot.x(min(stop, duration))
        draw.rectangle([x0, top, max(x0, x1 - 1), top + LANE_ROW - 3], fill=WINDOW_TINTS[i % 2])
    for i in range(frames):
        x = plot.x(i / result.fps)
        draw.line([(x, bottom), (x, bottom + 3)], fill=TEXT)
        draw.text((x, lane + 2 * LANE_ROW + 4), str(i), fill=WINDOW_TINTS[i % 2], font=small, anchor="mt")
    draw.text((LEFT - 8, lane + 2 * LANE_ROW + 4), "frame", fill=TEXT, font=small, anchor="rt")

    onset = _scaled(np.asarray(result.onset_strength, np.float64))
    motion = _scaled(np.asarray(result.flow, np.float64))
    if len(onset) > 1:
        draw.line([(plot.x(t), y(v)) for t, v in zip(result.onset_times, onset)], fill=ONSET, width=2)
    frame_times = np.arange(len(motion)) / result.fps
    draw.line([(plot.x(t), y(v)) for t, v in zip(frame_times, motion)], fill=MOTION, width=2)

    def audio_mark(t: float) -> tuple[int, int]:
        return plot.x(t), y(float(np.interp(t, result.onset_times, onset)))

    def video_mark(t: float) -> tuple[int, int]:
        return plot.x(t), y(float(motion[round(t * result.fps)]))

    plot.matches = [(audio_mark(a), video_mark(v)) for a, v in result.matches]
    for start, stop in plot.matches:
        draw.line([start, stop], fill=MATCH, width=3)
    plot.audio_peaks = [audio_mark(t) for t in result.audio_peaks]
    plot.video_peaks = [video_mark(t) for t in result.video_peaks]
    r = MARK_RADIUS
    for x, yy in plot.audio_peaks:
        draw.ellipse([x - r, yy - r, x + r, yy + r], fill=AUDIO_PEAK)
    for x, yy in plot.video_peaks:
        draw.rectangle([x - r, yy - r, x + r, yy + r], fill=VIDEO_PEAK)

    title = "   ".join(f"{name} {value:.3f}" for name, value in scores.items()) or "no scores"
    draw.text((LEFT, 10), title, fill=TEXT, font=large)
    draw.text(
        (LEFT, 34),
        f"{len(result.audio_peaks)} audio peaks, {len(result.video_peaks)} video peaks, "
        f"{len(result.matches)} matched within one frame",
        fill=TEXT,
        font=small,
    )
    _legend(draw, small, HEIGHT - 20)
    plot.pixels = np.asarray(image, np.uint8).copy()
    return plot


def _legend(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, y: int) -> None:
    entries: Sequence[tuple[str, tuple[int, int, int], str]] = (
        ("audio onset strength", ONSET, "line"),
        ("video motion (optical flow)", MOTION, "line"),
        ("audio peak", AUDIO_PEAK, "circle"),
        ("video peak", VIDEO_PEAK, "square"),
        ("matched", MATCH, "line"),
        ("audio each frame hears", WINDOW_TINTS[0], "band"),
    )
    x = LEFT
    for label, colour, kind in entries:
        if kind == "line":
            draw.line([(x, y), (x + 18, y)], fill=colour, width=3)
        elif kind == "circle":
            draw.ellipse([x + 4, y - 5, x + 14, y + 5], fill=colour)
        elif kind == "square":
            draw.rectangle([x + 4, y - 5, x + 14, y + 5], fill=colour)
        else:
            draw.rectangle([x, y - 5, x + 8, y + 5], fill=colour)
            draw.rectangle([x + 10, y - 5, x + 18, y + 5], fill=WINDOW_TINTS[1])
        draw.text((x + 24, y), label, fill=TEXT, font=font, anchor="lm")
        x += 24 + round(draw.textlength(label, font=font)) + 18
