"""Long sound as context windows in the library: windows anchored on the picture, their audio, their fusion."""

import pytest
import torch

from avsync_core import InvalidInputError
from avsync_core.audio import AudioCondition
from avsync_core.sampling import make_scheduler, sample_context_video_latents, sample_video_latents
from avsync_core.sampling.context import (
    FUSE_METHODS,
    anchored_windows,
    check_overlap,
    context_schedule,
    fuse_weights,
    normalized_weights,
    unet_frames_factor,
    window_start,
)
from conftest import load_golden

FRAMES = 4
STEPS = 2


def _condition(t, clips: int, every_start: bool) -> AudioCondition:
    """``clips`` chained clips; with ``every_start``, distinct tokens for every start frame."""
    masks = load_golden("segment_masks", "segment_masks.safetensors")[f"mask_nseg{FRAMES}"]
    audio = t["in.audio_tokens"][:1]
    starts = 1 + (clips - 1) * (FRAMES - 1)
    start_tokens = torch.cat([audio.roll(j, dims=1) * (1.0 - 0.1 * j) for j in range(starts)])
    return AudioCondition(
        tokens=start_tokens[:: FRAMES - 1],
        null_tokens=t["in.null_audio_tokens"],
        masks=masks,
        frames=FRAMES,
        fps=2.0,
        start_tokens=start_tokens if every_start else None,
    )


@pytest.fixture(scope="module")
def golden_inputs():
    t = load_golden("samplers", "sampler_ddim_dual_cfg.safetensors")
    return t, {"text": t["in.text_encodings"][:1], "first": t["in.first_frame_latents"][:1]}


def _context(unet, inputs, audio, scheduler="ddim", **kwargs):
    return sample_context_video_latents(
        unet,
        make_scheduler(scheduler),
        inputs["first"],
        inputs["text"],
        audio,
        seed=5,
        steps=STEPS,
        audio_scale=4.0,
        progress=False,
        **kwargs,
    )


@pytest.mark.parametrize("scheduler, fuse", [("ddim", "pyramid"), ("pndm", "overlap-linear"), ("dpmpp_2m", "flat")])
def test_one_window_covering_all_frames_is_the_single_clip_run_bit_for_bit(unet_tiny_a, golden_inputs, scheduler, fuse):
    t, inputs = golden_inputs
    audio = _condition(t, clips=1, every_start=True)
    context = _context(unet_tiny_a, inputs, audio, scheduler, overlap=2, fuse=fuse)
    clip = sample_video_latents(
        unet_tiny_a,
        make_scheduler(scheduler),
        inputs["first"],
        inputs["text"],
        audio,
        seed=5,
        steps=STEPS,
        audio_scale=4.0,
        progress=False,
    )
    assert torch.equal(context, clip)


def test_frame_0_is_the_picture_bit_for_bit_and_every_window_hears_its_own_start(unet_tiny_a, golden_inputs):
    t, inputs = golden_inputs
    overlap = 1
    audio = _condition(t, clips=2, every_start=True)
    out = _context(unet_tiny_a, inputs, audio, overlap=overlap)
    assert out.shape == (1, 4, audio.total_frames, 8, 8)
    assert torch.equal(out[:, :, 0], inputs["first"])
    used = {
        window_start(w, audio.total_frames, FRAMES)[1] for w in context_schedule(audio.total_frames, FRAMES, overlap)
    }
    unused = sorted(set(range(audio.start_tokens.shape[0])) - used)
    changed = audio.start_tokens.clone()
    changed[unused] = 0.0
    quiet = AudioCondition(audio.tokens, audio.null_tokens, audio.masks, FRAMES, 2.0, start_tokens=changed)
    assert torch.equal(_context(unet_tiny_a, inputs, quiet, overlap=overlap), out), "only the windows' starts are heard"
    heard = audio.start_tokens.clone()
    heard[sorted(used)[-1]] *= 0.5
    louder = AudioCondition(audio.tokens, audio.null_tokens, audio.masks, FRAMES, 2.0, start_tokens=heard)
    assert not torch.allclose(_context(unet_tiny_a, inputs, louder, overlap=overlap), out)


def test_overlap_0_windows_are_the_chained_clips_with_their_audio():
    total, frames = 1 + 5 * 11, 12
    windows = context_schedule(total, frames, 0)
    assert [w[1:] for w in windows] == [list(range(1 + 11 * k, 12 + 11 * k)) for k in range(5)]
    assert [window_start(w, total, frames) for w in windows] == [(0, 11 * k) for k in range(5)]
    assert all(w[0] == 0 for w in windows)


def test_windows_move_back_to_end_on_the_last_frame_and_cover_every_frame():
    total, frames = 1 + 3 * 11, 12
    windows = context_schedule(total, frames, 4)
    assert [w[1] for w in windows] == [1, 8, 15, 22, 23]
    assert windows[-1][-1] == total - 1
    two_videos = context_schedule(total, frames, 4, videos=2)
    assert two_videos[1] == [total] + [total + i for i in windows[0][1:]]


@pytest.mark.parametrize("method", FUSE_METHODS)
@pytest.mark.parametrize("overlap", [0, 1, 4, 10])
def test_the_fuse_weights_of_every_frame_sum_to_1(method, overlap):
    total, frames = 1 + 4 * 11, 12
    windows = context_schedule(total, frames, overlap)
    weights = normalized_weights(windows, method, total, overlap)
    torch.testing.assert_close(weights.sum(0), torch.ones(total), rtol=0, atol=1e-6)
    for k, window in enumerate(windows):  # nothing outside a window
        outside = torch.ones(total, dtype=torch.bool)
        outside[window] = False
        assert bool((weights[k, outside] == 0).all())


def test_pyramid_and_overlap_linear_weigh_the_window_borders_less():
    total = 1 + 3 * 11
    assert fuse_weights("pyramid", list(range(12)), total, 4)[1:].tolist() == [1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1]
    middle = [0] + list(range(8, 19))
    linear = fuse_weights("overlap-linear", middle, total, 4)[1:]
    assert linear[0] < 1e-30 and linear[-1] < 1e-30 and bool((linear[4:-4] == 1).all())
    assert fuse_weights("overlap-linear", list(range(12)), total, 4)[1] == 1, "the first window has no left ramp"


def test_bad_overlap_fuse_and_windows_are_refused():
    with pytest.raises(InvalidInputError, match="from 0 to 10"):
        check_overlap(11, 12)
    with pytest.raises(InvalidInputError, match="pyramid, flat, overlap-linear"):
        fuse_weights("relative", list(range(12)), 34, 4)
    with pytest.raises(InvalidInputError, match="consecutive"):
        window_start([0, 1, 2, 4], 10, 4)
    with pytest.raises(InvalidInputError, match="frame 0 of its video"):
        window_start([1, 2, 3, 4], 10, 4)  # a window without the picture
    assert unet_frames_factor(12, 4) == pytest.approx(11 / 7)


def test_a_window_of_another_length_than_the_clip_is_refused():
    with pytest.raises(InvalidInputError, match="needs 3 consecutive new frames per window"):
        anchored_windows([[0, 1]], 10, 4)  # 2 new frames: a 4-frame clip holds the picture + 3
    with pytest.raises(InvalidInputError, match="needs 3 consecutive new frames per window"):
        anchored_windows([[0, 1, 2, 3]], 10, 4)
    with pytest.raises(InvalidInputError, match="frame 0 of its video and 3 consecutive new frames"):
        window_start([0, 1, 2], 10, 4)
    assert anchored_windows([[0, 1, 2]], 10, 4) == [[0, 1, 2, 3]] and window_start([0, 1, 2, 3], 10, 4) == (0, 0)


def test_a_start_between_clips_needs_every_start_encoded(golden_inputs):
    t, _ = golden_inputs
    chain_only = _condition(t, clips=3, every_start=False)
    assert torch.equal(chain_only.tokens_from(3), chain_only.tokens[1:2])
    with pytest.raises(InvalidInputError, match="every window start"):
        chain_only.tokens_from(2)
