"""The paper's sampling as users run it in ComfyUI: 'AVSync Official Schedule' + 'AVSync Guider' + core
SamplerCustomAdvanced (and the AVSync Sampler's official choices), from the official run's recorded initial noise,
reproduce the official PNDM and DDIM goldens on unet_tiny_c, every UNet call and the final latents.

Host tests: ComfyUI runs in-process on the CPU (COMFYUI_PATH or /opt/ComfyUI; skipped with a message without).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import comfy_host
from conftest import assert_close_rel, golden_dir, load_golden, load_golden_json

pytestmark = pytest.mark.host

GOLDEN_REL = 1e-3  # what the issue asks of the ComfyUI path (the UNet alone matches to about 1e-4)
PROBE = "avsync-test-probe"
CASES = {"ddim": "sampler_c_ddim_audio_cfg", "pndm": "sampler_c_pndm_audio_cfg"}


@pytest.fixture(scope="module")
def patched(official_tiny_c):
    comfy_host.import_comfy()
    comfy_host.load_plugin_package()
    from comfyui_avsync.avsync_core.model.motion_files import load_motion_module
    from comfyui_avsync.nodes.patching import apply_avsync

    base, _ = comfy_host.build_comfy_tiny_unet(golden_dir())
    motion, _ = load_motion_module(official_tiny_c)
    return apply_avsync(base, motion)


class RecordedNoise:
    """A NOISE input that hands the sampler the official run's initial noise (frame 0 gets none)."""

    seed = 0

    def __init__(self, init_noise: torch.Tensor) -> None:
        noise = init_noise[0].transpose(0, 1)  # (frames - 1, c, h, w)
        self.noise = torch.cat([torch.zeros_like(noise[:1]), noise])

    def generate_noise(self, input_latent):
        return self.noise.clone()


def _probed(model):
    """A clone whose UNet calls are recorded inside the pack's wrapper: input, integer timestep, output."""
    import comfy.patcher_extension

    calls = []

    def probe(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        out = executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        calls.append(
            SimpleNamespace(
                x=x.clone(), t=timesteps.clone(), out=out.clone(), chunks=list(transformer_options["cond_or_uncond"])
            )
        )
        return out

    probed = model.clone()
    probed.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, PROBE, probe)
    return probed, calls


def _golden(method: str):
    t = load_golden("samplers", f"{CASES[method]}.safetensors")
    config = load_golden_json("samplers", f"{CASES[method]}.json")["config"]
    from comfyui_avsync.avsync_core.audio.condition import AudioCondition

    audio = AudioCondition(
        tokens=t["in.audio_tokens"],
        null_tokens=t["in.null_audio_tokens"],
        masks=t["in.audio_masks"][0],
        frames=config["frames"],
        fps=6.0,
    )
    return t, config, audio


def _frames(video: torch.Tensor) -> torch.Tensor:
    """(1, c, f, h, w) -> (f, c, h, w), ComfyUI's frame batch."""
    return video[0].transpose(0, 1)


def _check_calls(calls, t, frames: int) -> None:
    """Every UNet call at the official integer timestep, with the official latents and outputs."""
    expected_t = t["timesteps"].tolist()
    assert [int(c.t[0]) for c in calls] == expected_t and all(bool((c.t == c.t[0]).all()) for c in calls)
    assert all(torch.equal(c.t, c.t.round()) for c in calls), "the UNet gets whole timesteps"
    for i, call in enumerate(calls):
        chunks = call.x.view(len(call.chunks), frames, *call.x.shape[1:])
        outs = call.out.view(len(call.chunks), frames, *call.out.shape[1:])
        for j, branch in enumerate(call.chunks):
            assert_close_rel(outs[j], _frames(t["steps.unet_out"][i][branch][None]), GOLDEN_REL, f"unet out {i}.{j}")
        if i > 0:  # what call i sees is the latent after the previous official step
            assert_close_rel(chunks[0], _frames(t["steps.latents"][i - 1]), GOLDEN_REL, f"latents before call {i}")


@pytest.mark.parametrize("method", ["ddim", "pndm"])
def test_official_schedule_node_reproduces_the_official_sampler(patched, method):
    from comfy_extras import nodes_custom_sampler as ncs
    from comfyui_avsync.nodes.official_sampling import AVSyncOfficialSchedule
    from comfyui_avsync.nodes.sampling_nodes import AVSyncClipLatent, AVSyncGuider

    t, config, audio = _golden(method)
    model, calls = _probed(patched)
    scale = model.model.latent_format.scale_factor
    first = {"samples": t["in.first_frame_latents"] / scale}
    with torch.inference_mode():
        sampler, sigmas = AVSyncOfficialSchedule().get(method, config["steps"])
        guider = AVSyncGuider().get_guider(
            model, [[t["in.text_encodings"], {}]], audio, config["audio_guidance"], config["text_guidance"], 0
        )[0]
        latent = AVSyncClipLatent().make(model, audio, first_latent=first)[0]
        out = ncs.SamplerCustomAdvanced().sample(RecordedNoise(t["in.init_noise"]), guider, sampler, sigmas, latent)
    samples = out[0]["samples"]
    assert len(calls) == config["steps"] + (method == "pndm")
    _check_calls(calls, t, config["frames"])
    assert_close_rel(samples * scale, _frames(t["out.final_latents"]), GOLDEN_REL, f"official {method} final")
    assert torch.equal(samples[0], first["samples"][0]), "frame 0 comes back as the given latent, bit for bit"


def test_avsync_sampler_official_pndm_is_the_same_run(patched, monkeypatch):
    import comfy.sample
    from comfyui_avsync.nodes.sampling_nodes import AVSyncSampler

    t, config, audio = _golden("pndm")
    model, calls = _probed(patched)
    scale = model.model.latent_format.scale_factor
    first = {"samples": t["in.first_frame_latents"] / scale}
    noise = RecordedNoise(t["in.init_noise"]).noise
    monkeypatch.setattr(comfy.sample, "prepare_noise", lambda latent, seed, *args: noise.clone())
    with torch.inference_mode():
        samples = AVSyncSampler().sample(
            model,
            [[t["in.text_encodings"], {}]],
            None,
            audio,
            0,
            config["steps"],
            config["audio_guidance"],
            config["text_guidance"],
            "official_pndm",
            "normal",
            1.0,
            first_latent=first,
        )[0]["samples"]
    _check_calls(calls, t, config["frames"])
    assert_close_rel(samples * scale, _frames(t["out.final_latents"]), GOLDEN_REL, "AVSync Sampler official_pndm")
    assert torch.equal(samples[0], first["samples"][0])
