"""AV-Align against TempoTokens' av_align.py as published (golden ``av_align/``), and its edge cases."""

from __future__ import annotations

import sys
import wave

import numpy as np
import pytest
import torch

from avsync_core.audio import Waveform, decode_audio
from avsync_core.errors import AVSyncError, InvalidInputError
from avsync_core.evaluation import av_align, av_align_file, flow_trajectory, peak_iou, video_peaks
from avsync_core.evaluation.av_align import audio_onsets, match_peaks, read_video_bgr
from avsync_core.video import write_video
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


# ------------------------------------------------------------------------- small synthetic inputs (fast)

CLICK_RATE = 44100


def clicks(times: list[float], seconds: float = 2.0, rate: int = CLICK_RATE) -> np.ndarray:
    """(T,) float32 silence with a 5 ms decaying noise burst at each of ``times``."""
    y = np.zeros(round(seconds * rate), np.float32)
    burst = np.random.default_rng(0).standard_normal(round(0.005 * rate)) * np.exp(-np.arange(round(0.005 * rate)) / 40)
    for t in times:
        y[round(t * rate) : round(t * rate) + len(burst)] = 0.5 * burst / np.abs(burst).max()
    return y


def moving_square(count: int, moves_until: int) -> np.ndarray:
    """(count, 32, 32, 3) uint8: a bright square that moves 4 pixels a frame up to frame ``moves_until``."""
    frames = np.full((count, 32, 32, 3), 30, np.uint8)
    for i in range(count):
        x = 4 + 4 * min(i, moves_until)
        frames[i, 10:20, x : x + 8] = 220
    return frames


def test_onset_input_forms_and_refusals():
    """numpy and torch (even one that requires grad) give the same onsets; the envelope comes with its times;
    empty, 3-D and non-finite audio are refused with the reason."""
    y = clicks([0.5, 1.0, 1.5])
    from_numpy = audio_onsets(y, CLICK_RATE)
    from_torch = audio_onsets(torch.from_numpy(y).requires_grad_(), CLICK_RATE)
    assert from_numpy.peaks == from_torch.peaks and len(from_numpy.peaks) == 3
    assert np.array_equal(from_numpy.strength, from_torch.strength)
    assert from_numpy.times.shape == from_numpy.strength.shape
    assert from_numpy.times[1] - from_numpy.times[0] == pytest.approx(512 / 22050)  # librosa's hop at 22050 Hz
    for bad in (np.zeros(0, np.float32), np.zeros((1, 1, 100), np.float32)):
        with pytest.raises(InvalidInputError, match="non-empty"):
            audio_onsets(bad, CLICK_RATE)
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        audio_onsets(np.full(100, np.nan, np.float32), CLICK_RATE)


def test_flow_entry_0_repeats_the_first_motion_and_bad_frames_are_refused():
    frames = moving_square(4, moves_until=1)  # motion between frames 0 and 1 only
    flow = flow_trajectory(frames)  # RGB by default
    assert flow == flow_trajectory(frames, order="rgb")
    assert flow[0] == flow[1] > 0.5 > flow[2]
    assert len(flow_trajectory(frames[:2])) == 2, "two frames are enough"
    with pytest.raises(InvalidInputError, match="uint8 frames, got"):
        flow_trajectory(frames.astype(np.float32))
    with pytest.raises(InvalidInputError, match="uint8 frames, got"):
        flow_trajectory(np.concatenate([frames, frames[..., :1]], axis=-1))  # 4 channels
    with pytest.raises(InvalidInputError, match='order must be "rgb" or "bgr"'):
        flow_trajectory(frames, order="hsv")


def test_the_first_and_last_flow_entries_are_never_peaks_but_their_neighbours_can_be():
    assert video_peaks([0.9, 0.5, 0.2, 0.3, 0.1], 1.0) == [3.0]  # entry 0 above its (wrapped) left is no peak
    assert video_peaks([0.0, 0.5, 0.2, 0.3, 0.1], 1.0) == [1.0, 3.0]


def test_matches_are_the_audio_and_video_peak_pairs():
    assert match_peaks([0.50, 0.52, 2.0], [0.5, 1.0], 6.0) == [(0.5, 0.5)]


@pytest.mark.parametrize("fps", [0, -6.0, float("inf"), float("nan")])
def test_av_align_refuses_a_frame_rate_that_is_not_positive_and_finite(fps):
    with pytest.raises(InvalidInputError, match="fps must be a positive number"):
        av_align(moving_square(3, 2), fps, clicks([0.5]), CLICK_RATE)


def test_av_align_at_1_fps_in_rgb_by_default():
    result = av_align(moving_square(3, 2), 1.0, clicks([0.5]), CLICK_RATE)
    assert result.fps == 1.0 and result.onset_times.shape == result.onset_strength.shape


def test_a_missing_extra_names_the_package_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(AVSyncError, match="AV-Align needs opencv-python-headless, which"):
        flow_trajectory(moving_square(2, 1))
    monkeypatch.setitem(sys.modules, "librosa", None)
    with pytest.raises(AVSyncError, match="AV-Align needs librosa, which"):
        audio_onsets(clicks([0.5]), CLICK_RATE)


def test_video_files_that_cannot_be_read_are_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_video_bgr(tmp_path / "absent.mp4")
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(InvalidInputError, match="cannot open"):
        read_video_bgr(tmp_path / "text.mp4")


def test_a_file_scores_the_mono_mix_of_its_sound_at_the_files_own_rate(tmp_path):
    """Left and right click at different times: the score hears all four clicks (the mix, as librosa.load), at
    44.1 kHz resampled once to 22050 Hz; the video's own track is used when no audio file is given."""
    left, right = clicks([0.4, 1.2]), clicks([0.8, 1.6])
    sound = Waveform(torch.from_numpy(np.stack([left, right])), CLICK_RATE)
    frames = torch.from_numpy(moving_square(12, 11)).permute(0, 3, 1, 2).float() / 255
    video = write_video(tmp_path / "clip.mp4", frames, 1.0, sound)
    silent = write_video(tmp_path / "silent.mp4", frames, 1.0)
    wav = tmp_path / "clip.wav"
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(CLICK_RATE)
        out.writeframes((np.stack([left, right], axis=1) * 32767).round().astype("<i2").tobytes())
    assert read_video_bgr(silent)[1] == 1.0, "a 1 fps file is read"
    result = av_align_file(silent, wav)
    mix = (left + right) / 2
    assert result.audio_peaks == pytest.approx([0.4, 0.8, 1.2, 1.6], abs=0.03)
    expected = audio_onsets(np.round(mix * 32767) / 32768, CLICK_RATE)
    assert np.abs(result.onset_strength - expected.strength).max() <= 1e-3 * expected.strength.max()
    own_track = av_align_file(video)
    assert own_track.audio_peaks == pytest.approx(result.audio_peaks, abs=0.03)
