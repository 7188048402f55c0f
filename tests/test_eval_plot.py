"""The synchronisation plot: a real picture, with every peak and match drawn where AV-Align put it."""

from __future__ import annotations

import numpy as np
import pytest

from avsync_core.audio import segment_time_seconds, segment_time_windows
from avsync_core.audio.segments import PATCH_SECONDS, PATCH_STEP_SECONDS
from avsync_core.evaluation.av_align import AVAlignResult, match_peaks, peak_iou
from avsync_core.evaluation.plot import (
    AUDIO_PEAK,
    BOTTOM,
    HEIGHT,
    LANE_ROW,
    LANE_TOP,
    MATCH,
    VIDEO_PEAK,
    WINDOW_TINTS,
    render_sync_plot,
)

FPS, FRAMES = 6.0, 12


def _result(audio_peaks: list[float], flow: list[float]) -> AVAlignResult:
    times = np.arange(0, 2.0, 512 / 22050)
    strength = np.zeros_like(times)
    for peak in audio_peaks:
        strength[np.argmin(abs(times - peak))] = 3.0
    video = [i / FPS for i in range(1, len(flow) - 1) if flow[i - 1] < flow[i] > flow[i + 1] and flow[i] >= 0.1]
    matches = match_peaks(audio_peaks, video, FPS)
    return AVAlignResult(peak_iou(audio_peaks, video, FPS), audio_peaks, video, flow, FPS, strength, times, matches)


def _colour_at(pixels: np.ndarray, xy: tuple[int, int]) -> tuple[int, ...]:
    x, y = xy
    return tuple(int(c) for c in pixels[y, x])


def test_every_peak_and_match_is_drawn_at_its_time():
    flow = [0.2, 0.2, 0.3, 2.0, 0.3, 0.2, 0.2, 0.2, 1.5, 0.2, 0.2, 0.2]  # video peaks at frames 3 and 8
    result = _result([3 / FPS + 0.03, 1.0], flow)
    plot = render_sync_plot(result, FRAMES, {"AVSync score": 1.5, "AV-Align": result.score})
    assert plot.pixels.shape[2] == 3 and plot.pixels.dtype == np.uint8
    assert plot.pixels.std() > 10  # a picture, not a blank canvas

    assert len(plot.audio_peaks) == len(result.audio_peaks) == 2
    assert len(plot.video_peaks) == len(result.video_peaks) == 2
    assert len(plot.matches) == len(result.matches) == 1
    for peak, mark in zip(result.audio_peaks, plot.audio_peaks):
        assert mark[0] == plot.x(peak)
        assert _colour_at(plot.pixels, mark) == AUDIO_PEAK
    for peak, mark in zip(result.video_peaks, plot.video_peaks):
        assert mark[0] == plot.x(peak)
        assert _colour_at(plot.pixels, mark) == VIDEO_PEAK
    (audio_mark, video_mark), ((audio_time, video_time),) = plot.matches[0], result.matches
    assert (audio_mark[0], video_mark[0]) == (plot.x(audio_time), plot.x(video_time))
    midpoint = ((audio_mark[0] + video_mark[0]) // 2, (audio_mark[1] + video_mark[1]) // 2)
    assert _colour_at(plot.pixels, midpoint) == MATCH
    # The higher motion peak sits higher in the picture (smaller row).
    assert plot.video_peaks[0][1] < plot.video_peaks[1][1]


def test_no_peaks_no_marks():
    plot = render_sync_plot(_result([], [0.0] * FRAMES), FRAMES, {})
    assert plot.audio_peaks == plot.video_peaks == plot.matches == []
    for colour in (AUDIO_PEAK, VIDEO_PEAK, MATCH):
        area = plot.pixels[:-40]  # above the legend, which shows each colour once
        assert not (area == np.array(colour, np.uint8)).all(axis=2).any(), colour


@pytest.mark.parametrize("frames", [12, 8])
def test_frame_windows_are_the_segments_in_seconds(frames):
    windows = segment_time_seconds(frames)
    segments = segment_time_windows(frames)
    assert len(windows) == frames
    for (start, stop), (first, last) in zip(windows, segments):
        assert start == pytest.approx(first * PATCH_STEP_SECONDS)
        assert stop == pytest.approx((last - 1) * PATCH_STEP_SECONDS + PATCH_SECONDS)
    assert windows[0][0] == 0.0 and windows[-1][1] <= 2.0


def test_each_frames_heard_window_is_shaded_in_its_lane():
    plot = render_sync_plot(_result([], [0.0] * FRAMES), FRAMES, {})
    for i, (start, stop) in enumerate(segment_time_seconds(FRAMES)):
        row_top = HEIGHT - BOTTOM + LANE_TOP + (i % 2) * LANE_ROW
        for x in (plot.x(start) + 1, plot.x((start + stop) / 2), plot.x(stop) - 2):
            assert _colour_at(plot.pixels, (x, row_top + LANE_ROW // 2)) == WINDOW_TINTS[i % 2], (i, x)
    left_of_first = (plot.x(0.0) - 2, HEIGHT - BOTTOM + LANE_TOP + LANE_ROW // 2)
    assert _colour_at(plot.pixels, left_of_first) not in WINDOW_TINTS
