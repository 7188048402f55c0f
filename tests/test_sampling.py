"""Behaviour of the standalone sampling loop beyond the goldens: batching, seeds, schedulers, bad input."""

import pytest
import torch

from avsync_core import InvalidInputError
from avsync_core.audio import AudioCondition
from avsync_core.sampling import SCHEDULERS, make_scheduler, sample_video_latents
from avsync_core.sampling.guidance import Branch, combine_guidance, guidance_branches
from conftest import load_golden

FRAMES = 4


@pytest.fixture(scope="module")
def inputs():
    t = load_golden("samplers", "sampler_ddim_dual_cfg.safetensors")
    masks = load_golden("segment_masks", "segment_masks.safetensors")[f"mask_nseg{FRAMES}"]
    return {
        "text": t["in.text_encodings"],
        "null_text": t["in.null_text_encoding"],
        "audio": t["in.audio_tokens"],
        "null_audio": t["in.null_audio_tokens"],
        "masks": masks,
        "first": t["in.first_frame_latents"],
    }


def _condition(inputs, frames=FRAMES, masks=None):
    """Every row of inputs["audio"] is one clip window of the condition."""
    return AudioCondition(
        tokens=inputs["audio"],
        null_tokens=inputs["null_audio"],
        masks=inputs["masks"] if masks is None else masks,
        frames=frames,
        fps=6.0,
    )


def _run(unet, inputs, first, scheduler="ddim", **kwargs):
    kwargs.setdefault("audio_scale", 4.0)
    return sample_video_latents(
        unet,
        make_scheduler(scheduler),
        first,
        inputs["text"],
        _condition(inputs),
        steps=3,
        null_text=inputs["null_text"],
        progress=False,
        **kwargs,
    )


@pytest.mark.parametrize("text_scale", [1.0, 2.5])
def test_batch_of_two_under_guidance_equals_two_single_runs(unet_tiny_a, inputs, text_scale):
    first = torch.cat([inputs["first"], inputs["first"].flip(-1)])
    audio = torch.cat([inputs["audio"], inputs["null_audio"] * 0.5])
    batch_inputs = {**inputs, "audio": audio}
    both = _run(unet_tiny_a, batch_inputs, first, seed=7, text_scale=text_scale, window=[0, 1])
    one = _run(unet_tiny_a, batch_inputs, first[:1], seed=7, text_scale=text_scale, window=0)
    two = _run(unet_tiny_a, batch_inputs, first[1:], seed=8, text_scale=text_scale, window=1)
    torch.testing.assert_close(both, torch.cat([one, two]), rtol=0, atol=1e-5 * both.abs().max().item())


def test_seed_makes_runs_repeatable_and_different_seeds_differ(unet_tiny_a, inputs):
    a = _run(unet_tiny_a, inputs, inputs["first"], seed=3)
    b = _run(unet_tiny_a, inputs, inputs["first"], seed=3)
    c = _run(unet_tiny_a, inputs, inputs["first"], seed=4)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("scheduler", ["ddim", "euler_ancestral"])
def test_no_seed_leaves_the_callers_random_state_alone(unet_tiny_a, inputs, scheduler):
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)
    a = _run(unet_tiny_a, inputs, inputs["first"], scheduler, seed=None)
    assert torch.equal(torch.rand(3), expected_next), "sampling without a seed reseeded torch's global generator"
    b = _run(unet_tiny_a, inputs, inputs["first"], scheduler, seed=None)
    assert not torch.equal(a, b)  # still a fresh draw every call


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_keeps_frame_zero_and_stays_finite(unet_tiny_a, inputs, name):
    out = _run(unet_tiny_a, inputs, inputs["first"], scheduler=name, seed=1)
    assert out.shape == (1, 4, FRAMES, 8, 8)
    assert torch.isfinite(out).all()
    assert torch.equal(out[:, :, 0], inputs["first"])


def test_callback_can_stop_sampling(unet_tiny_a, inputs):
    class Stop(Exception):
        pass

    seen = []

    def callback(step):
        seen.append(step.index)
        raise Stop

    with pytest.raises(Stop):
        _run(unet_tiny_a, inputs, inputs["first"], seed=1, callback=callback)
    assert seen == [0]


def test_branch_plans_follow_the_official_order():
    assert guidance_branches(4.0, 1.0) == (Branch(text=True, audio=False), Branch(text=True, audio=True))
    assert guidance_branches(3.0, 2.0) == (Branch(False, False), Branch(True, False), Branch(True, True))
    assert guidance_branches(1.0, 7.5) == (Branch(False, True), Branch(True, True))
    assert guidance_branches(1.0, 1.0) == (Branch(True, True),)
    e = [torch.tensor(1.0), torch.tensor(3.0), torch.tensor(7.0)]
    assert combine_guidance(e, 3.0, 2.0) == 1 + 2 * (3 - 1) + 3 * (7 - 3)
    assert combine_guidance(e[:2], 4.0, 1.0) == 1 + 4 * (3 - 1)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"audio_scale": -1.0}, "audio guidance must be 0 or more"),
        ({"text_scale": -0.5}, "text guidance must be 0 or more"),
        ({"text_scale": 3.0, "null_text": None}, "null"),
    ],
)
def test_bad_guidance_is_refused(unet_tiny_a, inputs, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        _run(
            unet_tiny_a,
            {**inputs, "null_text": kwargs.pop("null_text", inputs["null_text"])},
            inputs["first"],
            **kwargs,
        )


def test_bad_shapes_and_counts_are_refused(unet_tiny_a, inputs):
    sched = make_scheduler("ddim")
    with pytest.raises(InvalidInputError, match="at least 2 frames"):
        sample_video_latents(
            unet_tiny_a, sched, inputs["first"], inputs["text"], _condition(inputs, frames=1), progress=False
        )
    with pytest.raises(InvalidInputError, match="4-D float tensor"):
        sample_video_latents(unet_tiny_a, sched, inputs["first"][0], inputs["text"], _condition(inputs), progress=False)
    with pytest.raises(InvalidInputError, match="audio_masks"):
        sample_video_latents(
            unet_tiny_a,
            sched,
            inputs["first"],
            inputs["text"],
            _condition(inputs, masks=inputs["masks"][:2]),
            progress=False,
        )
    with pytest.raises(InvalidInputError, match="window 3 does not exist"):
        sample_video_latents(
            unet_tiny_a, sched, inputs["first"], inputs["text"], _condition(inputs), window=3, progress=False
        )
    with pytest.raises(InvalidInputError, match="AudioCondition"):
        sample_video_latents(unet_tiny_a, sched, inputs["first"], inputs["text"], inputs["audio"], progress=False)
    with pytest.raises(InvalidInputError, match="Unknown scheduler"):
        make_scheduler("plms2")
