"""AVSyncUNet.from_official reproduces the official UNet's outputs (goldens unet_tiny_a and unet_tiny_c)."""

import pytest
import torch

from conftest import assert_close_rel, load_golden

CASES = [(m, f) for m in ("unet_tiny_a", "unet_tiny_c") for f in ("forward_1", "forward_2")]


@pytest.mark.parametrize("model,case", CASES)
def test_forward_matches_official(model, case, request):
    unet = request.getfixturevalue(model)
    t = load_golden(model, f"{case}.safetensors")
    with torch.no_grad():
        out = unet(
            t["in.sample"],
            t["in.timestep"],
            t["in.encoder_hidden_states"],
            t["in.audio_encoder_hidden_states"],
            t["in.audio_attention_mask"],
        )
    assert_close_rel(out, t["out.sample"], 1e-4, f"{model}/{case}")


def test_time_embedding_and_first_block_match_intermediates(unet_tiny_a):
    """Localises a mismatch: the time MLP and the first convolution with its temporal mix, against the hooks."""
    t = load_golden("unet_tiny_a", "forward_1.safetensors")
    mid = load_golden("unet_tiny_a", "forward_1_intermediates.safetensors")
    b, c, f, h, w = t["in.sample"].shape
    with torch.no_grad():
        emb = unet_tiny_a._time_embedding(t["in.timestep"], b, f)
        x = t["in.sample"].transpose(1, 2).reshape(b * f, c, h, w)
        conv_in = unet_tiny_a.motion.mix("conv_in")(unet_tiny_a.base.conv_in(x), f)
    assert_close_rel(emb[::f], mid["time_embedding"], 1e-4, "time_embedding")
    conv_in = conv_in.view(b, f, -1, h, w).transpose(1, 2)
    assert_close_rel(conv_in, mid["conv_in"], 1e-4, "conv_in")


def test_frame_order_matters(unet_tiny_a):
    """Guards the (b f) folding: swapping two frames of the input must not just swap the output frames."""
    t = load_golden("unet_tiny_a", "forward_1.safetensors")
    args = (
        t["in.timestep"],
        t["in.encoder_hidden_states"],
        t["in.audio_encoder_hidden_states"],
        t["in.audio_attention_mask"],
    )
    swapped = t["in.sample"][:, :, [0, 2, 1, 3, 4, 5]]
    with torch.no_grad():
        out = unet_tiny_a(t["in.sample"], *args)
        out_swapped = unet_tiny_a(swapped, *args)
    assert not torch.allclose(out_swapped[:, :, [0, 2, 1, 3, 4, 5]], out, atol=1e-3)
