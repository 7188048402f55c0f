"""Parity inside ComfyUI: its own UNetModel, patched by this pack, computes what the official model computes.

Host tests: they need a ComfyUI checkout (COMFYUI_PATH or /opt/ComfyUI) and skip with a clear message without.
"""

import json

import pytest
import torch

import comfy_host
from conftest import assert_close_rel, golden_dir, load_golden

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def host(official_tiny_c):
    comfy_host.import_comfy()
    pkg = comfy_host.load_plugin_package()
    from comfyui_avsync.avsync_core.model.motion_files import load_motion_module

    base, _ = comfy_host.build_comfy_tiny_unet(golden_dir())
    motion, _ = load_motion_module(official_tiny_c)
    return pkg, base, motion


def _transformer_options(patched, run):
    from comfyui_avsync.nodes.patching import RUN_KEY

    options = dict(patched.model_options["transformer_options"])
    options["wrappers"] = patched.wrappers  # what ComfyUI merges in before sampling
    options[RUN_KEY] = run
    options["cond_or_uncond"] = [0]
    return options


@pytest.mark.parametrize("case", ["forward_1", "forward_2"])
def test_patched_comfy_unet_matches_official_forward(host, case):
    pkg, base, motion = host
    import comfy.model_management
    from comfyui_avsync.avsync_core.sampling.run import SamplingRun
    from comfyui_avsync.nodes.patching import apply_avsync

    patched = apply_avsync(base, motion)
    comfy.model_management.load_models_gpu([patched])
    t = load_golden("unet_tiny_c", f"{case}.safetensors")
    sample = t["in.sample"]
    b, c, f, h, w = sample.shape
    timestep = t["in.timestep"]
    timestep = (timestep[None].expand(b) if timestep.dim() == 0 else timestep).repeat_interleave(f).float()
    context = t["in.encoder_hidden_states"].reshape(b * f, *t["in.encoder_hidden_states"].shape[2:])
    audio = t["in.audio_encoder_hidden_states"]
    run = SamplingRun(
        frames=f, first_latents=sample[:, :, 0], tokens=audio, null_tokens=audio, masks=t["in.audio_attention_mask"][0]
    )
    x = sample.transpose(1, 2).reshape(b * f, c, h, w)
    with torch.no_grad():
        out = patched.model.diffusion_model(
            x, timestep, context=context, transformer_options=_transformer_options(patched, run)
        )
    assert_close_rel(out.view(b, f, c, h, w).transpose(1, 2), t["out.sample"], 1e-4, f"ComfyUI {case}")


def test_guider_with_comfy_sampler_matches_official_ddim(host):
    """Euler in sigma space at the DDIM golden's noise levels is DDIM (eta 0); DisableNoise on the prepared latent."""
    pkg, base, motion = host
    import comfy.samplers
    from comfyui_avsync.avsync_core.audio.condition import AudioCondition
    from comfyui_avsync.nodes.guider import AVSyncCFGGuider
    from comfyui_avsync.nodes.patching import apply_avsync

    t = load_golden("samplers", "sampler_c_ddim_audio_cfg.safetensors")
    table = json.loads((golden_dir() / "samplers" / "sampler_c_ddim_audio_cfg.json").read_text())["sigma_table"]
    sigmas = torch.tensor(table["sigmas"], dtype=torch.float32)
    audio = AudioCondition(
        tokens=t["in.audio_tokens"],
        null_tokens=t["in.null_audio_tokens"],
        masks=t["in.audio_masks"][0],
        frames=6,
        fps=6.0,
    )
    guider = AVSyncCFGGuider(apply_avsync(base, motion), audio, audio_scale=4.0, text_scale=1.0)
    guider.set_conds([[t["in.text_encodings"], {}]])

    scale = base.model.latent_format.scale_factor
    # ComfyUI's x is the DDPM latent times sqrt(1 + sigma^2); frame 0 stays the clean latent.
    start = t["in.init_latents"][0].transpose(0, 1).clone()
    start[1:] *= (1 + sigmas[0] ** 2).sqrt()
    out = guider.sample(
        torch.zeros_like(start),
        start / scale,
        comfy.samplers.sampler_object("euler"),
        sigmas,
        seed=0,
        disable_pbar=True,
    )
    final = out * scale
    final[1:] /= (1 + sigmas[-1] ** 2).sqrt()
    expected = t["out.final_latents"][0].transpose(0, 1)
    assert_close_rel(final, expected, 1e-3, "ComfyUI sampler vs official DDIM")
    assert torch.equal(out[0], start[0] / scale), "frame 0 comes back as the given latent, bit for bit"
