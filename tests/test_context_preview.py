"""The context-window picture: each window's frames, the 2 s it hears and its share of every frame, read back from
the pixels through ContextLayout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avsync_core.audio import AudioCondition, clip_windows
from avsync_core.audio.preview import band_colour, padding_colour
from avsync_core.errors import InvalidInputError
from avsync_core.sampling.context import context_schedule, normalized_weights
from avsync_core.sampling.context_preview import (
    ANCHOR,
    ContextLayout,
    context_layout,
    render_context_preview,
    window_spans,
)

FRAMES, FPS, SECONDS = 4, 2.0, 4.6  # 3 clips, 10 frames; the sound ends 0.4 s before the last window's 2 s


def condition(seconds: float = SECONDS, frames: int = FRAMES, fps: float = FPS) -> AudioCondition:
    """Only the clip windows matter to the picture; the tokens are placeholders of the right count."""
    clips = clip_windows(seconds, frames, fps)
    return AudioCondition(
        torch.zeros(len(clips), 2, 3),
        torch.zeros(1, 2, 3),
        torch.zeros(frames, 2, dtype=torch.bool),
        frames,
        fps,
        clips,
    )


def runs(row: np.ndarray, colour) -> list[tuple[int, int]]:
    """[first, last) columns of the runs of exactly ``colour`` along a pixel row."""
    hit = np.all(row == np.asarray(colour, dtype=np.uint8), axis=1).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], hit, [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def middle(rows: tuple[int, int]) -> int:
    return (rows[0] + rows[1]) // 2


def test_spans_are_the_schedules_frames_and_the_2_s_from_the_frame_before():
    audio = condition()
    assert audio.total_frames == 10
    spans = window_spans(audio, context_schedule(10, FRAMES, 1))
    assert [(s.first, s.last) for s in spans] == [(1, 3), (3, 5), (5, 7), (7, 9)]
    assert [s.audio.start_seconds for s in spans] == [0.0, 1.0, 2.0, 3.0]
    assert [s.stop_seconds for s in spans] == [2.0, 3.0, 4.0, 5.0]
    assert [s.heard_stop_seconds for s in spans] == pytest.approx([2.0, 3.0, 4.0, 4.6])


def test_only_the_first_videos_windows_are_drawn():
    audio = condition()
    two_videos = context_schedule(10, FRAMES, 0, videos=2)
    assert len(two_videos) == 6
    assert [(s.first, s.last) for s in window_spans(audio, two_videos)] == [(1, 3), (4, 6), (7, 9)]


@pytest.mark.parametrize("overlap, fuse", [(1, "pyramid"), (2, "overlap-linear"), (0, "flat")])
def test_each_windows_bars_sit_at_its_frames_and_seconds(overlap, fuse):
    audio = condition()
    windows = context_schedule(audio.total_frames, FRAMES, overlap)
    image = render_context_preview(audio, windows, fuse, overlap)
    spans = window_spans(audio, windows)
    layout = context_layout(audio, spans)
    assert image.shape == (layout.height, layout.width, 3)
    assert layout.end_seconds == 5.0
    for span, window in zip(spans, windows):
        frame_row = image[middle(layout.frame_rows(span.index))]
        first, last = window[1], window[-1]
        bar = (layout.frame_columns(first)[0], layout.frame_columns(last)[1])
        assert runs(frame_row, band_colour(span.index)) == [bar], f"window {span.index}: frames {first}..{last}"
        assert runs(frame_row, ANCHOR) == [layout.frame_columns(0)], "frame 0, the picture, in every window"
        sound_row = image[middle(layout.sound_rows(span.index))]
        start = (first - 1) / FPS
        heard, padding = runs(sound_row, band_colour(span.index)), runs(sound_row, padding_colour(span.index))
        stop = layout.columns(start, start + 2.0)[1]
        assert heard[0][0] == layout.columns(start, start + 2.0)[0], f"window {span.index} hears from frame {first - 1}"
        assert (heard + padding)[-1][1] == stop and len(heard) == 1
        if start + 2.0 > SECONDS:  # the last window hears 0.4 s of padding
            assert padding == [(heard[0][1], stop)] and heard[0][1] == pytest.approx(layout.x(SECONDS), abs=1)
        else:
            assert padding == [] and heard[0][1] == stop


def test_overlapping_windows_share_frames_in_neighbouring_lanes():
    audio = condition()
    windows = context_schedule(audio.total_frames, FRAMES, 1)
    image = render_context_preview(audio, windows, "pyramid", 1)
    layout = context_layout(audio, window_spans(audio, windows))
    held = [
        [
            f
            for f in range(1, 10)
            if runs(image[middle(layout.frame_rows(k)), slice(*layout.frame_columns(f))], band_colour(k))
        ]
        for k in range(len(windows))
    ]
    assert [sorted(set(a) & set(b)) for a, b in zip(held, held[1:])] == [[3], [5], [7]]


@pytest.mark.parametrize("overlap, fuse", [(1, "pyramid"), (2, "overlap-linear"), (2, "flat")])
def test_the_bottom_panel_stacks_each_windows_share_of_every_frame(overlap, fuse):
    audio = condition()
    windows = context_schedule(audio.total_frames, FRAMES, overlap)
    image = render_context_preview(audio, windows, fuse, overlap)
    layout = context_layout(audio, window_spans(audio, windows))
    shares = normalized_weights(windows, fuse, audio.total_frames, overlap)
    top, bottom = layout.weights_rows
    column = image[top:bottom, sum(layout.frame_columns(0)) // 2]
    assert np.all(column == np.asarray(ANCHOR, dtype=np.uint8)), "frame 0 is the picture, whatever the weights"
    for frame in range(1, audio.total_frames):
        column = image[top:bottom, sum(layout.frame_columns(frame)) // 2]
        expected = {}  # a colour comes back every len(PALETTE) windows: count each colour's shares together
        for k in range(len(windows)):
            expected[band_colour(k)] = expected.get(band_colour(k), 0.0) + float(shares[k, frame])
        for colour, share in expected.items():
            height = int(np.all(column == np.asarray(colour, dtype=np.uint8), axis=1).sum())
            assert height == pytest.approx(share * layout.weights_height, abs=1), (frame, colour)


def test_a_whole_song_fits_with_a_lane_per_window():
    audio = condition(60.0, 12, 6.0)
    windows = context_schedule(audio.total_frames, 12, 4)
    image = render_context_preview(audio, windows, "pyramid", 4)
    layout = context_layout(audio, window_spans(audio, windows))
    assert isinstance(layout, ContextLayout) and len(windows) == 52 and image.shape[1] <= 2100
    last = window_spans(audio, windows)[-1]
    assert runs(image[middle(layout.frame_rows(51))], band_colour(51)) == [
        (layout.frame_columns(last.first)[0], layout.frame_columns(last.last)[1])
    ]


def test_audio_without_its_clips_or_windows_outside_the_anchor_rule_are_refused():
    audio = condition()
    bare = AudioCondition(audio.tokens, audio.null_tokens, audio.masks, FRAMES, FPS)
    with pytest.raises(InvalidInputError, match="clip windows"):
        render_context_preview(bare, context_schedule(10, FRAMES, 1), "pyramid", 1)
    with pytest.raises(InvalidInputError, match="frame 0 of its video"):
        render_context_preview(audio, [[1, 2, 3, 4]], "pyramid", 1)
