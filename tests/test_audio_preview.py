"""The per-frame audio preview: one bar per frame and clip, placed where the segment masks put the frame's audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avsync_core.audio import Waveform, clip_windows, segment_time_windows
from avsync_core.audio.preview import (
    WAVE,
    PreviewLayout,
    band_colour,
    frame_audio_spans,
    padding_colour,
    preview_layout,
    render_frame_preview,
)
from avsync_core.audio.segments import PATCH_SECONDS, PATCH_STEP_SECONDS
from avsync_core.errors import InvalidInputError

RATE = 16000


def bursts(seconds: float, at: list[float], rate: int = RATE) -> Waveform:
    """Silence with 50 ms noise bursts starting at the given times."""
    samples = torch.zeros(1, int(seconds * rate))
    generator = torch.Generator().manual_seed(0)
    for t in at:
        first = int(t * rate)
        samples[0, first : first + rate // 20] = torch.rand(rate // 20, generator=generator) * 2 - 1
    return Waveform(samples, rate)


def bar_runs(image: np.ndarray, layout: PreviewLayout, frame: int) -> list[tuple[int, int]]:
    """[first, last) columns of the runs of the frame's bar colour along the middle of its lane."""
    top, bottom = layout.lane(frame)
    row = image[(top + bottom) // 2, :, :]
    colours = [np.asarray(c, dtype=np.uint8) for c in (band_colour(frame), padding_colour(frame))]
    hit = np.any([np.all(row == c, axis=1) for c in colours], axis=0).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], hit, [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def layout_of(image: np.ndarray, windows, frames: int, fps: float = 6.0) -> PreviewLayout:
    layout = preview_layout(windows, frames, fps)
    assert image.shape == (layout.height, layout.width, 3)
    return layout


def test_spans_are_the_segment_windows_in_seconds():
    windows = clip_windows(2.0, 12, 6.0)
    spans = frame_audio_spans(windows, 12, 6.0)
    assert len(spans) == 12
    for span, (start, stop) in zip(spans, segment_time_windows(12)):
        assert span.start_seconds == pytest.approx(start * 0.1)
        assert span.stop_seconds == pytest.approx((stop - 1) * 0.1 + 0.175)
        assert span.shown_seconds == pytest.approx(span.frame / 6.0)
    assert (PATCH_STEP_SECONDS, PATCH_SECONDS) == pytest.approx((0.1, 0.175))


def test_longer_clips_are_centre_cropped_like_the_mel():
    # 24 frames at 8 fps: 3 s per clip, the mel keeps the middle 2 s, so every window moves by 0.5 s.
    (window,) = clip_windows(3.0, 24, 8.0)
    spans = frame_audio_spans([window], 24, 8.0)
    assert spans[0].start_seconds == pytest.approx(0.5)
    assert spans[-1].stop_seconds == pytest.approx(0.5 + 1.8 + 0.175)


@pytest.mark.parametrize("frames, fps", [(12, 6.0), (4, 2.0), (16, 8.0)])
def test_one_bar_per_frame_where_the_segment_is(frames, fps):
    windows = clip_windows(2.0, frames, fps)
    image = render_frame_preview(bursts(2.0, [0.3, 1.2]), windows, frames, fps)
    layout = layout_of(image, windows, frames, fps)
    for frame, (start, stop) in enumerate(segment_time_windows(frames)):
        runs = bar_runs(image, layout, frame)
        assert len(runs) == 1, f"frame {frame}: {runs}"
        expected = layout.columns(start * PATCH_STEP_SECONDS, (stop - 1) * PATCH_STEP_SECONDS + PATCH_SECONDS)
        assert runs[0] == expected, f"frame {frame}"
    total = sum(len(bar_runs(image, layout, f)) for f in range(frames))
    assert total == frames


def test_long_audio_gets_a_bar_per_frame_and_clip():
    windows = clip_windows(7.0, 12, 6.0)
    assert len(windows) == 4
    image = render_frame_preview(bursts(7.0, [1.0, 5.0]), windows, 12, 6.0)
    layout = layout_of(image, windows, 12)
    for frame in range(12):
        runs = bar_runs(image, layout, frame)
        assert len(runs) == 4
        starts = [
            layout.columns(s.start_seconds, s.stop_seconds)[0]
            for s in frame_audio_spans(windows, 12, 6.0)
            if s.frame == frame
        ]
        assert [r[0] for r in runs] == starts


def test_clips_shorter_than_the_mel_hear_padding_in_later_frames():
    # 4 frames at 6 fps: 0.67 s of sound per clip, but the windows spread over the encoder's 2 s mel.
    windows = clip_windows(0.7, 4, 6.0)
    spans = frame_audio_spans(windows, 4, 6.0)
    assert [s.padded for s in spans] == [False, True, True, True]
    assert all(s.heard_stop_seconds <= max(s.start_seconds, 4 / 6.0 + 1 / RATE) for s in spans)
    assert spans[-1].stop_seconds == pytest.approx(1.975)
    image = render_frame_preview(bursts(0.7, [0.1]), windows, 4, 6.0)
    layout = layout_of(image, windows, 4)
    assert all(len(bar_runs(image, layout, f)) == 1 for f in range(4))
    top, bottom = layout.lane(3)
    row = image[(top + bottom) // 2]
    first, last = layout.columns(spans[-1].start_seconds, spans[-1].stop_seconds)
    assert np.all(row[first:last] == np.asarray(padding_colour(3), dtype=np.uint8))  # all padding: dimmed


def test_bars_of_one_lane_stay_apart_when_clips_overlap():
    windows = clip_windows(4.0, 2, 1.0)  # two frames: each window is 1.075 s, clips start 1 s apart
    image = render_frame_preview(bursts(4.0, [0.5]), windows, 2, 1.0)
    layout = layout_of(image, windows, 2, 1.0)
    assert [len(bar_runs(image, layout, f)) for f in range(2)] == [len(windows)] * 2


def test_the_waveform_shows_where_the_sound_is():
    windows = clip_windows(2.0, 12, 6.0)
    image = render_frame_preview(bursts(2.0, [0.5]), windows, 12, 6.0)
    layout = layout_of(image, windows, 12)
    panel = image[layout.wave_top : layout.wave_top + layout.wave_height]
    tall = np.all(panel == np.asarray(WAVE, dtype=np.uint8), axis=2).sum(axis=0)  # waveform pixels per column
    burst = slice(*layout.columns(0.5, 0.55))
    quiet = slice(*layout.columns(1.0, 1.9))
    assert tall[burst].min() > layout.wave_height // 4
    assert tall[quiet].max() <= 1  # the flat zero line only
    assert image.std() > 10


def test_frames_must_match_the_windows():
    windows = clip_windows(2.0, 12, 6.0)
    with pytest.raises(InvalidInputError, match="12 frames, not 8"):
        frame_audio_spans(windows, 8, 6.0)
    with pytest.raises(InvalidInputError, match="at least one clip"):
        frame_audio_spans([], 12, 6.0)
