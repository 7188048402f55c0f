"""Per-frame segment masks: identical to the official _auto_split goldens, and the gathered-index form."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from avsync_core.audio import (
    FREQ_PATCHES,
    MAX_FRAMES,
    NUM_TOKENS,
    TIME_PATCHES,
    segment_index,
    segment_masks,
    segment_time_masks,
    segment_time_windows,
)
from avsync_core.errors import InvalidInputError
from conftest import load_golden, load_golden_json

GOLDEN_N = load_golden_json("segment_masks", "segment_masks.json")["n_segments"]


@pytest.fixture(scope="module")
def golden_masks():
    return load_golden("segment_masks", "segment_masks.safetensors")


@pytest.mark.parametrize("frames", GOLDEN_N)
def test_masks_identical_to_official(golden_masks, frames):
    assert torch.equal(segment_masks(frames), golden_masks[f"mask_nseg{frames}"])
    assert torch.equal(segment_time_masks(frames), golden_masks[f"time_mask_nseg{frames}"])


@pytest.mark.parametrize("frames", GOLDEN_N)
def test_windows_match_the_golden_ranges(frames):
    details = load_golden_json("segment_masks", "segment_masks.json")["details"][f"nseg{frames}"]
    assert [[a, b - 1] for a, b in segment_time_windows(frames)] == details["time_patch_ranges_inclusive"]


@pytest.mark.parametrize("frames", range(1, 41))
def test_window_starts_round_half_to_even(frames):
    """Starts are round(i * (19 - w) / (frames - 1)) with ties to even (numpy's rule), widths ceil(19 / frames)."""
    width = math.ceil(TIME_PATCHES / frames)
    expected = [round(Fraction(i * (TIME_PATCHES - width), max(frames - 1, 1))) for i in range(frames)]
    assert segment_time_windows(frames) == [(s, s + width) for s in expected]


def test_a_tie_is_rounded_to_even():
    # 11 frames: width 2, starts i * 17 / 10, so frame 5 sits exactly at 8.5 -> 8 (round-half-up would give 9).
    assert segment_time_windows(11)[5] == (8, 10)


@pytest.mark.parametrize("frames", [1, 2, 5, 6, 11, 12, 19, 24, 100, MAX_FRAMES])
def test_mask_layout_and_gathered_index(frames):
    masks = segment_masks(frames)
    assert masks.shape == (frames, NUM_TOKENS) and masks.dtype == torch.bool
    assert masks[:, 0].all(), "the cls token is always visible"
    time = segment_time_masks(frames)
    # Token 1 + 19 * row + t belongs to time patch t for every frequency row.
    assert torch.equal(
        masks[:, 1:].reshape(frames, FREQ_PATCHES, TIME_PATCHES), time[:, None, :].expand(-1, FREQ_PATCHES, -1)
    )
    index = segment_index(frames)
    assert index.dtype == torch.int64 and index.shape == (frames, 1 + FREQ_PATCHES * time[0].sum())
    assert (index[:, 0] == 0).all() and (index.diff(dim=1) > 0).all()
    rebuilt = torch.zeros_like(masks).scatter_(1, index, True)
    assert torch.equal(rebuilt, masks)


def test_gathered_attention_equals_masked_attention():
    frames, dim = 6, 8
    torch.manual_seed(0)
    q = torch.randn(frames, 3, dim)
    kv = torch.randn(NUM_TOKENS, dim)
    masked = torch.nn.functional.scaled_dot_product_attention(
        q, kv.expand(frames, -1, -1), kv.expand(frames, -1, -1), attn_mask=segment_masks(frames)[:, None, :]
    )
    gathered_kv = kv[segment_index(frames)]
    gathered = torch.nn.functional.scaled_dot_product_attention(q, gathered_kv, gathered_kv)
    assert torch.allclose(masked, gathered, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -3, MAX_FRAMES + 1, 2.5, True, "12"])
def test_invalid_frame_counts(bad):
    for fn in (segment_time_windows, segment_time_masks, segment_masks, segment_index):
        with pytest.raises(InvalidInputError, match=f"1 to {MAX_FRAMES}"):
            fn(bad)
