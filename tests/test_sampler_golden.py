"""The standalone sampling loop reproduces the official pipeline (goldens samplers/*), step by step."""

import pytest
import torch

from avsync_core.audio import AudioCondition
from avsync_core.sampling import make_scheduler, sample_video_latents
from conftest import assert_close_rel, load_golden, load_golden_json

CASES = [
    ("sampler_ddim_audio_cfg", "ddim", "unet_tiny_a"),
    ("sampler_pndm_audio_cfg", "pndm", "unet_tiny_a"),
    ("sampler_ddim_dual_cfg", "ddim", "unet_tiny_a"),
    ("sampler_c_ddim_audio_cfg", "ddim", "unet_tiny_c"),
    ("sampler_c_pndm_audio_cfg", "pndm", "unet_tiny_c"),
]


@pytest.mark.parametrize("name,scheduler,model", CASES)
def test_sampler_matches_official(name, scheduler, model, request):
    unet = request.getfixturevalue(model)
    t = load_golden("samplers", f"{name}.safetensors")
    cfg = load_golden_json("samplers", f"{name}.json")["config"]
    steps = []
    out = sample_video_latents(
        unet,
        make_scheduler(scheduler),
        t["in.first_frame_latents"],
        t["in.text_encodings"],
        _condition(t, cfg["frames"]),
        steps=cfg["steps"],
        audio_scale=cfg["audio_guidance"],
        text_scale=cfg["text_guidance"],
        null_text=t.get("in.null_text_encoding"),
        init_noise=t["in.init_noise"],
        progress=False,
        callback=steps.append,
    )
    assert [int(s.timestep) for s in steps] == t["timesteps"].tolist()
    for i, step in enumerate(steps):
        assert_close_rel(step.unet_output, t["steps.unet_out"][i], 1e-4, f"{name} unet output {i}")
        assert_close_rel(step.guided_eps, t["steps.guided_eps"][i], 1e-4, f"{name} guided eps {i}")
        assert_close_rel(step.latents, t["steps.latents"][i], 1e-4, f"{name} latents after step {i}")
    assert_close_rel(out, t["out.final_latents"], 1e-4, f"{name} final latents")
    assert torch.equal(out[:, :, 0], t["in.first_frame_latents"]), "frame 0 must stay the image latent, bit for bit"


def test_textbook_pndm_warmup_differs_from_official(unet_tiny_a):
    """The official in-place PNDM update is a real difference; turning it off must change the result."""
    t = load_golden("samplers", "sampler_pndm_audio_cfg.safetensors")
    kwargs = dict(steps=6, init_noise=t["in.init_noise"], progress=False)
    args = (t["in.first_frame_latents"], t["in.text_encodings"], _condition(t, 6))
    textbook = sample_video_latents(unet_tiny_a, make_scheduler("pndm"), *args, official_pndm_warmup=False, **kwargs)
    assert (textbook - t["out.final_latents"]).abs().max() > 1e-2 * t["out.final_latents"].abs().max()


def _condition(t, frames):
    """The golden's audio tokens, null tokens and (frames, 229) masks as the sampler's audio condition."""
    return AudioCondition(
        tokens=t["in.audio_tokens"],
        null_tokens=t["in.null_audio_tokens"],
        masks=t["in.audio_masks"][0],
        frames=frames,
        fps=6.0,
    )
