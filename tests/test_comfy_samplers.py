"""Sampling in ComfyUI as artists run it: every sampler and scheduler of the dropdowns, in every guidance mode,
through ComfyUI's CFG hooks (what "cond" and "uncond" mean under each guidance), and clear errors on bad input.

Host tests: ComfyUI runs in-process on the CPU (COMFYUI_PATH or /opt/ComfyUI; skipped with a message without).
The model is ComfyUI's own SD1.5 UNet holding the golden unet_tiny_c, patched with its motion module; the audio
condition is the golden's audio tokens with the official 4-frame segment masks.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import comfy_host
from conftest import golden_dir, load_golden

pytestmark = pytest.mark.host

FRAMES = 4
STEPS = 2
# (audio guidance, text guidance): one branch (no guidance), two (audio-only or text-only), three (dual).
GUIDANCE = {"off": (1.0, 1.0), "audio": (4.0, 1.0), "text": (1.0, 3.0), "dual": (3.0, 2.0)}
MODES = tuple(GUIDANCE)  # every guidance mode: one branch, two (audio-only, text-only), three
# Samplers that pick their own steps between the first and the last sigma (so not one evaluation per sigma).
OWN_STEPS = {"dpm_fast", "dpm_adaptive"}
KEY = "avsync-test-recorder"


@pytest.fixture(scope="module")
def setup(official_tiny_c):
    comfy_host.import_comfy()
    comfy_host.load_plugin_package()
    from comfyui_avsync.avsync_core.audio.condition import AudioCondition
    from comfyui_avsync.avsync_core.model.motion_files import load_motion_module
    from comfyui_avsync.nodes.patching import apply_avsync

    base, unet_config = comfy_host.build_comfy_tiny_unet(golden_dir())
    motion, _ = load_motion_module(official_tiny_c)
    t = load_golden("samplers", "sampler_c_ddim_audio_cfg.safetensors")
    masks = load_golden("segment_masks", "segment_masks.safetensors")[f"mask_nseg{FRAMES}"]
    g = torch.Generator().manual_seed(3)
    return SimpleNamespace(
        model=apply_avsync(base, motion),
        audio=AudioCondition(
            tokens=t["in.audio_tokens"], null_tokens=t["in.null_audio_tokens"], masks=masks, frames=FRAMES, fps=6.0
        ),
        positive=[[torch.randn(1, 7, unet_config["context_dim"], generator=g), {}]],
        negative=[[torch.randn(1, 7, unet_config["context_dim"], generator=g), {}]],
        first={"samples": torch.randn(1, 4, 8, 8, generator=g)},
    )


def recording(model):
    """A clone that records every guidance evaluation (the branch outputs of calc_cond_batch) and every call of a
    post-CFG hook (its arguments)."""
    import comfy.patcher_extension

    record = SimpleNamespace(branches=[], hooks=[])

    def calc_cond_batch(executor, model_, conds, x, timestep, model_options):
        out = executor(model_, conds, x, timestep, model_options)
        record.branches.append([o.clone() for o in out])
        return out

    def post_cfg(args):
        record.hooks.append(dict(args))
        return args["denoised"]

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, KEY, calc_cond_batch)
    clone.set_model_sampler_post_cfg_function(post_cfg)
    return clone, record


def run_custom(setup, model, mode: str, sampler: str = "euler", scheduler: str = "normal", sigmas=None):
    """AVSync Guider + AVSync Clip Latent + core SamplerCustomAdvanced, KSamplerSelect and BasicScheduler."""
    from comfy_extras import nodes_custom_sampler as ncs
    from comfyui_avsync.nodes.sampling_nodes import AVSyncClipLatent, AVSyncGuider

    audio_scale, text_scale = GUIDANCE[mode]
    with torch.inference_mode():
        guider = AVSyncGuider().get_guider(
            model, setup.positive, setup.audio, audio_scale, text_scale, 0, setup.negative
        )[0]
        latent = AVSyncClipLatent().make(model, setup.audio, first_latent=setup.first)[0]
        if sigmas is None:
            sigmas = ncs.BasicScheduler().get_sigmas(model, scheduler, STEPS, 1.0)[0]
        chosen = ncs.KSamplerSelect().get_sampler(sampler)[0] if isinstance(sampler, str) else sampler
        out = ncs.SamplerCustomAdvanced().sample(ncs.RandomNoise().get_noise(0)[0], guider, chosen, sigmas, latent)
    return out[0]["samples"], sigmas


def run_sampler_node(setup, model, mode: str, sampler: str = "euler", scheduler: str = "normal", **overrides):
    from comfyui_avsync.nodes.sampling_nodes import AVSyncSampler

    audio_scale, text_scale = GUIDANCE[mode]
    kwargs = dict(seed=0, steps=STEPS, sampler_name=sampler, scheduler=scheduler, denoise=1.0)
    kwargs.update(overrides)
    with torch.inference_mode():
        out = AVSyncSampler().sample(
            model,
            setup.positive,
            setup.negative,
            setup.audio,
            audio_guidance=audio_scale,
            text_guidance=text_scale,
            first_latent=setup.first,
            **kwargs,
        )
    return out[0]["samples"]


def assert_sampled(setup, samples, record, sigmas, sampler: str, what: str) -> None:
    """Finite, frame 0 bit for bit the given latent, and every guidance evaluation went through the CFG hooks."""
    assert samples.shape == (FRAMES, 4, 8, 8), what
    assert torch.isfinite(samples).all(), f"{what}: not finite"
    assert torch.equal(samples[0], setup.first["samples"][0]), f"{what}: frame 0 is not the given latent"
    assert record.branches and len(record.hooks) == len(record.branches), f"{what}: a step skipped the CFG hooks"
    if sampler not in OWN_STEPS:
        seen = {round(float(h["sigma"].reshape(-1)[0]), 5) for h in record.hooks}
        steps = {round(float(s), 5) for s in sigmas[:-1] if s > 0}
        assert steps <= seen, f"{what}: no hook call at sigmas {sorted(steps - seen)}"


# --------------------------------------------------------------------------------------------------
# What the CFG hooks see
# --------------------------------------------------------------------------------------------------


def _core_hook_keys() -> tuple[set, set]:
    """The argument names core's own cfg_function hands sampler_cfg_function and post-CFG functions."""
    import comfy.samplers

    seen = {}
    x = torch.zeros(1, 1, 1, 1)
    options = {
        "sampler_cfg_function": lambda args: seen.setdefault("cfg", set(args)) and args["input"] - args["cond"],
        "sampler_post_cfg_function": [lambda args: seen.setdefault("post", set(args)) and args["denoised"]],
    }
    comfy.samplers.cfg_function(None, x, x, 2.0, x, torch.ones(1), options, cond=[], uncond=[])
    return seen["cfg"], seen["post"]


@pytest.mark.parametrize("mode", ["off", "audio", "text", "dual"])
def test_cfg_hooks_see_the_documented_cond_and_uncond(setup, mode):
    """cond/uncond/cond_scale as README and cfg_terms define them; denoised = uncond + scale (cond - uncond) is the
    official combination, bit for bit what the standalone sampler combines."""
    from comfyui_avsync.avsync_core.sampling.guidance import combine_guidance

    cfg_seen = []
    with_cfg_function = setup.model.clone()
    with_cfg_function.set_model_sampler_cfg_function(lambda args: cfg_seen.append(set(args)) or args["cond"])
    run_custom(setup, with_cfg_function, mode)
    model, record = recording(setup.model)
    run_custom(setup, model, mode)
    cfg_keys, post_keys = _core_hook_keys()
    assert len(cfg_seen) == STEPS and all(keys == cfg_keys for keys in cfg_seen), "sampler_cfg_function args differ"
    assert len(record.hooks) == len(record.branches) == STEPS
    audio_scale, text_scale = GUIDANCE[mode]
    for hook, outputs in zip(record.hooks, record.branches):
        assert set(hook) == post_keys, "post-CFG args differ from core's"
        pinned = [o.clone() for o in outputs]
        for o in pinned:
            o.view(-1, FRAMES, *o.shape[1:])[:, 0] = hook["denoised"].view(-1, FRAMES, *o.shape[1:])[:, 0]
        if mode == "off":
            cond, uncond, scale = pinned[0], pinned[0], 1.0
        elif mode == "dual":
            uncond, scale = pinned[0], text_scale
            cond = pinned[1] + (pinned[2] - pinned[1]) * (audio_scale / text_scale)
        else:
            uncond, cond, scale = pinned[0], pinned[1], audio_scale if mode == "audio" else text_scale
        assert torch.equal(hook["uncond_denoised"], uncond) and torch.equal(hook["cond_denoised"], cond)
        assert hook["cond_scale"] == scale
        assert torch.equal(hook["denoised"], combine_guidance(pinned, audio_scale, text_scale))
        if mode == "dual":
            official = pinned[0] + text_scale * (pinned[1] - pinned[0]) + audio_scale * (pinned[2] - pinned[1])
            assert torch.allclose(hook["denoised"], official, rtol=0, atol=1e-5 * official.abs().max())
        negative = hook["uncond"][0]["model_conds"]["c_crossattn"].cond
        positive = hook["cond"][0]["model_conds"]["c_crossattn"].cond
        assert torch.equal(positive, setup.positive[0][0])
        assert torch.equal(negative, (setup.negative if mode in ("dual", "text") else setup.positive)[0][0])


@pytest.mark.parametrize("mode", MODES)
def test_cfg_modifying_nodes_apply_in_every_guidance_mode(setup, mode):
    """RescaleCFG at multiplier 0 is plain CFG on the hooks' cond/uncond/scale: the same animation. At 0.7 it
    changes the animation wherever guidance runs (with no guidance cond = uncond, so it leaves it alone)."""
    from comfy_extras.nodes_model_advanced import RescaleCFG

    plain, _ = run_custom(setup, setup.model, mode)
    same, _ = run_custom(setup, RescaleCFG().patch(setup.model, 0.0)[0], mode)
    rescaled, _ = run_custom(setup, RescaleCFG().patch(setup.model, 0.7)[0], mode)
    assert torch.allclose(same, plain, rtol=0, atol=1e-5 * plain.abs().max())
    assert torch.equal(rescaled[0], plain[0])
    if mode == "off":
        assert torch.allclose(rescaled, plain, rtol=0, atol=1e-5 * plain.abs().max())
    else:
        assert (rescaled - plain).abs().max() > 1e-3 * plain.abs().max()


def test_pre_cfg_functions_get_the_cond_and_uncond_predictions(setup):
    seen = []

    def pre_cfg(args):
        seen.append(args)
        return args["conds_out"]

    model, record = recording(setup.model)
    model.set_model_sampler_pre_cfg_function(pre_cfg)
    run_custom(setup, model, "dual")
    assert len(seen) == STEPS
    for args, hook in zip(seen, record.hooks):
        assert torch.equal(args["conds_out"][0], hook["cond_denoised"])
        assert torch.equal(args["conds_out"][1], hook["uncond_denoised"])
        assert args["cond_scale"] == GUIDANCE["dual"][1]


def test_cfg_pp_samplers_renoise_with_the_unconditional_prediction(setup):
    """Without guidance the unconditional prediction is the conditional one, so CFG++ is its plain sampler; under
    dual guidance it renoises with e(null text, null audio), which changes the animation."""
    euler, _ = run_custom(setup, setup.model, "off", "euler")
    cfg_pp, _ = run_custom(setup, setup.model, "off", "euler_cfg_pp")
    assert torch.allclose(cfg_pp, euler, rtol=0, atol=1e-5 * euler.abs().max())
    euler, _ = run_custom(setup, setup.model, "dual", "euler")
    cfg_pp, _ = run_custom(setup, setup.model, "dual", "euler_cfg_pp")
    assert (cfg_pp - euler).abs().max() > 1e-4 * euler.abs().max()


# --------------------------------------------------------------------------------------------------
# Every sampler and scheduler of the dropdowns
# --------------------------------------------------------------------------------------------------


def _samplers():
    comfy_host.import_comfy()
    import comfy.samplers

    return list(comfy.samplers.KSampler.SAMPLERS), list(comfy.samplers.KSampler.SCHEDULERS)


@pytest.mark.slow  # about 16 s per mode on an idle 2-core machine, minutes when it is shared (docs/development.md)
@pytest.mark.parametrize("mode", MODES)
def test_every_sampler_works_with_the_guider_in_every_mode(setup, mode):
    samplers, _ = _samplers()
    for sampler in samplers:
        model, record = recording(setup.model)
        samples, sigmas = run_custom(setup, model, mode, sampler)
        assert_sampled(setup, samples, record, sigmas, sampler, f"{sampler} / normal / {mode}")


@pytest.mark.parametrize("mode", MODES)
def test_every_scheduler_works_with_the_avsync_sampler_in_every_mode(setup, mode):
    import comfy.samplers

    _, schedulers = _samplers()
    for scheduler in schedulers:
        model, record = recording(setup.model)
        samples = run_sampler_node(setup, model, mode, "euler", scheduler)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, STEPS)
        assert_sampled(setup, samples, record, sigmas, "euler", f"AVSync Sampler euler / {scheduler} / {mode}")


@pytest.mark.slow
@pytest.mark.sweep  # over an hour here: run it with -m sweep (docs/test-strength.md)
@pytest.mark.parametrize("mode", MODES)
def test_every_sampler_and_scheduler_pair_works_both_ways(setup, mode):
    """The full dropdown product, through SamplerCustomAdvanced and through the AVSync Sampler."""
    import comfy.samplers

    samplers, schedulers = _samplers()
    for sampler in samplers:
        for scheduler in schedulers:
            what = f"{sampler} / {scheduler} / {mode}"
            model, record = recording(setup.model)
            samples, sigmas = run_custom(setup, model, mode, sampler, scheduler)
            assert_sampled(setup, samples, record, sigmas, sampler, what)
            model, record = recording(setup.model)
            samples = run_sampler_node(setup, model, mode, sampler, scheduler)
            sigmas = comfy.samplers.KSampler(model, STEPS, "cpu", sampler, scheduler, 1.0).sigmas
            assert_sampled(setup, samples, record, sigmas, sampler, f"AVSync Sampler {what}")


@pytest.mark.parametrize("method", ["pndm", "ddim"])
def test_official_samplers_work_in_every_mode(setup, method):
    from comfyui_avsync.nodes.official_sampling import AVSyncOfficialSchedule

    sampler, sigmas = AVSyncOfficialSchedule().get(method, STEPS)
    for mode in MODES:
        model, record = recording(setup.model)
        samples, _ = run_custom(setup, model, mode, sampler, sigmas=sigmas)
        assert_sampled(setup, samples, record, sigmas, method, f"official {method} / {mode}")
        assert len(record.hooks) == STEPS + (method == "pndm")
        model, record = recording(setup.model)
        samples = run_sampler_node(setup, model, mode, f"official_{method}")
        assert_sampled(setup, samples, record, sigmas, method, f"AVSync Sampler official_{method} / {mode}")


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"steps": 0}, "steps must be 1 or more, got 0"),
        ({"denoise": 0.0}, r"The normal scheduler gives 0 sigma\(s\) for 2 steps at denoise 0.0.*Raise denoise"),
        (
            {"sampler_name": "official_pndm", "denoise": 0.5},
            "official_pndm runs the official schedule from pure noise, so denoise must be 1 \\(got 0.5\\)",
        ),
        ({"sampler_name": "official_ddim", "steps": 1000}, "steps must be a whole number from 1 to 999.*got 1000"),
    ],
)
def test_avsync_sampler_refuses_settings_that_cannot_sample(setup, overrides, message):
    from comfyui_avsync.avsync_core.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=message):
        run_sampler_node(setup, setup.model, "audio", **overrides)


def test_sigmas_without_a_step_are_refused_by_the_guider(setup):
    from comfyui_avsync.avsync_core.errors import InvalidInputError

    for sigmas in (torch.tensor([]), torch.tensor([1.0])):
        with pytest.raises(InvalidInputError, match=f"SIGMAS holds {len(sigmas)} noise level.*at least 2"):
            run_custom(setup, setup.model, "audio", sigmas=sigmas)


def test_official_sampler_refuses_sigmas_that_are_not_its_schedule(setup):
    from comfy_extras import nodes_custom_sampler as ncs
    from comfyui_avsync.avsync_core.errors import InvalidInputError
    from comfyui_avsync.nodes.official_sampling import AVSyncOfficialSchedule

    sampler, sigmas = AVSyncOfficialSchedule().get("pndm", 3)
    other = ncs.BasicScheduler().get_sigmas(setup.model, "normal", 5, 1.0)[0]
    with pytest.raises(InvalidInputError, match="set up for 3 steps and needs 4 sigmas, but SIGMAS holds 6"):
        run_custom(setup, setup.model, "audio", sampler, sigmas=other)
    with pytest.raises(InvalidInputError, match="must decrease step by step, but sigma 0 is"):
        run_custom(setup, setup.model, "audio", sampler, sigmas=sigmas.flip(0))
    with pytest.raises(InvalidInputError, match="steps must be a whole number from 1 to 999.*got 0"):
        AVSyncOfficialSchedule().get("pndm", 0)


def test_official_sampler_refuses_a_model_with_another_noise_schedule(setup):
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete
    from comfyui_avsync.avsync_core.errors import InvalidInputError
    from comfyui_avsync.nodes.official_sampling import AVSyncOfficialSchedule

    zsnr = ModelSamplingDiscrete().patch(setup.model, "eps", True)[0]
    sampler, sigmas = AVSyncOfficialSchedule().get("ddim", STEPS)
    with pytest.raises(InvalidInputError, match="fits SD1.5's noise schedule.*this model's sigmas differ"):
        run_custom(setup, zsnr, "audio", sampler, sigmas=sigmas)


def test_official_sigmas_map_to_the_official_integer_timesteps(setup):
    """ComfyUI's sigma -> timestep map gives back every official timestep (all 999 of them, and timestep 0)."""
    from comfyui_avsync.avsync_core.sampling import official_schedule as official

    model_sampling = setup.model.get_model_object("model_sampling")
    sigmas = official.official_sigmas(official.MAX_STEPS)
    assert model_sampling.timestep(sigmas).tolist() == official.official_timesteps(official.MAX_STEPS) + [0]
    assert torch.allclose(model_sampling.sigmas[model_sampling.timestep(sigmas)], sigmas, rtol=2e-5, atol=0)


# --------------------------------------------------------------------------------------------------
# The host inventory sees the methods the nodes call on ComfyUI's objects
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_inventory_lists_every_host_method_the_nodes_call_while_sampling(setup, official_tiny_c):
    """nodes/compat.py must name every ComfyUI method the nodes call; the static scan in test_comfy_compat sees
    module-level names only, so calls on objects are recorded here during a run (tests/host_reads.py)."""
    from comfyui_avsync.avsync_core.model.motion_files import load_motion_module
    from comfyui_avsync.nodes import compat
    from comfyui_avsync.nodes.patching import apply_avsync
    from host_reads import defining_path, host_reads_from_nodes

    base, _ = comfy_host.build_comfy_tiny_unet(golden_dir())
    motion, _ = load_motion_module(official_tiny_c)
    with host_reads_from_nodes() as seen:
        model = apply_avsync(base, motion)
        run_custom(setup, model, "dual")
        run_sampler_node(setup, model, "dual", "official_pndm")
    used = {path for cls, name in seen if (path := defining_path(cls, name)) and "<locals>" not in path}
    assert "comfy.model_patcher.ModelPatcher.add_object_patch" in used, "the recorder sees calls on objects"
    listed = {req.path for req in compat.HOST_API}
    missing = sorted(used - listed)
    assert not missing, f"add these to nodes/compat.py HOST_API: {missing}"
