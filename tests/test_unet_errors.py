"""Bad input to AVSyncUNet gets an error that names the input and what would fit."""

import pytest
import torch

from avsync_core import CheckpointError, InvalidInputError
from avsync_core.model.motion_module import MotionConfig
from avsync_core.sd15.family import check_base_fits
from avsync_core.sd15.unet import SD15_UNET_CONFIG
from conftest import load_golden


@pytest.fixture(scope="module")
def case():
    return load_golden("unet_tiny_a", "forward_1.safetensors")


def _call(unet, case, **override):
    args = {
        "sample": case["in.sample"],
        "timestep": case["in.timestep"],
        "encoder_hidden_states": case["in.encoder_hidden_states"],
        "audio_encoder_hidden_states": case["in.audio_encoder_hidden_states"],
        "audio_attention_mask": case["in.audio_attention_mask"],
        **override,
    }
    return unet(**args)


@pytest.mark.parametrize(
    "override,message",
    [
        ({"sample": torch.zeros(2, 4, 8, 8)}, "sample must be \\(batch, channels, frames"),
        ({"sample": torch.zeros(2, 4, 6, 8, 8, dtype=torch.long)}, "floating-point"),
        ({"sample": torch.zeros(2, 4, 1, 8, 8)}, "at least 2 frames"),
        ({"sample": torch.zeros(2, 3, 6, 8, 8)}, "3 channels"),
        ({"timestep": torch.tensor([1, 2, 3])}, "timestep"),
        ({"encoder_hidden_states": torch.zeros(2, 7, 16)}, "width 16"),
        ({"encoder_hidden_states": torch.zeros(2, 5, 7, 32)}, "encoder_hidden_states must be"),
        ({"audio_encoder_hidden_states": torch.zeros(2, 229, 30)}, "width 30"),
        ({"audio_attention_mask": torch.ones(2, 6, 229)}, "bool"),
        ({"audio_attention_mask": torch.ones(2, 6, 100, dtype=torch.bool)}, "audio_attention_mask must be"),
        ({"encoder_hidden_states": [[0.0]]}, "torch tensor"),
    ],
)
def test_bad_inputs(unet_tiny_a, case, override, message):
    with pytest.raises(InvalidInputError, match=message):
        _call(unet_tiny_a, case, **override)


def test_shared_text_and_audio_over_frames_equal_repeated(unet_tiny_a, case):
    """(b, n, d) inputs mean "the same for every frame", as the official pipeline repeats them."""
    text = case["in.encoder_hidden_states"][:, 0]
    audio = case["in.audio_encoder_hidden_states"][:, 0]
    with torch.no_grad():
        shared = _call(unet_tiny_a, case, encoder_hidden_states=text, audio_encoder_hidden_states=audio)
        repeated = _call(
            unet_tiny_a,
            case,
            encoder_hidden_states=text[:, None].expand(-1, 6, -1, -1).contiguous(),
            audio_encoder_hidden_states=audio[:, None].expand(-1, 6, -1, -1).contiguous(),
        )
    torch.testing.assert_close(shared, repeated, rtol=0, atol=1e-6)


@pytest.mark.parametrize("width,family", [(1024, "Stable Diffusion 2"), (2048, "SDXL")])
def test_sd2_and_sdxl_bases_are_refused(width, family):
    with pytest.raises(CheckpointError, match=family):
        check_base_fits({**SD15_UNET_CONFIG, "cross_attention_dim": width}, MotionConfig())


def test_sd15_base_fits_the_official_layout():
    check_base_fits(SD15_UNET_CONFIG, MotionConfig())
