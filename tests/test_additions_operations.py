"""The motion module built from a host's layer classes (the ``operations`` convention of ComfyUI's comfy.ops):
every weighted layer runs through the host's ``forward``, so per-call casting and weight streaming work, and
the result is the one of plain torch.nn layers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from avsync_core.model.additions import AudioContext
from avsync_core.model.motion_files import load_motion_module
from conftest import assert_close_rel, load_golden

FRAMES = 6


class _CastingLinear(nn.Linear):
    """Like comfy.ops.manual_cast.Linear: weights stay in their stored dtype and are cast to the input's per call."""

    calls = 0

    def forward(self, x):
        type(self).calls += 1
        bias = None if self.bias is None else self.bias.to(x)
        return F.linear(x, self.weight.to(x), bias)


class _CastingLayerNorm(nn.LayerNorm):
    calls = 0

    def forward(self, x):
        type(self).calls += 1
        return F.layer_norm(x, self.normalized_shape, self.weight.to(x), self.bias.to(x), self.eps)


CASTING_OPS = SimpleNamespace(Linear=_CastingLinear, LayerNorm=_CastingLayerNorm)


@pytest.fixture(scope="module")
def modules(official_tiny_c):
    plain, _ = load_motion_module(official_tiny_c)
    cast, _ = load_motion_module(official_tiny_c, operations=CASTING_OPS)
    return plain, cast


def _conv_input(module, name: str, g: torch.Generator) -> torch.Tensor:
    channels = module.mix(name).conv_temp.out_features
    return torch.randn(2 * FRAMES, channels, 4, 4, generator=g)


def _block_input(module, name: str, g: torch.Generator) -> torch.Tensor:
    width = module.block(name).norm_temp.normalized_shape[0]
    return torch.randn(2 * FRAMES, 16, width, generator=g)


def _block_outputs(block, x: torch.Tensor, audio: AudioContext) -> tuple[torch.Tensor, torch.Tensor]:
    return block.audio_attention(x, audio), block.temporal_residual(x, FRAMES)


def _audio() -> AudioContext:
    t = load_golden("unet_tiny_c", "forward_1.safetensors")
    return AudioContext(t["in.audio_encoder_hidden_states"][:, 0], FRAMES, t["in.audio_attention_mask"])


def _compare(ours, reference, rel: float) -> None:
    g = torch.Generator().manual_seed(0)
    audio = _audio()
    with torch.no_grad():
        for name in reference.conv_names():
            x = _conv_input(reference, name, g)
            assert_close_rel(ours.mix(name)(x, FRAMES), reference.mix(name)(x, FRAMES), rel, name)
        for name in reference.block_names():
            x = _block_input(reference, name, g)
            pairs = zip(_block_outputs(ours.block(name), x, audio), _block_outputs(reference.block(name), x, audio))
            for mine, expected in pairs:
                assert_close_rel(mine, expected, rel, name)


def test_every_layer_is_built_from_the_operations(modules):
    _, cast = modules
    linears = [m for m in cast.modules() if isinstance(m, nn.Linear)]
    norms = [m for m in cast.modules() if isinstance(m, nn.LayerNorm)]
    assert linears and norms
    assert all(type(m) is _CastingLinear for m in linears) and all(type(m) is _CastingLayerNorm for m in norms)


def test_host_layers_give_the_plain_result_and_are_called(modules):
    """The host path sums conv_temp's three terms in one matmul: only the summation order differs (1e-6)."""
    plain, cast = modules
    _CastingLinear.calls = _CastingLayerNorm.calls = 0
    _compare(cast, plain, 1e-6)
    blocks = len(plain.block_names())
    # every conv_temp once; per block: q,k,v,out of two attentions and the two frame-embedding layers
    assert _CastingLinear.calls == len(plain.conv_names()) + blocks * (4 + 4 + 2)
    assert _CastingLayerNorm.calls == 2 * blocks


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_cast_per_call_stay_within_their_rounding(official_tiny_c, modules, dtype):
    """One stored copy in the half dtype, run on fp32 activations: the error is the weights' rounding, bounded per
    output relative to its largest value by 3 units of the dtype's roundoff (fp16: 1.5e-3, bf16: 1.2e-2; measured:
    6.9e-4 and 6.0e-3)."""
    plain, _ = modules
    half, _ = load_motion_module(official_tiny_c, dtype=dtype, operations=CASTING_OPS)
    assert {p.dtype for p in half.parameters()} == {dtype}
    _compare(half, plain, 3 * torch.finfo(dtype).eps / 2)
