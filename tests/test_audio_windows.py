"""Long audio: consecutive chained windows aligned with the frames, and the samples of each window."""

from __future__ import annotations

import math

import pytest
import torch

from avsync_core.audio import SAMPLE_RATE, ClipWindow, Waveform, check_clip_duration, clip_windows, window_samples
from avsync_core.errors import AudioError, InvalidInputError


def _expected_count(total: float, frames: int, fps: float) -> int:
    """The documented rule, counted one window at a time."""
    whole = math.floor(total * fps + 1e-6)
    k = 1
    while k * (frames - 1) + 1 < whole:
        k += 1
    return k


def test_the_paper_unit_is_one_window():
    (window,) = clip_windows(2.0)
    assert window == ClipWindow(0, 0.0, 2.0, 0, 12, 2.0)
    assert window.last_frame == 11


@pytest.mark.parametrize("frames,fps", [(12, 6.0), (16, 8.0), (24, 12.0), (12, 8.0), (2, 6.0)])
def test_windows_chain_on_their_shared_frame(frames, fps):
    windows = clip_windows(30.0, frames, fps)
    for k, w in enumerate(windows):
        assert w.index == k and w.frames == frames
        assert w.first_frame == k * (frames - 1)
        assert math.isclose(w.start_seconds, w.first_frame / fps)
        assert math.isclose(w.duration_seconds, frames / fps)
    for a, b in zip(windows, windows[1:]):
        assert b.first_frame == a.last_frame


@pytest.mark.parametrize("frames,fps", [(12, 6.0), (16, 8.0), (5, 3.0)])
def test_window_count_follows_the_tail_rule(frames, fps):
    for total in [x / 100 for x in range(17, 1500, 7)]:
        if total * fps < 1:
            continue
        windows = clip_windows(total, frames, fps)
        assert len(windows) == _expected_count(total, frames, fps), total
        whole = math.floor(total * fps + 1e-6)
        assert windows[-1].last_frame + 1 >= whole, "every whole frame of audio is animated"
        assert len(windows) * (frames - 1) + 1 >= whole, "a further window would have no whole new frame"
        last = windows[-1]
        assert math.isclose(last.audio_seconds, min(last.duration_seconds, total - last.start_seconds))


def test_short_audio_gives_one_window_with_less_audio():
    (window,) = clip_windows(1.3)
    assert window.duration_seconds == 2.0 and math.isclose(window.audio_seconds, 1.3)


def test_audio_shorter_than_one_frame_is_refused():
    with pytest.raises(AudioError, match=r"shorter than one frame at 6 fps \(0\.167 s\)"):
        clip_windows(0.1, 12, 6.0)


def test_max_windows_caps_the_list():
    assert len(clip_windows(60.0, max_windows=3)) == 3
    assert len(clip_windows(60.0)) == _expected_count(60.0, 12, 6.0)


@pytest.mark.parametrize(
    "kwargs,word",
    [
        ({"total_seconds": 0.0}, "total_seconds"),
        ({"total_seconds": "long"}, "total_seconds must be a number"),
        ({"total_seconds": 5.0, "fps": "fast"}, "fps must be a number"),
        ({"total_seconds": float("nan")}, "total_seconds"),
        ({"total_seconds": 5.0, "frames": 1}, "frames"),
        ({"total_seconds": 5.0, "frames": 12.0}, "frames"),
        ({"total_seconds": 5.0, "fps": 0.0}, "fps"),
        ({"total_seconds": 5.0, "fps": float("inf")}, "fps"),
        ({"total_seconds": 5.0, "max_windows": 0}, "max_windows"),
    ],
)
def test_invalid_arguments(kwargs, word):
    with pytest.raises(InvalidInputError, match=word):
        clip_windows(**kwargs)


def test_window_samples_are_the_window_times():
    seconds = 7.3
    ramp = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float32)[None]
    wave = Waveform(ramp, SAMPLE_RATE)
    windows = clip_windows(seconds)
    for w in windows:
        piece = window_samples(wave, w)
        first = round(w.start_seconds * SAMPLE_RATE)
        assert piece.shape[0] == 1 and piece[0, 0].item() == first
        assert piece.shape[1] == round(min(w.audio_seconds, w.duration_seconds) * SAMPLE_RATE)
    assert window_samples(wave, windows[-1]).shape[1] < 2 * SAMPLE_RATE  # the clip's tail


def test_window_samples_needs_16k_mono():
    with pytest.raises(InvalidInputError, match="16 kHz mono"):
        window_samples(Waveform(torch.zeros(2, 32000), SAMPLE_RATE), clip_windows(2.0)[0])
    with pytest.raises(InvalidInputError, match="16 kHz mono"):
        window_samples(Waveform(torch.zeros(1, 88200), 44100), clip_windows(2.0)[0])
    late = ClipWindow(3, 10.0, 2.0, 60, 12, 2.0)
    with pytest.raises(InvalidInputError, match="after the end"):
        window_samples(Waveform(torch.zeros(1, 32000), SAMPLE_RATE), late)


# 6.000001: an fps typed or stored with 7 significant digits is within the 1e-6 relative tolerance.
@pytest.mark.parametrize("frames,fps", [(12, 6.0), (16, 8.0), (24, 12.0), (4, 2.0), (5, 2.5), (2, 1.0), (12, 6.000001)])
def test_clips_of_the_encoder_window_are_accepted(frames, fps):
    check_clip_duration(frames, fps)


@pytest.mark.parametrize(
    "frames,fps,message",
    [
        (12, 3.0, r"12 frames at 3 fps cover 4 s, .* Set fps to frames / 2 = 6 for 12 frames"),
        (12, 8.0, r"12 frames at 8 fps cover 1.5 s, .* = 6 for 12 frames"),
        (4, 6.0, r"4 frames at 6 fps cover 0.667 s, .* = 2 for 4 frames"),
        (5, 2.0, r"= 2.5 for 5 frames"),
    ],
)
def test_clips_that_would_drift_from_their_sound_are_refused_with_the_fitting_fps(frames, fps, message):
    with pytest.raises(InvalidInputError, match=message):
        check_clip_duration(frames, fps)
