"""A picture of a context-window schedule (``context.py``): which frames each window denoises and which 2 s it hears.

The windows are invisible in a graph, yet they decide where the animation may seam and what each frame hears.
One lane per window: its top bar covers its new frames ``s..e`` on the video's time axis (frame ``i`` is the cell
``[i / fps, (i + 1) / fps)``), with frame 0 (the picture, the anchor of every window) as a white cell at the start;
under it a thinner bar covers the 2 s it hears, from frame ``s - 1`` (dimmed where the sound has ended and the mel
is padding). Overlaps show as bars over the same cells in neighbouring lanes. The bottom panel stacks, for every
frame, each window's share of the fused prediction (``normalized_weights``), in the window's colour.
Pure numpy + Pillow, like the per-frame audio preview whose colours and fonts it shares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..audio.condition import AudioCondition
from ..audio.preview import BACKGROUND, PANEL, TEXT, TimeAxis, _font, _nice_step, band_colour, padding_colour
from ..audio.windows import ClipWindow, start_windows
from ..errors import InvalidInputError
from .context import normalized_weights, window_start

ANCHOR = (245, 245, 245)  # frame 0, the picture, in every window (apart from every window colour)


@dataclass(frozen=True)
class WindowSpan:
    """One window of one video: its new frames and the audio window it hears (``start_windows``' window)."""

    index: int
    first: int  # its first new frame, s
    last: int  # its last new frame, e
    audio: ClipWindow  # the 2 s from frame s - 1

    @property
    def heard_stop_seconds(self) -> float:
        """Past this the window's mel is padding: the sound has ended."""
        return self.audio.start_seconds + self.audio.audio_seconds

    @property
    def stop_seconds(self) -> float:
        return self.audio.start_seconds + self.audio.duration_seconds


def window_spans(audio: AudioCondition, windows: Sequence[Sequence[int]]) -> list[WindowSpan]:
    """The spans of the anchored ``windows`` (latent rows, ``context.anchored_windows``) of the first video."""
    if not audio.windows:
        raise InvalidInputError(
            "The context-window picture needs the sound's clip windows (an AudioCondition from encode_audio_condition)."
        )
    total, frames = audio.total_frames, audio.frames
    clips = audio.windows
    sound_seconds = clips[-1].start_seconds + clips[-1].audio_seconds  # as much as start_windows needs
    starts = start_windows(clips, sound_seconds, audio.fps)
    spans = []
    for window in windows:
        video, start = window_start(window, total, frames)
        if video == 0:
            spans.append(WindowSpan(len(spans), start + 1, start + frames - 1, starts[start]))
    if not spans:
        raise InvalidInputError("No context window of the first video to draw.")
    return spans


@dataclass(frozen=True)
class ContextLayout(TimeAxis):
    """Where everything sits in the picture; tests read the bars and the weights back through it."""

    windows: int
    total_frames: int
    fps: float
    end_seconds: float
    width: int
    left: int = 52
    right: int = 16
    header: int = 44
    frame_bar: int = 12
    sound_bar: int = 6
    lane_gap: int = 4
    weights_gap: int = 10
    weights_height: int = 60
    axis: int = 36

    @staticmethod
    def for_windows(windows: int, total_frames: int, fps: float, end_seconds: float) -> ContextLayout:
        plot = int(min(2000, max(700, 14 * total_frames)))
        bar = max(2, min(12, 480 // windows))
        return ContextLayout(
            windows,
            total_frames,
            fps,
            end_seconds,
            plot + 52 + 16,
            frame_bar=bar,
            sound_bar=max(1, bar // 2),
            lane_gap=1 if bar < 8 else 4,
        )

    @property
    def lane_height(self) -> int:
        return self.frame_bar + self.sound_bar + self.lane_gap

    def frame_rows(self, window: int) -> tuple[int, int]:
        """[top, bottom) rows of window ``window``'s frame bar."""
        top = self.header + window * self.lane_height
        return top, top + self.frame_bar

    def sound_rows(self, window: int) -> tuple[int, int]:
        """[top, bottom) rows of window ``window``'s sound bar, right under its frame bar."""
        top = self.frame_rows(window)[1]
        return top, top + self.sound_bar

    @property
    def weights_rows(self) -> tuple[int, int]:
        top = self.header + self.windows * self.lane_height + self.weights_gap
        return top, top + self.weights_height

    @property
    def height(self) -> int:
        return self.weights_rows[1] + self.axis

    def frame_columns(self, frame: int) -> tuple[int, int]:
        """The cell of frame ``frame``: the time it is shown until the next frame."""
        return self.columns(frame / self.fps, (frame + 1) / self.fps)

    def weight_rows(self, shares: Sequence[float]) -> list[tuple[int, int]]:
        """[top, bottom) rows of each share stacked from the panel's bottom (shares of one frame, summing to 1)."""
        bottom = self.weights_rows[1]
        edges = [bottom - round(float(c) * self.weights_height) for c in np.cumsum([0.0, *shares])]
        return [(edges[k + 1], edges[k]) for k in range(len(shares))]


def context_layout(audio: AudioCondition, spans: Sequence[WindowSpan]) -> ContextLayout:
    """The layout ``render_context_preview`` uses: time runs from 0 to the last frame's end or the last window's 2 s."""
    end = max([audio.total_frames / audio.fps] + [s.stop_seconds for s in spans])
    return ContextLayout.for_windows(len(spans), audio.total_frames, audio.fps, end)


def render_context_preview(
    audio: AudioCondition, windows: Sequence[Sequence[int]], fuse: str, overlap: int, note: str = ""
) -> np.ndarray:
    """(H, W, 3) uint8 picture of the anchored ``windows`` of the first video (see the module docstring);
    ``fuse`` and ``overlap`` give the weights as the run fuses them, ``note`` is added to the title."""
    spans = window_spans(audio, windows)
    total = audio.total_frames
    rows = [[0] + list(range(s.first, s.last + 1)) for s in spans]
    shares = normalized_weights(rows, fuse, total, overlap).numpy()
    layout = context_layout(audio, spans)
    image = np.empty((layout.height, layout.width, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    top, bottom = layout.weights_rows
    image[top:bottom, layout.left : layout.left + layout.plot_width] = PANEL

    anchor = layout.frame_columns(0)
    for span in spans:
        frame_top, frame_bottom = layout.frame_rows(span.index)
        sound_top, sound_bottom = layout.sound_rows(span.index)
        image[frame_top:frame_bottom, anchor[0] : anchor[1]] = ANCHOR
        first = layout.frame_columns(span.first)[0]
        image[frame_top:frame_bottom, first : layout.frame_columns(span.last)[1]] = band_colour(span.index)
        start, stop = layout.columns(span.audio.start_seconds, span.stop_seconds)
        heard = min(max(start, math.ceil(layout.x(span.heard_stop_seconds))), stop)
        image[sound_top:sound_bottom, start:heard] = band_colour(span.index)
        image[sound_top:sound_bottom, heard:stop] = padding_colour(span.index)

    image[top:bottom, anchor[0] : anchor[1]] = ANCHOR  # frame 0 is the picture, whatever the weights
    for frame in range(1, total):
        first, last = layout.frame_columns(frame)
        last = last - 1 if last - first >= 12 else last  # a dark line between wide cells
        holders = np.flatnonzero(shares[:, frame] > 0)
        for k, (share_top, share_bottom) in zip(holders, layout.weight_rows(shares[holders, frame])):
            image[share_top:share_bottom, first:last] = band_colour(int(k))

    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    small, label = _font(11), _font(12)
    for span in spans:  # lane names, and each window's frames and seconds where there is room
        frame_top, frame_bottom = layout.frame_rows(span.index)
        middle = (frame_top + layout.sound_rows(span.index)[1]) / 2
        if layout.frame_bar >= 9 or span.index % 5 == 0:
            draw.text((layout.left - 6, middle), f"w{span.index + 1}", fill=TEXT, font=small, anchor="rm")
        if layout.frame_bar >= 9:
            text = f"frames {span.first}-{span.last}, hears {span.audio.start_seconds:.2f}-{span.stop_seconds:.2f} s"
            sound = layout.columns(span.audio.start_seconds, span.stop_seconds)
            after = max(layout.frame_columns(span.last)[1], sound[1]) + 6
            before = min(layout.frame_columns(span.first)[0], sound[0]) - 6
            if after + draw.textlength(text, font=small) <= layout.width - layout.right:
                draw.text((after, middle), text, fill=TEXT, font=small, anchor="lm")
            elif before - draw.textlength(text, font=small) >= anchor[1] + 4:
                draw.text((before, middle), text, fill=TEXT, font=small, anchor="rm")
    draw.text((layout.left - 6, (top + bottom) / 2), "fuse", fill=TEXT, font=small, anchor="rm")

    axis_y = bottom + 3  # frame numbers under their cells, seconds under them
    draw.text((layout.left - 6, axis_y), "frame", fill=TEXT, font=small, anchor="rt")
    last_x = -1e9
    for frame in range(total):
        x = sum(layout.frame_columns(frame)) / 2
        if x - last_x >= 22:
            draw.text((x, axis_y), str(frame), fill=TEXT, font=small, anchor="mt")
            last_x = x
    step = _nice_step(layout.end_seconds, layout.plot_width)
    for k in range(int(layout.end_seconds / step + 1e-9) + 1):
        x = layout.x(k * step)
        draw.line([(x, axis_y + 15), (x, axis_y + 19)], fill=TEXT)
        draw.text((x, axis_y + 20), f"{k * step:g} s", fill=TEXT, font=small, anchor="mt")

    plural = "s" if len(spans) > 1 else ""
    lines = (
        f"{len(spans)} context window{plural}: the picture (white, frame 0) + {audio.frames - 1} frames each, "
        f"overlap {overlap}, {fuse}; {total} frames at {audio.fps:g} fps",
        "thin bars: the 2 s each window hears (dim: padding); bottom: each window's share of every frame"
        + (f"; {note}" if note else ""),
    )
    for row, line in enumerate(lines):
        draw.text((layout.left, 5 + 17 * row), line, fill=TEXT, font=label)
    return np.asarray(picture)
