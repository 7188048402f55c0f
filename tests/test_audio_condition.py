"""The AudioCondition bundle: tokens for every window, null tokens and masks, tied to the goldens."""

from __future__ import annotations

import pytest
import torch

from avsync_core.audio import (
    SAMPLE_RATE,
    ImageBindAudioEncoder,
    Waveform,
    clip_windows,
    encode_audio_condition,
    melspectrogram,
    resample,
    segment_masks,
    window_samples,
)
from avsync_core.errors import AudioError, InvalidInputError
from conftest import assert_close_rel, golden_dir, load_golden, load_golden_json


@pytest.fixture(scope="module")
def encoder() -> ImageBindAudioEncoder:
    heads = load_golden_json("imagebind_audio_tiny", "config.json")["kwargs_audio"]["audio_num_heads"]
    path = golden_dir() / "imagebind_audio_tiny" / "imagebind_audio_tiny.safetensors"
    return ImageBindAudioEncoder.from_imagebind_checkpoint(path, num_heads=heads)


@pytest.fixture(scope="module")
def io():
    return load_golden("imagebind_audio_tiny", "imagebind_audio_tiny_io.safetensors")


def test_two_second_clip_gives_the_golden_tokens(encoder, io):
    mel_golden = load_golden("mel", "mel_features.safetensors")
    wave = Waveform(mel_golden["waveform.click_train_2s"], SAMPLE_RATE)
    cond = encode_audio_condition(encoder, wave, frames=6, fps=3.0)
    assert cond.num_windows == 1 and cond.frames == 6
    assert_close_rel(cond.tokens[0], io["out.trunk_final_ln"][0], 1e-4, "tokens")
    assert_close_rel(cond.null_tokens, io["out.null_trunk_final_ln"], 1e-4, "null tokens")
    assert torch.equal(cond.masks, segment_masks(6))


def test_long_stereo_clip_is_encoded_window_by_window(encoder):
    rate, seconds = 44100, 9.5
    torch.manual_seed(1)
    stereo = 0.1 * torch.randn(2, int(seconds * rate))
    calls = []
    cond = encode_audio_condition(
        encoder, Waveform(stereo, rate), progress=lambda d, t: calls.append((d, t)), batch_size=2
    )
    windows = clip_windows(seconds)
    n = len(windows)
    assert cond.windows == windows and cond.num_windows == n > 1
    assert cond.tokens.shape == (n, 229, encoder.token_dim) and cond.null_tokens.shape == (1, 229, encoder.token_dim)
    assert calls == [(min(i + 2, n), n) for i in range(0, n, 2)]
    mono16k = Waveform(resample(stereo.mean(0, keepdim=True), rate, SAMPLE_RATE), SAMPLE_RATE)
    assert windows[-1].audio_seconds < windows[-1].duration_seconds
    for k in (0, n - 1):  # the first window and the clip's short tail
        with torch.no_grad():
            direct = encoder.encode_tokens(melspectrogram(window_samples(mono16k, windows[k]))[None])
        assert_close_rel(cond.tokens[k], direct[0], 1e-5, f"window {k}")
    assert not torch.allclose(cond.tokens[0], cond.tokens[1])


def test_silence_is_legal_and_gives_finite_tokens(encoder):
    cond = encode_audio_condition(encoder, Waveform(torch.zeros(1, 3 * SAMPLE_RATE), SAMPLE_RATE))
    assert cond.num_windows == 2 and torch.isfinite(cond.tokens).all()


def test_max_windows_and_moving(encoder):
    cond = encode_audio_condition(encoder, Waveform(0.1 * torch.ones(1, 30 * SAMPLE_RATE), SAMPLE_RATE), max_windows=2)
    assert cond.num_windows == 2 and len(cond.windows) == 2
    half = cond.to(dtype=torch.bfloat16)
    assert half.tokens.dtype == torch.bfloat16 and half.masks.dtype == torch.bool
    assert cond.tokens.dtype == torch.float32


def test_bad_audio_is_refused(encoder):
    with pytest.raises(AudioError, match="shorter than one frame"):
        encode_audio_condition(encoder, Waveform(torch.zeros(1, 1600), SAMPLE_RATE))  # 0.1 s at 6 fps
    with pytest.raises(AudioError, match="25 ms"):
        encode_audio_condition(encoder, Waveform(torch.zeros(1, 100), SAMPLE_RATE))
    bad = torch.zeros(1, 32000)
    bad[0, 16000] = float("inf")
    with pytest.raises(AudioError, match="infinite"):
        encode_audio_condition(encoder, Waveform(bad, SAMPLE_RATE))
    with pytest.raises(InvalidInputError, match="Waveform"):
        encode_audio_condition(encoder, torch.zeros(1, 32000))
    with pytest.raises(InvalidInputError, match="frames"):
        encode_audio_condition(encoder, Waveform(torch.zeros(1, 32000), SAMPLE_RATE), frames=1)
    with pytest.raises(InvalidInputError, match=r"12 frames at 3 fps cover 4 s.*= 6 for 12 frames"):
        encode_audio_condition(encoder, Waveform(torch.zeros(1, 64000), SAMPLE_RATE), frames=12, fps=3.0)
