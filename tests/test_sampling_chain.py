"""Long audio in the library: clips chained on their shared frame, each with its own audio window and seed."""

import re

import pytest
import torch

from avsync_core import AVSyncError, InvalidInputError
from avsync_core.audio import AudioCondition
from avsync_core.sampling import (
    ClipRequest,
    make_scheduler,
    sample_chained_clips,
    sample_long_video_latents,
    sample_video_latents,
    window_seed,
)
from conftest import load_golden

FRAMES = 4
STEPS = 3


@pytest.fixture(scope="module")
def inputs():
    t = load_golden("samplers", "sampler_ddim_dual_cfg.safetensors")
    masks = load_golden("segment_masks", "segment_masks.safetensors")[f"mask_nseg{FRAMES}"]
    audio = t["in.audio_tokens"][:1]
    # Three clip windows that sound different: the encoded audio, its reverse along the tokens, and a quieter copy.
    tokens = torch.cat([audio, audio.flip(1), 0.5 * audio])
    condition = AudioCondition(tokens=tokens, null_tokens=t["in.null_audio_tokens"], masks=masks, frames=FRAMES, fps=6)
    return {"text": t["in.text_encodings"][:1], "audio": condition, "first": t["in.first_frame_latents"][:1]}


def _long(unet, inputs, seed, scheduler="ddim", **kwargs):
    return sample_long_video_latents(
        unet,
        make_scheduler(scheduler),
        inputs["first"],
        inputs["text"],
        inputs["audio"],
        seed=seed,
        steps=STEPS,
        audio_scale=4.0,
        progress=False,
        **kwargs,
    )


def _clip(unet, inputs, first, window, seed, scheduler="ddim"):
    return sample_video_latents(
        unet,
        make_scheduler(scheduler),
        first,
        inputs["text"],
        inputs["audio"],
        window=window,
        seed=seed,
        steps=STEPS,
        audio_scale=4.0,
        progress=False,
    )


@pytest.mark.parametrize("scheduler", ["ddim", "pndm", "dpmpp_2m"])
def test_each_clip_starts_at_the_previous_clips_last_frame_with_its_own_window_and_seed(unet_tiny_a, inputs, scheduler):
    """Built clip by clip with the one-clip loop: the chain is exactly these clips joined on their shared frames."""
    out = _long(unet_tiny_a, inputs, seed=11, scheduler=scheduler)
    assert out.shape == (1, 4, 1 + 3 * (FRAMES - 1), 8, 8)
    clips, first = [], inputs["first"]
    for window in range(3):
        clips.append(_clip(unet_tiny_a, inputs, first, window, 11 + window, scheduler))
        first = clips[-1][:, :, -1]
    for k in (1, 2):
        assert torch.equal(clips[k][:, :, 0], clips[k - 1][:, :, -1]), "clip k starts at clip k-1's last frame"
    assert torch.equal(out, torch.cat([clips[0], clips[1][:, :, 1:], clips[2][:, :, 1:]], dim=2))
    assert torch.equal(out[:, :, 0], inputs["first"])
    other_audio = _clip(unet_tiny_a, inputs, clips[0][:, :, -1], 0, 12, scheduler)
    assert not torch.allclose(other_audio, clips[1]), "clip 1 hears its own window"


def test_the_seams_seen_by_the_sampler_are_bit_exact(unet_tiny_a, inputs):
    """What each clip's sampler is handed as frame 0 is the last frame of the clip before it, bit for bit."""
    handed = []
    out = _long(unet_tiny_a, inputs, seed=5, callback=lambda window, step: handed.append((window, step.latents)))
    per_clip = FRAMES - 1
    for window in (1, 2):
        seam = window * per_clip
        frame0 = [latents[:, :, 0] for w, latents in handed if w == window]
        assert len(frame0) == STEPS
        for latents in frame0:
            assert torch.equal(latents, out[:, :, seam])


def test_seeds_wrap_past_the_largest_seed(unet_tiny_a, inputs):
    top = 2**64 - 1
    assert window_seed(top, 0) == top and window_seed(top, 1) == 0 and window_seed(top, 2) == 1
    out = _long(unet_tiny_a, inputs, seed=top, windows=2)
    clip0 = _clip(unet_tiny_a, inputs, inputs["first"], 0, top)
    clip1 = _clip(unet_tiny_a, inputs, clip0[:, :, -1], 1, 0)
    assert torch.equal(out, torch.cat([clip0, clip1[:, :, 1:]], dim=2))


def test_a_clip_sampler_that_breaks_the_first_frame_is_refused(inputs):
    first = inputs["first"]

    def drifting(request: ClipRequest) -> torch.Tensor:
        return (request.first_latents[:, None] + 1e-3).expand(-1, FRAMES, -1, -1, -1)

    def short(request: ClipRequest) -> torch.Tensor:
        return request.first_latents[:, None].expand(-1, FRAMES - 1, -1, -1, -1)

    with pytest.raises(AVSyncError, match="changed frame 0 of clip 0"):
        sample_chained_clips(inputs["audio"], first, drifting, seed=0)
    with pytest.raises(AVSyncError, match="expected"):
        sample_chained_clips(inputs["audio"], first, short, seed=0)
    with pytest.raises(InvalidInputError, match="windows must be 1..3"):
        sample_chained_clips(inputs["audio"], first, short, seed=0, windows=4)
    with pytest.raises(InvalidInputError, match=re.escape(f"got {tuple(first[0].shape)}")):
        sample_chained_clips(inputs["audio"], first[0], short, seed=0)
    with pytest.raises(InvalidInputError, match="first_latents must be .* got list"):
        sample_chained_clips(inputs["audio"], first.tolist(), short, seed=0)


def test_one_window_is_one_clip_and_the_window_count_must_be_a_whole_number(inputs):
    def keep(request: ClipRequest) -> torch.Tensor:
        return request.first_latents[:, None].expand(-1, FRAMES, -1, -1, -1)

    out = sample_chained_clips(inputs["audio"], inputs["first"], keep, seed=0, windows=1)
    assert out.shape[1] == FRAMES
    for bad in (True, 2.0):
        with pytest.raises(InvalidInputError, match="windows must be 1..3"):
            sample_chained_clips(inputs["audio"], inputs["first"], keep, seed=0, windows=bad)
