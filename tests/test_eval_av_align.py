"""AV-Align against TempoTokens' av_align.py as published (golden ``av_align/``), and its edge cases."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from avsync_core.audio import decode_audio
from avsync_core.errors import AVSyncError, InvalidInputError
from avsync_core.evaluation import av_align, av_align_file, flow_trajectory, peak_iou, video_peaks
from conftest import golden_dir, load_golden_json

pytest.importorskip("librosa")
pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def expected() -> dict:
    return load_golden_json("av_align", "av_align.json")


def test_clip_files_reproduce_peaks_flow_and_score(expected):
    folder = golden_dir() / "av_align"
    result = av_align_file(folder / "clip.mp4", folder / "clip.wav")
    assert result.fps == expected["fps_read"]
    assert result.audio_peaks == pytest.approx(expected["audio_peaks_s"], abs=1e-9)
    assert result.video_peaks == pytest.approx(expected["video_peaks_s"], abs=1e-9)
    assert np.abs(np.array(result.flow) - expected["flow_trajectory"]).max() <= 1e-4
    assert result.score == expected["av_align"]


def test_flow_from_the_decoded_frames(expected):
    frames = np.load(golden_dir() / "av_align" / "decoded_frames_bgr.npy")
    flow = flow_trajectory(frames, order="bgr")
    assert len(flow) == len(frames)
    assert np.abs(np.array(flow) - expected["flow_trajectory"]).max() <= 1e-4
    # The same frames as RGB give the same grayscale, hence the same flow.
    assert flow_trajectory(frames[..., ::-1], order="rgb") == pytest.approx(flow, abs=1e-9)
    assert video_peaks(flow, expected["fps_read"]) == pytest.approx(expected["video_peaks_s"], abs=1e-9)


def test_in_memory_audio_at_another_rate_matches_the_file(expected):
    """A 16 kHz tensor is resampled to librosa.load's 22050 Hz, so it finds the same onsets as the file."""
    sound = decode_audio(golden_dir() / "av_align" / "clip.wav", sample_rate=None)
    assert sound.sample_rate == 16000
    frames = np.load(golden_dir() / "av_align" / "decoded_frames_bgr.npy")
    result = av_align(frames, 6.0, sound.samples, sound.sample_rate, order="bgr")
    assert result.audio_peaks == pytest.approx(expected["audio_peaks_s"], abs=1e-9)
    assert result.score == expected["av_align"]
    assert len(result.matches) == 3


def test_silent_audio_scores_zero():
    frames = np.load(golden_dir() / "av_align" / "decoded_frames_bgr.npy")
    moving = av_align(frames, 6.0, torch.zeros(32000), 16000, order="bgr")
    assert moving.audio_peaks == [] and len(moving.video_peaks) == 3 and moving.score == 0.0
    still = av_align(np.repeat(frames[:1], 12, axis=0), 6.0, torch.zeros(32000), 16000, order="bgr")
    assert still.audio_peaks == [] and still.video_peaks == [] and still.score == 0.0


def test_peak_iou_matches_each_video_peak_once():
    fps = 6.0
    # Two audio peaks near one video peak: only the first matches; 1 / (2 + 1 - 1).
    assert peak_iou([0.50, 0.52], [0.5], fps) == 0.5
    # The window is open: exactly one frame apart does not match.
    assert peak_iou([0.5 + 1 / fps], [0.5], fps) == 0.0
    assert peak_iou([1.0, 2.0], [1.05, 1.95], fps) == 1.0
    assert peak_iou([], [], fps) == 0.0


def test_a_flow_peak_reaches_0_1_and_rises_strictly_above_both_neighbours():
    fps = 4.0  # frame times 0.25 s apart, exact in binary
    # Index 2 reaches 0.1 exactly; 4 is just under it; 6-7 a plateau (neither is strictly above both);
    # 9, the last index with two neighbours, is a peak.
    flow = [0.0, 0.0, 0.1, 0.0, 0.0999, 0.0, 0.5, 0.5, 0.0, 0.3, 0.2]
    assert video_peaks(flow, fps) == [0.5, 2.25]


def test_the_matching_window_is_open_at_both_ends():
    fps = 4.0
    # An audio peak exactly one frame before or after the video peak does not match; a hair inside does.
    assert peak_iou([0.75], [1.0], fps) == 0.0
    assert peak_iou([1.25], [1.0], fps) == 0.0
    assert peak_iou([0.75 + 1e-9], [1.0], fps) == 1.0
    assert peak_iou([1.25 - 1e-9], [1.0], fps) == 1.0


def test_too_few_frames_is_refused():
    with pytest.raises(InvalidInputError, match="at least 2 frames"):
        flow_trajectory(np.zeros((1, 8, 8, 3), np.uint8))


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "librosa", None)
    with pytest.raises(AVSyncError, match=r'pip install "comfyui-avsync\[eval\]"'):
        av_align(np.zeros((3, 8, 8, 3), np.uint8), 6.0, torch.zeros(16000), 16000)
