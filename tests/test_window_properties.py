"""Property tests (hypothesis) of the arithmetic over windows, frames and seconds.

Each property is stated from the documented rule, not from the code: windows chain on a shared frame
(window k's frame 0 is global frame k * (F - 1)); a further window exists only while its first new frame has a
whole frame of audio; clips spread uniformly over the part of a source that has a whole clip.
"""

from __future__ import annotations

import math

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from avsync_core.audio.windows import clip_windows  # noqa: E402
from avsync_core.evaluation.clips import clip_starts  # noqa: E402

FRAMES = st.integers(min_value=2, max_value=32)
FPS = st.sampled_from([4.0, 6.0, 8.0, 12.0, 25.0, 29.97])
WHOLE_FRAMES = st.integers(min_value=1, max_value=400)


@given(frames=FRAMES, fps=FPS, whole=WHOLE_FRAMES, extra=st.floats(min_value=0.0, max_value=0.99))
def test_windows_chain_on_a_shared_frame_and_cover_every_whole_frame(frames, fps, whole, extra):
    total = (whole + extra) / fps  # `whole` whole frames of audio, and a part of the next
    windows = clip_windows(total, frames, fps)
    step = frames - 1
    for k, w in enumerate(windows):
        assert (w.index, w.first_frame, w.frames) == (k, k * step, frames)
        assert w.start_seconds == pytest.approx(k * step / fps)
        assert w.duration_seconds == pytest.approx(frames / fps)
        assert w.audio_seconds == pytest.approx(min(frames / fps, total - w.start_seconds))
    # The windows reach the last whole frame, and one window fewer would not (frame 1 of each window is new).
    covered = windows[-1].last_frame + 1
    assert covered >= whole
    if len(windows) > 1:
        assert windows[-1].first_frame + 1 < whole, "the last window's first new frame has a whole frame of audio"


@given(frames=FRAMES, fps=FPS, whole=WHOLE_FRAMES, cap=st.integers(min_value=1, max_value=5))
def test_max_windows_keeps_the_first_windows(frames, fps, whole, cap):
    total = whole / fps + 1e-9
    assert clip_windows(total, frames, fps, cap) == clip_windows(total, frames, fps)[:cap]


@given(
    duration=st.floats(min_value=0.0, max_value=600.0, allow_nan=False),
    clips=st.integers(min_value=1, max_value=12),
    clip_seconds=st.sampled_from([2.0, 1.5, 4.0]),
)
def test_clip_starts_spread_uniformly_over_the_span_with_a_whole_clip(duration, clips, clip_seconds):
    starts = clip_starts(duration, clips, clip_seconds)
    span = max(duration - clip_seconds, 0.0)
    assert len(starts) == clips
    assert all(0.0 <= s <= span + 1e-9 for s in starts), "every clip lies inside the source"
    if clips == 1:
        assert starts == [pytest.approx(span / 2)]
    else:
        assert starts[0] == 0.0 and starts[-1] == pytest.approx(span)
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert all(math.isclose(g, span / (clips - 1), rel_tol=1e-9, abs_tol=1e-9) for g in gaps)
