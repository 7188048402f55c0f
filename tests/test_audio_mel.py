"""ImageBind log-mel features against the official waveform_to_melspectrogram goldens."""

from __future__ import annotations

import pytest
import torch

from avsync_core.audio import (
    MEL_MEAN,
    MEL_STD,
    NUM_MEL_BINS,
    TARGET_FRAMES,
    melspectrogram,
    melspectrogram_batch,
    null_melspectrogram,
)
from avsync_core.errors import AudioError, InvalidInputError
from conftest import assert_close_rel, load_golden, load_golden_json

SIGNALS = [s["name"] for s in load_golden_json("mel", "mel_features.json")["signals"]]


@pytest.fixture(scope="module")
def mel_golden():
    return load_golden("mel", "mel_features.safetensors")


@pytest.mark.parametrize("name", SIGNALS)
def test_mel_matches_official(mel_golden, name):
    waveform = mel_golden[f"waveform.{name}"]
    before = waveform.clone()
    mel = melspectrogram(waveform)
    assert_close_rel(mel, mel_golden[f"mel.{name}"], 1e-5, name)
    assert torch.equal(waveform, before), "the caller's waveform must not be modified"


def test_golden_covers_short_long_and_silent_cases():
    info = {s["name"]: s for s in load_golden_json("mel", "mel_features.json")["signals"]}
    assert any(s["padded_frames"] > 6 for s in info.values())  # shorter than 2 s
    assert any(s["crop_start"] > 0 for s in info.values())  # longer than 2 s
    assert "zeros_2s" in info


def test_padding_and_crop_follow_the_official_layout(mel_golden):
    info = {s["name"]: s for s in load_golden_json("mel", "mel_features.json")["signals"]}
    short = melspectrogram(mel_golden["waveform.noise_1p3s"])[0]
    frames = info["noise_1p3s"]["kaldi_frames"]
    pad_value = (0.0 - MEL_MEAN) / MEL_STD  # zero in the log domain, then normalised
    assert torch.allclose(short[:, frames:], torch.full_like(short[:, frames:], pad_value))
    assert not torch.allclose(short[:, frames - 1], torch.full_like(short[:, frames - 1], pad_value))
    long = mel_golden["waveform.noise_3p1s"]
    start = info["noise_3p1s"]["crop_start"]
    assert torch.equal(melspectrogram(long), melspectrogram(long[:, start : start + 32000]))


def test_one_dimensional_input_and_dtype(mel_golden):
    waveform = mel_golden["waveform.click_train_2s"]
    assert torch.equal(melspectrogram(waveform[0]), melspectrogram(waveform))
    assert_close_rel(melspectrogram(waveform.double()), mel_golden["mel.click_train_2s"], 1e-5, "float64 input")
    assert melspectrogram(waveform).shape == (1, NUM_MEL_BINS, TARGET_FRAMES)


def test_null_mel_is_the_pipeline_null(mel_golden):
    null = null_melspectrogram(3)
    assert null.shape == (3, 1, NUM_MEL_BINS, TARGET_FRAMES)
    for item in null:
        assert_close_rel(item, mel_golden["mel.null_pipeline_zeros"], 1e-5, "null mel")
    # ... which is not the mel of silence.
    assert not torch.allclose(null[0], mel_golden["mel.zeros_2s"])


def test_batch_of_mixed_lengths(mel_golden):
    names = ["click_train_2s", "noise_1p3s", "noise_3p1s"]
    batch = melspectrogram_batch([mel_golden[f"waveform.{n}"] for n in names])
    assert batch.shape == (3, 1, NUM_MEL_BINS, TARGET_FRAMES)
    for item, name in zip(batch, names):
        assert_close_rel(item, mel_golden[f"mel.{name}"], 1e-5, name)
    stacked = torch.cat([mel_golden["waveform.click_train_2s"], mel_golden["waveform.sine_sweep_2s"]])
    assert torch.equal(melspectrogram_batch(stacked), melspectrogram_batch(stacked[:, None]))


def test_too_short_for_one_window_is_refused():
    with pytest.raises(AudioError, match="25 ms"):
        melspectrogram(torch.zeros(399))
    assert melspectrogram(torch.zeros(400)).shape == (1, NUM_MEL_BINS, TARGET_FRAMES)


@pytest.mark.parametrize(
    "bad,word",
    [
        (torch.zeros(2, 32000), "mono"),
        (torch.zeros(1, 1, 32000), "mono"),
        (torch.zeros(32000, dtype=torch.int16), "floating point"),
    ],
)
def test_bad_shapes(bad, word):
    with pytest.raises(InvalidInputError, match=word):
        melspectrogram(bad)


def test_non_finite_is_refused():
    wave = torch.zeros(32000)
    wave[100] = float("nan")
    with pytest.raises(AudioError, match="NaN"):
        melspectrogram(wave)


def test_empty_batch_is_refused():
    with pytest.raises(InvalidInputError, match="no waveforms"):
        melspectrogram_batch([])
