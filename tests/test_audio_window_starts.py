"""Audio for context windows: the 2 s from every frame, encoded once per sound, as a direct encoding would give."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avsync_core.audio import (
    SAMPLE_RATE,
    ImageBindAudioEncoder,
    Waveform,
    clip_windows,
    encode_audio_condition,
    start_windows,
    window_samples,
)
from avsync_core.errors import InvalidInputError
from conftest import assert_close_rel, golden_dir, load_golden_json

FRAMES, FPS = 4, 2.0  # 2 s clips, as every AVSyncD layout
SECONDS = 5.3


@pytest.fixture(scope="module")
def encoder() -> ImageBindAudioEncoder:
    heads = load_golden_json("imagebind_audio_tiny", "config.json")["kwargs_audio"]["audio_num_heads"]
    path = golden_dir() / "imagebind_audio_tiny" / "imagebind_audio_tiny.safetensors"
    return ImageBindAudioEncoder.from_imagebind_checkpoint(path, num_heads=heads)


@pytest.fixture(scope="module")
def sound() -> Waveform:
    g = torch.Generator().manual_seed(4)
    t = torch.arange(round(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    chirp = torch.sin(2 * torch.pi * (200 + 300 * t) * t) * (t % 0.7 < 0.2)  # bursts: every start hears a different 2 s
    return Waveform((0.3 * chirp + 0.02 * torch.randn(t.shape, generator=g))[None], SAMPLE_RATE)


def test_every_start_holds_the_chained_clips_windows_sample_for_sample(sound):
    chain = clip_windows(SECONDS, FRAMES, FPS)
    starts = start_windows(chain, SECONDS, FPS)
    assert len(starts) == 1 + (len(chain) - 1) * (FRAMES - 1)
    for k, clip in enumerate(chain):
        window = starts[k * (FRAMES - 1)]
        assert (window.start_seconds, window.duration_seconds, window.audio_seconds) == (
            clip.start_seconds,
            clip.duration_seconds,
            clip.audio_seconds,
        )
        assert torch.equal(window_samples(sound, window), window_samples(sound, clip))


def test_starts_of_a_short_tail_and_of_a_one_window_sound():
    """2.5 s at 12 frames / 6 fps: two chained clips, the second with 0.67 s of sound; every start j is frame j,
    with the sound left after j / 6 s (at most 2 s). A one-window sound has one start; no chain is refused."""
    chain = clip_windows(2.5, 12, 6.0)
    starts = start_windows(chain, 2.5, 6.0)
    assert [(w.index, w.first_frame, w.frames, w.duration_seconds) for w in starts] == [
        (j, j, 12, 2.0) for j in range(12)
    ]
    assert [w.audio_seconds for w in starts] == [min(2.0, 2.5 - j / 6.0) for j in range(12)]
    assert starts[11] == dataclasses.replace(chain[1], index=11) and chain[1].audio_seconds < 1.0
    (only,) = clip_windows(1.3)
    assert start_windows([only], 1.3, 6.0) == [only]
    with pytest.raises(InvalidInputError, match="needs the chained clip windows"):
        start_windows([], 1.3, 6.0)


def test_each_start_equals_a_direct_encoding_of_its_2_s(encoder, sound):
    audio = encode_audio_condition(encoder, sound, FRAMES, FPS, every_start=True, batch_size=3)
    assert audio.start_tokens.shape[0] == audio.total_frames - FRAMES + 1
    assert torch.equal(audio.tokens, audio.start_tokens[:: FRAMES - 1]), "the clips' tokens are rows of the starts'"
    chain_only = encode_audio_condition(encoder, sound, FRAMES, FPS)
    assert_close_rel(audio.tokens, chain_only.tokens, 1e-4, "clips' tokens")
    for j in range(audio.start_tokens.shape[0]):
        first = round(j / FPS * SAMPLE_RATE)
        alone = Waveform(sound.samples[:, first : first + round(2.0 * SAMPLE_RATE)], SAMPLE_RATE)
        direct = encode_audio_condition(encoder, alone, FRAMES, FPS, max_windows=1)
        assert_close_rel(audio.tokens_from(j)[0], direct.tokens[0], 1e-4, f"window from frame {j}")
    assert not torch.allclose(audio.start_tokens[1], audio.start_tokens[2]), "the starts hear different sound"
