"""The AVSync nodes inside ComfyUI: they compose with the rest of a graph, and bad input gets a clear message.

Host tests: ComfyUI runs in-process on the CPU (COMFYUI_PATH or /opt/ComfyUI; skipped with a message without).
The model is ComfyUI's own SD1.5 UNet holding the golden unet_tiny_c, patched with that checkpoint's
motion module (loaded from an official-layout folder through the loader node); the audio encoder is the golden
tiny ImageBind; the VAE is a TAESD with random weights. Nodes run under torch.inference_mode, as in the server.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest
import torch
from safetensors.torch import save_file

import comfy_host
from conftest import assert_close_rel

pytestmark = pytest.mark.host

FRAMES = 4
STEPS = 2
PROBE = "avsync-test-probe"  # key of the recording wrapper the tests add on top of the pack's
# Results that differ only in how ComfyUI batches rows: the goldens' UNet tolerance (golden/README.md).
BATCHING_REL = 1e-4


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def model_folders(**paths: list[Path]):
    """Point folder_paths keys at the given folders for the duration, then restore what was there."""
    import folder_paths

    saved = {k: folder_paths.folder_names_and_paths.get(k) for k in paths}
    saved = {k: (list(v[0]), set(v[1])) if v else None for k, v in saved.items()}
    try:
        for key, folders in paths.items():
            extensions = saved[key][1] if saved[key] else set()
            folder_paths.folder_names_and_paths[key] = ([str(f) for f in folders], extensions)
        folder_paths.filename_list_cache.clear()
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                folder_paths.folder_names_and_paths.pop(key, None)
            else:
                folder_paths.folder_names_and_paths[key] = value
        folder_paths.filename_list_cache.clear()


@pytest.fixture(scope="module")
def pack():
    comfy_host.load_plugin_package()  # imports ComfyUI first
    from comfyui_avsync import nodes as pack_nodes

    return pack_nodes


@pytest.fixture(scope="module")
def models_root(pack, official_tiny_c, golden, tmp_path_factory):
    """models/avsyncd (the official-layout folder tiny_c, and the same weights as our file), models/imagebind
    (the tiny ImageBind as our compact file) and an empty models/loras."""
    from comfyui_avsync.avsync_core.audio import ImageBindAudioEncoder
    from comfyui_avsync.avsync_core.model.motion_files import load_motion_module, save_motion_module

    root = tmp_path_factory.mktemp("avsync_models")
    for sub in ("avsyncd", "imagebind", "loras"):
        (root / sub).mkdir()
    (root / "avsyncd" / "tiny_c").symlink_to(official_tiny_c, target_is_directory=True)
    motion, info = load_motion_module(official_tiny_c)
    save_motion_module(root / "avsyncd" / "tiny_c_motion.safetensors", motion, frames=info.frames, fps=info.fps)
    tiny_imagebind = golden / "imagebind_audio_tiny" / "imagebind_audio_tiny.safetensors"
    ImageBindAudioEncoder.from_file(tiny_imagebind, num_heads=4).save_safetensors(
        root / "imagebind" / "imagebind_tiny.safetensors"
    )
    return root


@pytest.fixture(scope="module")
def folders(models_root):
    import folder_paths

    with model_folders(
        **{k: folder_paths.get_folder_paths(k) + [models_root / k] for k in ("avsyncd", "imagebind", "loras")}
    ):
        yield models_root


@pytest.fixture(scope="module")
def tiny(pack, golden):
    base, unet_config = comfy_host.build_comfy_tiny_unet(golden)
    return SimpleNamespace(base=base, context_dim=unet_config["context_dim"])


@pytest.fixture(scope="module")
def motion(folders, pack):
    from comfyui_avsync.nodes.model_nodes import AVSyncMotionModuleLoader

    return AVSyncMotionModuleLoader().load("tiny_c [AVSyncD folder]")[0]


@pytest.fixture(scope="module")
def encoder(folders, pack):
    from comfyui_avsync.nodes.audio_nodes import AVSyncImageBindLoader

    return AVSyncImageBindLoader().load("imagebind_tiny.safetensors")[0]


@pytest.fixture(scope="module")
def text(tiny):
    g = torch.Generator().manual_seed(3)
    positive = [[torch.randn(1, 7, tiny.context_dim, generator=g), {}]]
    negative = [[torch.randn(1, 7, tiny.context_dim, generator=g), {}]]
    return SimpleNamespace(positive=positive, negative=negative)


def comfy_audio(seconds: float, seed: int = 0) -> dict:
    """A ComfyUI AUDIO value: noise bursts at 44.1 kHz stereo (the encoder node resamples and mixes)."""
    g = torch.Generator().manual_seed(seed)
    rate = 44100
    n = int(seconds * rate)
    envelope = (torch.arange(n) % (rate // 3) < rate // 20).float()
    return {"waveform": (0.5 * torch.randn(1, 2, n, generator=g) * envelope).clamp(-1, 1), "sample_rate": rate}


def encode(encoder, seconds: float = 1.0, max_windows: int = 1, frames: int = FRAMES):
    from comfyui_avsync.nodes.audio_nodes import AVSyncEncodeAudio

    with torch.inference_mode():
        return AVSyncEncodeAudio().encode(comfy_audio(seconds), encoder, frames, frames / 2, max_windows)["result"][0]


@pytest.fixture(scope="module")
def audio(encoder):
    return encode(encoder)


@pytest.fixture(scope="module")
def first(pack):
    return {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))}


@pytest.fixture(scope="module")
def vae(pack):
    """A TAESD VAE with random weights (ComfyUI's ops leave weights uninitialised, so they are filled here)."""
    import comfy.sd
    from comfy.taesd.taesd import TAESD

    g = torch.Generator().manual_seed(11)
    state = {}
    for key, value in TAESD(latent_channels=4).state_dict().items():
        if value.dim() == 4:
            state[key] = torch.randn(value.shape, generator=g) / value[0].numel() ** 0.5
        else:
            state[key] = torch.ones(()) if key == "vae_scale" else torch.zeros(value.shape)
    return comfy.sd.VAE(sd=state)


def apply(model, motion_module):
    from comfyui_avsync.nodes.model_nodes import AVSyncApplyMotionModule

    return AVSyncApplyMotionModule().apply(model, motion_module)[0]


def sample_custom(model, guider, latent: dict, seed: int = 0, steps: int = STEPS) -> torch.Tensor:
    """Core SamplerCustomAdvanced with RandomNoise, euler and the normal schedule."""
    from comfy_extras import nodes_custom_sampler as ncs

    with torch.inference_mode():
        noise = ncs.RandomNoise().get_noise(seed)[0]
        sigmas = ncs.BasicScheduler().get_sigmas(model, "normal", steps, 1.0)[0]
        sampler = ncs.KSamplerSelect().get_sampler("euler")[0]
        output, _ = ncs.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, latent)
    return output["samples"]


def run_plain(model, text, seed: int = 1) -> torch.Tensor:
    """A plain SD1.5 sampling (core CFGGuider, cfg 3 so cond and uncond are both evaluated) of 4 images."""
    from comfy_extras import nodes_custom_sampler as ncs

    guider = ncs.CFGGuider().get_guider(model, text.positive, text.negative, 3.0)[0]
    return sample_custom(model, guider, {"samples": torch.zeros(FRAMES, 4, 8, 8)}, seed)


def run_avsync(model, audio, first, text, audio_guidance=4.0, text_guidance=1.0, seed=2, window=0) -> torch.Tensor:
    """AVSync Guider + AVSync Clip Latent + core SamplerCustomAdvanced."""
    from comfyui_avsync.nodes.sampling_nodes import AVSyncClipLatent, AVSyncGuider

    with torch.inference_mode():
        guider = AVSyncGuider().get_guider(
            model, text.positive, audio, audio_guidance, text_guidance, window, text.negative
        )[0]
        latent = AVSyncClipLatent().make(model, audio, first_latent=first)[0]
    return sample_custom(model, guider, latent, seed)


def with_probe(model):
    """A clone of ``model`` with a DIFFUSION_MODEL wrapper inside the pack's: it records what the UNet is called
    with."""
    import comfy.patcher_extension

    calls = []

    def probe(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        calls.append(
            SimpleNamespace(x=x.clone(), context=context.clone(), chunks=list(transformer_options["cond_or_uncond"]))
        )
        return executor(x, timesteps, context, y, control, transformer_options, **kwargs)

    probed = model.clone()
    probed.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, PROBE, probe)
    return probed, calls


def motion_of(patched):
    from comfyui_avsync.nodes.patching import KEY

    return patched.get_additional_models_with_key(KEY)[0].model


def patcher_state(model) -> tuple:
    """Everything Apply could change on a ModelPatcher, by identity of the stored objects."""

    def ids(mapping):
        return {k: [id(x) for x in v] if isinstance(v, list) else id(v) for k, v in mapping.items()}

    return (
        ids(model.object_patches),
        ids(model.patches),
        {kind: ids(by_key) for kind, by_key in model.wrappers.items()},
        {kind: ids(by_key) for kind, by_key in model.callbacks.items()},
        ids(model.additional_models),
        ids(model.injections),
        repr(model.model_options),
        model.patches_uuid,
    )


# --------------------------------------------------------------------------------------------------
# Composability
# --------------------------------------------------------------------------------------------------


def test_apply_leaves_the_input_model_untouched_and_unpatched_after_a_run(tiny, motion, audio, first, text):
    base = tiny.base.clone()
    module = base.model.diffusion_model
    resnet_conv = module.input_blocks[1][0].in_layers[2]
    weights_before = {k: v.clone() for k, v in module.state_dict().items()}
    state_before = patcher_state(base)
    plain_before = run_plain(base, text)

    patched = apply(base, motion)
    assert patcher_state(base) == state_before, "Apply changed the input MODEL's patches, wrappers or options"
    assert patched is not base and patched.is_clone(base)
    animated = run_avsync(patched, audio, first, text)
    assert type(module.input_blocks[1][0].in_layers[2]).__name__.startswith("AVSync"), (
        "the patch was live during the run"
    )

    plain_after = run_plain(base, text)
    assert module.input_blocks[1][0].in_layers[2] is resnet_conv, "the plain model runs its original modules again"
    assert torch.equal(plain_after, plain_before), "the plain model's output changed after a patched run"
    assert patcher_state(base) == state_before
    assert all(torch.equal(v, weights_before[k]) for k, v in module.state_dict().items())
    assert animated.shape == (FRAMES, 4, 8, 8) and not torch.allclose(animated[1:], plain_before[1:])


def test_patched_and_plain_clones_interleaved_give_their_solo_results(tiny, motion, audio, first, text):
    plain = tiny.base.clone()
    patched = apply(tiny.base.clone(), motion)
    solo_plain = run_plain(plain, text)
    solo_patched = run_avsync(patched, audio, first, text)
    for _ in range(2):
        assert torch.equal(run_avsync(patched, audio, first, text), solo_patched)
        assert torch.equal(run_plain(plain, text), solo_plain)
    # A second patched model from the same base, with its own guidance, does not disturb the first either.
    other = apply(tiny.base.clone(), motion)
    other_result = run_avsync(other, audio, first, text, audio_guidance=2.0)
    assert torch.equal(run_avsync(patched, audio, first, text), solo_patched)
    assert not torch.equal(other_result, solo_patched)


def test_motion_module_is_loaded_and_accounted_by_comfy_memory_management(tiny, motion, audio, first, text):
    import comfy.model_management

    patched = apply(tiny.base.clone(), motion)
    run_avsync(patched, audio, first, text)
    module = motion_of(patched)
    loaded = [
        m for m in comfy.model_management.current_loaded_models if m.model is not None and m.model.model is module
    ]
    assert len(loaded) == 1, "the motion module is loaded by load_models_gpu as a model of its own"
    size = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    assert loaded[0].model.model_size() == size


def _write_lora(path: Path, seed: int = 7) -> None:
    """A rank-2 kohya-style LoRA on a resnet conv (shadowed by the pack) and on a cross-attention query."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, down_shape, up_shape in (
        ("lora_unet_down_blocks_0_resnets_0_conv1", (2, 32, 3, 3), (32, 2, 1, 1)),
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_q", (2, 32), (32, 2)),
    ):
        tensors[f"{name}.lora_down.weight"] = 0.3 * torch.randn(down_shape, generator=g)
        tensors[f"{name}.lora_up.weight"] = 0.3 * torch.randn(up_shape, generator=g)
        tensors[f"{name}.alpha"] = torch.tensor(2.0)
    save_file(tensors, str(path))


def test_lora_before_or_after_the_patch_gives_the_same_animation(tiny, motion, audio, first, text, folders):
    import nodes as comfy_nodes

    _write_lora(folders / "loras" / "tiny_lora.safetensors")
    lora = comfy_nodes.LoraLoaderModelOnly()
    patched = apply(tiny.base.clone(), motion)
    without_lora = run_avsync(patched, audio, first, text)  # leaves the pack's modules live on the shared UNet

    lora_after = lora.load_lora_model_only(patched, "tiny_lora.safetensors", 1.0)[0]
    lora_before = apply(lora.load_lora_model_only(tiny.base.clone(), "tiny_lora.safetensors", 1.0)[0], motion)
    key = "diffusion_model.input_blocks.1.0.in_layers.2.weight"
    assert key in lora_after.patches and key in lora_before.patches, "the LoRA kept its key on the shadowed conv"
    after = run_avsync(lora_after, audio, first, text)
    before = run_avsync(lora_before, audio, first, text)
    assert torch.equal(after, before)
    assert not torch.allclose(after, without_lora)
    assert torch.equal(run_avsync(patched, audio, first, text), without_lora), "the LoRA stayed on its own clone"


def test_weight_patch_on_a_shadowed_conv_reaches_the_avsyncd_path(tiny, golden, motion, audio, first, text):
    """A weight patch on in_layers.2 (wrapped by AVSyncD's temporal mix) acts exactly like baking it into the weight."""
    from comfyui_avsync.nodes.patching import _TemporalMix

    key = "diffusion_model.input_blocks.1.0.in_layers.2.weight"
    weight = tiny.base.model.state_dict()[key]
    diff = 0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(9))

    patched = apply(tiny.base.clone(), motion)
    shadow = patched.object_patches["diffusion_model.input_blocks.1.0.in_layers.2"]
    assert (
        isinstance(shadow, _TemporalMix)
        and shadow.__dict__ is tiny.base.model.diffusion_model.input_blocks[1][0].in_layers[2].__dict__
    )
    plain_result = run_avsync(patched, audio, first, text)
    with_diff = patched.clone()
    assert with_diff.add_patches({key: (diff,)}, 1.0) == [key]
    patched_result = run_avsync(with_diff, audio, first, text)

    baked, _ = comfy_host.build_comfy_tiny_unet(golden)
    with torch.no_grad():
        baked.model.diffusion_model.input_blocks[1][0].in_layers[2].weight += diff
    baked_result = run_avsync(apply(baked, motion), audio, first, text)
    assert torch.equal(patched_result, baked_result)
    assert not torch.allclose(patched_result, plain_result)


def _one_chunk_at_a_time(model):
    """A clone whose memory estimate never fits two chunks, so ComfyUI's calc_cond_batch runs them one by one."""
    single = model.clone()
    single.add_object_patch("memory_usage_factor", 1e30)
    return single


def test_branch_batching_does_not_change_the_result_and_each_chunk_hears_its_audio(tiny, motion, audio, first, text):
    patched = apply(tiny.base.clone(), motion)
    module = motion_of(patched)
    to_k = module.block(module.block_names()[0]).attn_audio.to_k
    seen_tokens = []
    handle = to_k.register_forward_hook(lambda mod, args, out: seen_tokens.append(args[0].clone()))
    try:
        batched, batched_calls = with_probe(patched)
        together = run_avsync(batched, audio, first, text, audio_guidance=4.0, text_guidance=2.0)
        single, single_calls = with_probe(_one_chunk_at_a_time(patched))
        alone = run_avsync(single, audio, first, text, audio_guidance=4.0, text_guidance=2.0)
    finally:
        handle.remove()
    assert [c.chunks for c in batched_calls] == [[2, 1, 0]] * STEPS
    assert [c.chunks for c in single_calls] == [[2], [1], [0]] * STEPS
    # Other GEMM shapes may round differently in the last bits (3e-6 relative seen with 2 threads, 0 with 1).
    assert_close_rel(alone, together, BATCHING_REL, "branches one at a time vs batched")

    # Dual guidance: branch 0 = null text + null audio, 1 = text + null audio, 2 = text + audio.
    real, null = audio.tokens[0], audio.null_tokens[0]
    assert len(seen_tokens) == len(batched_calls) + len(single_calls)
    for call, tokens in zip(batched_calls + single_calls, seen_tokens):
        assert tokens.shape[0] == len(call.chunks)
        for chunk, branch in enumerate(call.chunks):
            assert torch.equal(tokens[chunk], real if branch == 2 else null), f"branch {branch} got the wrong audio"
            text_rows = call.context.view(len(call.chunks), FRAMES, *call.context.shape[1:])[chunk]
            expected_text = text.negative[0][0] if branch == 0 else text.positive[0][0]
            assert torch.equal(text_rows, expected_text.expand(FRAMES, -1, -1)), f"branch {branch} got the wrong text"


def test_audio_guidance_acts_through_the_difference_between_real_and_null_audio(tiny, motion, audio, first, text):
    patched = apply(tiny.base.clone(), motion)
    silent_null = dataclasses.replace(audio, null_tokens=audio.tokens[:1].clone())
    reference = run_avsync(patched, silent_null, first, text, audio_guidance=4.0)
    for eta in (1.0, 8.0):  # eta 1 is a single branch: ComfyUI then batches fewer rows
        assert_close_rel(
            run_avsync(patched, silent_null, first, text, audio_guidance=eta),
            reference,
            BATCHING_REL,
            f"audio guidance {eta} with null audio = real audio",
        )
    real = run_avsync(patched, audio, first, text, audio_guidance=4.0)
    stronger = run_avsync(patched, audio, first, text, audio_guidance=8.0)
    assert (stronger - real).abs().max() > 1e3 * BATCHING_REL * real.abs().max(), "eta acts when the audio differs"


def test_unet_sees_the_clean_first_frame_and_the_output_keeps_it(tiny, motion, audio, text, vae):
    import nodes as comfy_nodes
    from comfyui_avsync.nodes.sampling_nodes import AVSyncSampler

    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        image_latent = comfy_nodes.VAEEncode().encode(vae, image)[0]["samples"]
    patched, calls = with_probe(apply(tiny.base.clone(), motion))
    with torch.inference_mode():
        out = AVSyncSampler().sample(
            patched,
            text.positive,
            text.negative,
            audio,
            0,
            STEPS,
            4.0,
            1.0,
            "dpmpp_2m",
            "karras",
            1.0,
            image=image,
            vae=vae,
        )[0]["samples"]
    assert out.shape == (FRAMES, 4, 8, 8)
    assert torch.equal(out[0], image_latent[0]), "frame 0 of the output is the image latent, bit for bit"
    clean = tiny.base.model.process_latent_in(image_latent)[0]
    assert len(calls) == STEPS
    for call in calls:
        frames = call.x.view(len(call.chunks), FRAMES, *call.x.shape[1:])
        for chunk in range(len(call.chunks)):
            assert torch.equal(frames[chunk, 0], clean), "the UNet sees the clean, scaled first-frame latent"
        assert not torch.equal(frames[0, 1], frames[0, 2]), "the other frames are noisy and different"


def test_nodes_between_sampler_and_unet_see_the_clean_first_frame(tiny, motion, audio, first, text):
    """ControlNet and model wrappers act on the sampler's input before the UNet; frame 0 is clean there too."""
    from comfyui_avsync.nodes.sampling_nodes import AVSyncSampler

    patched = apply(tiny.base.clone(), motion)
    model_sampling = patched.get_model_object("model_sampling")
    seen = []

    def unet_function_wrapper(apply_model, args):
        model_input = model_sampling.calculate_input(args["timestep"], args["input"])
        seen.append(model_input.view(-1, FRAMES, *model_input.shape[1:])[:, 0].clone())
        return apply_model(args["input"], args["timestep"], **args["c"])

    patched.set_model_unet_function_wrapper(unet_function_wrapper)
    with torch.inference_mode():
        AVSyncSampler().sample(
            patched, text.positive, text.negative, audio, 0, STEPS, 4.0, 1.0, "euler", "normal", 1.0, first_latent=first
        )
    clean = tiny.base.model.process_latent_in(first["samples"])
    assert len(seen) == STEPS
    for frame0 in seen:
        torch.testing.assert_close(frame0, clean.expand_as(frame0), rtol=1e-6, atol=1e-6)


def test_sampler_chains_windows_of_long_audio(tiny, motion, encoder, first, text):
    import comfy.sample
    import comfy.samplers
    from comfyui_avsync.avsync_core.sampling.run import clip_latents
    from comfyui_avsync.nodes.guider import AVSyncCFGGuider
    from comfyui_avsync.nodes.sampling_nodes import AVSyncSampler

    long_audio = encode(encoder, seconds=3.2, max_windows=0)  # 6 whole frames: clips of frames 0-3 and 3-6
    assert long_audio.num_windows == 2
    patched = apply(tiny.base.clone(), motion)
    seed = 21
    with torch.inference_mode():
        out = AVSyncSampler().sample(
            patched,
            text.positive,
            text.negative,
            long_audio,
            seed,
            STEPS,
            4.0,
            1.0,
            "euler",
            "normal",
            1.0,
            first_latent=first,
        )[0]["samples"]
    assert out.shape == (1 + 2 * (FRAMES - 1), 4, 8, 8)

    sigmas = comfy.samplers.KSampler(
        patched, STEPS, patched.load_device, "euler", "normal", 1.0, patched.model_options
    ).sigmas

    def window(index, start, audio_window=None):
        latent = clip_latents(start, FRAMES)
        guider = AVSyncCFGGuider(patched, long_audio, 4.0, 1.0, window=index if audio_window is None else audio_window)
        guider.set_conds(text.positive, text.negative)
        with torch.inference_mode():
            return guider.sample(
                comfy.sample.prepare_noise(latent, seed + index),
                latent,
                comfy.samplers.sampler_object("euler"),
                sigmas,
                seed=seed + index,
                disable_pbar=True,
            )

    first_window = window(0, first["samples"])
    assert torch.equal(out[:FRAMES], first_window)
    second_window = window(1, first_window[-1:])
    assert torch.equal(out[FRAMES:], second_window[1:]), "window 2 starts from window 1's last frame"
    assert not torch.allclose(window(1, first_window[-1:], audio_window=0)[1:], out[FRAMES:]), (
        "window 2 hears its own audio"
    )


@pytest.mark.parametrize("seed", [21, 2**64 - 1])
def test_sampler_node_chains_with_the_library_policy(tiny, motion, encoder, first, text, seed):
    """The node's long-audio result is the library's ``sample_chained_clips`` driven by the guider (same seeds,
    same sigmas); the largest seed wraps to 0 for the second clip instead of overflowing."""
    import comfy.sample
    import comfy.samplers
    from comfyui_avsync.avsync_core.sampling.chain import sample_chained_clips
    from comfyui_avsync.avsync_core.sampling.run import clip_latents
    from comfyui_avsync.nodes.guider import AVSyncCFGGuider
    from comfyui_avsync.nodes.sampling_nodes import AVSyncSampler

    long_audio = encode(encoder, seconds=3.2, max_windows=0)  # two clips (frames 0-3 and 3-6)
    patched = apply(tiny.base.clone(), motion)
    args = (patched, text.positive, text.negative, long_audio, seed, STEPS, 4.0, 1.0, "euler", "normal", 1.0)
    with torch.inference_mode():
        out = AVSyncSampler().sample(*args, first_latent=first)[0]["samples"]
    sigmas = comfy.samplers.KSampler(
        patched, STEPS, patched.load_device, "euler", "normal", 1.0, patched.model_options
    ).sigmas
    seeds = []

    def sample_clip(request):
        seeds.append(request.seed)
        latent = clip_latents(request.first_latents, FRAMES)
        guider = AVSyncCFGGuider(patched, long_audio, 4.0, 1.0, window=request.window)
        guider.set_conds(text.positive, text.negative)
        clip = guider.sample(
            comfy.sample.prepare_noise(latent, request.seed),
            latent,
            comfy.samplers.sampler_object("euler"),
            sigmas,
            seed=request.seed,
            disable_pbar=True,
        )
        return clip.view(-1, FRAMES, *clip.shape[1:])

    with torch.inference_mode():
        library = sample_chained_clips(long_audio, first["samples"], sample_clip, seed)
    assert seeds == [seed, (seed + 1) % 2**64]
    assert torch.equal(out, library.reshape(-1, *library.shape[2:]))


@contextlib.contextmanager
def progress_hook(on_update=None):
    import comfy.utils

    updates = []

    def hook(value, total, preview, node_id=None):
        updates.append((value, total, preview))
        if on_update is not None:
            on_update(value, total)

    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        yield updates
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)


def test_sampler_reports_progress_per_step_with_previews(tiny, motion, encoder, first, text):
    import comfy.cli_args
    from comfyui_avsync.nodes.sampling_nodes import AVSyncSampler

    long_audio = encode(encoder, seconds=3.2, max_windows=0)
    patched = apply(tiny.base.clone(), motion)
    args = comfy.cli_args.args
    previous_method = args.preview_method
    args.preview_method = comfy.cli_args.LatentPreviewMethod.Latent2RGB
    try:
        with progress_hook() as updates, torch.inference_mode():
            AVSyncSampler().sample(
                patched,
                text.positive,
                text.negative,
                long_audio,
                0,
                STEPS,
                4.0,
                1.0,
                "euler",
                "normal",
                1.0,
                first_latent=first,
            )
    finally:
        args.preview_method = previous_method
    assert [(v, t) for v, t, _ in updates] == [(step, 2 * STEPS) for step in range(1, 2 * STEPS + 1)]
    for _, _, preview in updates:
        assert preview is not None and preview[0] == "JPEG" and preview[1].size == (8, 8)


def test_interrupt_stops_sampling_with_comfy_exception(tiny, motion, audio, first, text):
    import comfy.model_management
    from comfyui_avsync.nodes.sampling_nodes import AVSyncSampler

    patched = apply(tiny.base.clone(), motion)
    try:
        with progress_hook(lambda value, total: comfy.model_management.interrupt_current_processing(True)) as updates:
            with pytest.raises(comfy.model_management.InterruptProcessingException), torch.inference_mode():
                AVSyncSampler().sample(
                    patched,
                    text.positive,
                    text.negative,
                    audio,
                    0,
                    3,
                    4.0,
                    1.0,
                    "euler",
                    "normal",
                    1.0,
                    first_latent=first,
                )
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert [(v, t) for v, t, _ in updates] == [(1, 3)], "sampling stopped at the step after the interrupt"


# --------------------------------------------------------------------------------------------------
# Misuse and bad input
# --------------------------------------------------------------------------------------------------


def _meta_patcher(model_config):
    """A ModelPatcher around a full-size model built on the meta device: real classes and configs, no memory."""
    import comfy.model_patcher

    meta = torch.device("meta")
    with meta:
        model = model_config.get_model({}, device=meta)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def _foreign_model_config(family: str):
    import comfy.model_detection
    import comfy.supported_models
    import yaml

    if family == "SD2":
        ldm = yaml.safe_load((comfy_host.comfyui_path() / "models" / "configs" / "v2-inference.yaml").read_text())
        unet = comfy.model_detection.convert_config(ldm["model"]["params"]["unet_config"]["params"])
        unet = {**unet, **comfy.supported_models.SD20.unet_config, "use_checkpoint": False}
        unet.pop("use_fp16", None)
    elif family == "SDXL":
        unet = {
            "use_checkpoint": False,
            "image_size": 32,
            "out_channels": 4,
            "use_spatial_transformer": True,
            "legacy": False,
            "num_classes": "sequential",
            "adm_in_channels": 2816,
            "in_channels": 4,
            "model_channels": 320,
            "num_res_blocks": [2, 2, 2],
            "transformer_depth": [0, 0, 2, 2, 10, 10],
            "channel_mult": [1, 2, 4],
            "transformer_depth_middle": 10,
            "use_linear_in_transformer": True,
            "context_dim": 2048,
            "num_head_channels": 64,
            "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
            "use_temporal_attention": False,
            "use_temporal_resblock": False,
        }
    elif family == "SD3":
        unet = {
            "in_channels": 16,
            "patch_size": 2,
            "out_channels": 16,
            "depth": 24,
            "input_size": None,
            "adm_in_channels": 2048,
            "pos_embed_scaling_factor": None,
            "num_patches": 36864,
            "pos_embed_max_size": 192,
            "x_block_self_attn_layers": [],
            "context_embedder_config": {
                "target": "torch.nn.Linear",
                "params": {"in_features": 4096, "out_features": 1536},
            },
        }
    else:  # Flux
        unet = {
            "image_model": "flux",
            "in_channels": 16,
            "out_channels": 16,
            "patch_size": 2,
            "vec_in_dim": 768,
            "context_in_dim": 4096,
            "hidden_size": 3072,
            "mlp_ratio": 4.0,
            "num_heads": 24,
            "depth": 19,
            "depth_single_blocks": 38,
            "axes_dim": [16, 56, 56],
            "theta": 10000,
            "qkv_bias": True,
            "guidance_embed": True,
        }
    config = comfy.model_detection.model_config_from_unet_config(unet)
    assert type(config).__name__ == {"SD2": "SD20"}.get(family, family), f"ComfyUI did not take this for {family}"
    return config


@pytest.mark.parametrize("family", ["SD2", "SDXL", "SD3", "Flux"])
def test_motion_module_on_a_non_sd15_model_names_the_input_and_the_fix(pack, motion, family):
    from comfyui_avsync.avsync_core.errors import CheckpointError
    from comfyui_avsync.avsync_core.model.motion_files import MotionModuleInfo
    from comfyui_avsync.avsync_core.model.motion_module import MotionConfig, MotionModule

    with torch.device("meta"):
        full_size = MotionModule(MotionConfig())
    model = _meta_patcher(_foreign_model_config(family))
    with pytest.raises(CheckpointError) as error:
        apply(model, (full_size, MotionModuleInfo(full_size.config)))
    message = str(error.value)
    assert "model input" in message and "Stable Diffusion 1.5" in message and "Connect the MODEL" in message
    if family in ("SD2", "SDXL"):
        assert {"SD2": "Stable Diffusion 2", "SDXL": "SDXL"}[family] in message
    assert not model.object_patches and not model.wrappers, "nothing was patched on refusal"


def test_latent_whose_frames_do_not_fit_the_audio_is_refused(tiny, motion, encoder, audio, first, text):
    from comfyui_avsync.avsync_core.errors import InvalidInputError
    from comfyui_avsync.nodes.sampling_nodes import AVSyncClipLatent, AVSyncGuider

    patched = apply(tiny.base.clone(), motion)
    six_frame_audio = encode(encoder, frames=6)
    with torch.inference_mode():
        latent = AVSyncClipLatent().make(patched, six_frame_audio, first_latent=first)[0]
        guider = AVSyncGuider().get_guider(patched, text.positive, audio, 4.0, 1.0, 0, text.negative)[0]
    with pytest.raises(InvalidInputError) as error:
        sample_custom(patched, guider, latent)
    message = str(error.value)
    assert "6 frames" in message and f"encoded for {FRAMES} frames" in message and "'AVSync Clip Latent'" in message


def test_audio_tokens_of_another_width_are_refused_naming_the_input(tiny, motion, audio, text):
    from dataclasses import replace

    from comfyui_avsync.avsync_core.errors import InvalidInputError
    from comfyui_avsync.nodes.sampling_nodes import AVSyncGuider

    patched = apply(tiny.base.clone(), motion)
    narrow = replace(audio, tokens=audio.tokens[..., :32], null_tokens=audio.null_tokens[..., :32])
    with pytest.raises(
        InvalidInputError,
        match="avsync_audio input holds audio tokens of width 32, but this AVSyncD motion module takes 48-wide tokens",
    ):
        AVSyncGuider().get_guider(patched, text.positive, narrow, 4.0, 1.0, 0, text.negative)


@pytest.mark.parametrize("which", ["positive", "negative"])
def test_text_conditioning_of_another_width_is_refused_naming_the_input(tiny, motion, audio, text, which):
    """An SDXL-wide (2048) prompt on an SD1.5 model fails at the guider, not as a shape error inside attn2."""
    from comfyui_avsync.avsync_core.errors import InvalidInputError
    from comfyui_avsync.nodes.sampling_nodes import AVSyncGuider

    patched = apply(tiny.base.clone(), motion)
    conds = {"positive": text.positive, "negative": text.negative}
    conds[which] = [[torch.zeros(1, 7, 2048), {}]]
    with pytest.raises(
        InvalidInputError, match=rf"The {which} conditioning has width 2048; this UNet takes {tiny.context_dim}-wide"
    ):
        AVSyncGuider().get_guider(patched, conds["positive"], audio, 4.0, 2.0, 0, conds["negative"])


def test_first_latent_with_other_channels_is_refused_naming_the_input(tiny, motion, audio, text):
    from comfyui_avsync.avsync_core.errors import InvalidInputError
    from comfyui_avsync.nodes.sampling_nodes import AVSyncSampler

    patched = apply(tiny.base.clone(), motion)
    wide = {"samples": torch.randn(1, 16, 8, 8)}
    with pytest.raises(InvalidInputError, match=r"first_latent input.*has 16 channels, but this model's UNet takes 4"):
        with torch.inference_mode():
            AVSyncSampler().sample(
                patched, text.positive, text.negative, audio, 0, 1, 4.0, 1.0, "euler", "normal", 1.0, first_latent=wide
            )


def test_audio_condition_with_masks_of_another_width_is_refused(tiny, motion, audio, first, text):
    from dataclasses import replace

    from comfyui_avsync.avsync_core.errors import InvalidInputError

    patched = apply(tiny.base.clone(), motion)
    broken = replace(audio, masks=audio.masks[:, :200])
    with pytest.raises(InvalidInputError, match=r"inconsistent: its tokens are \(1, 229, 48\) but its masks cover 200"):
        run_avsync(patched, broken, first, text)


def test_clip_duration_other_than_the_encoder_window_is_refused_with_the_fitting_fps(encoder):
    from comfyui_avsync.avsync_core.errors import InvalidInputError
    from comfyui_avsync.nodes.audio_nodes import AVSyncEncodeAudio

    with pytest.raises(InvalidInputError, match=r"12 frames at 3 fps cover 4 s.*Set fps to frames / 2 = 6 for 12"):
        AVSyncEncodeAudio().encode(comfy_audio(4.0), encoder, 12, 3.0, 1)


def _write_video_without_sound(path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=6)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(
                torch.full((32, 32, 3), 40 * i, dtype=torch.uint8).numpy(), format="rgb24"
            )
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_load_audio_of_a_video_without_sound_names_the_input_and_the_fix(pack, tmp_path):
    import folder_paths
    from comfyui_avsync.avsync_core.errors import AudioError
    from comfyui_avsync.nodes.audio_nodes import AVSyncLoadAudio

    _write_video_without_sound(tmp_path / "silent_film.mp4")
    previous = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(tmp_path))
    try:
        assert "silent_film.mp4" in AVSyncLoadAudio.INPUT_TYPES()["required"]["audio"][0], "video files are offered too"
        with pytest.raises(AudioError) as error:
            AVSyncLoadAudio().load("silent_film.mp4", 0.0, 0.0)
    finally:
        folder_paths.set_input_directory(previous)
    message = str(error.value)
    assert "audio input 'silent_film.mp4'" in message and "no audio stream" in message
    assert "video that has a sound track" in message


def test_empty_model_folders_offer_a_placeholder_that_says_what_to_put_where(pack, tmp_path):
    from comfyui_avsync.avsync_core.errors import CheckpointError
    from comfyui_avsync.nodes.audio_nodes import AVSyncImageBindLoader
    from comfyui_avsync.nodes.model_nodes import AVSyncMotionModuleLoader

    (tmp_path / "empty").mkdir()
    with model_folders(avsyncd=[tmp_path / "empty"], imagebind=[tmp_path / "empty"]):
        for loader, folder, what in (
            (AVSyncMotionModuleLoader, "avsyncd", "AVSyncD motion module"),
            (AVSyncImageBindLoader, "imagebind", "imagebind_huge.pth"),
        ):
            ((choices, options),) = loader.INPUT_TYPES()["required"].values()
            assert len(choices) == 1 and f"models/{folder}" in choices[0]
            assert f"ComfyUI/models/{folder}/" in options["tooltip"]
            with pytest.raises(CheckpointError) as error:
                loader().load(choices[0])
            message = str(error.value)
            assert (
                f"No model found in models/{folder}" in message
                and what in message
                and f"ComfyUI/models/{folder}/" in message
            )
            with pytest.raises(CheckpointError, match=f"gone.safetensors is not in models/{folder}"):
                loader().load("gone.safetensors")


def test_negative_and_nan_guidance_are_refused_at_queue_time_and_by_the_guider(tiny, motion, audio, pack, monkeypatch):
    """NaN passes ComfyUI's own range check (it compares false with every bound), so the pack's VALIDATE_INPUTS checks
    the guidance inputs itself, with the node's own bounds."""
    import asyncio

    import execution
    import nodes as comfy_nodes
    from comfyui_avsync.avsync_core.errors import InvalidInputError
    from comfyui_avsync.nodes.guider import AVSyncCFGGuider

    for node_id in ("AVSyncGuider", "AVSyncSampler"):
        monkeypatch.setitem(comfy_nodes.NODE_CLASS_MAPPINGS, node_id, pack.NODE_CLASS_MAPPINGS[node_id])
    for value, says in ((-1.0, "audio_guidance must be between 0 and 30, got -1.0"), (float("nan"), "finite")):
        prompt = {
            "1": {"class_type": "AVSyncGuider", "inputs": {"audio_guidance": value, "text_guidance": 1.0, "window": 0}}
        }
        valid, errors, _ = asyncio.run(execution.validate_inputs("test", prompt, "1", {}))
        assert not valid
        custom = [e for e in errors if e["type"] == "custom_validation_failed"]
        assert custom and all(says in e["details"] for e in custom), errors

    patched = apply(tiny.base.clone(), motion)
    for kwargs, name in (({"audio_scale": -1.0}, "audio guidance"), ({"text_scale": -0.5}, "text guidance")):
        with pytest.raises(InvalidInputError, match=f"{name} must be 0 or more"):
            AVSyncCFGGuider(patched, audio, **kwargs)


def test_image_not_a_multiple_of_8_is_cropped_like_core_vae_encode(tiny, motion, audio, text, vae):
    import nodes as comfy_nodes
    from comfyui_avsync.nodes.sampling_nodes import AVSyncSampler

    image = torch.rand(1, 61, 67, 3, generator=torch.Generator().manual_seed(8))
    patched = apply(tiny.base.clone(), motion)
    with torch.inference_mode():
        core = comfy_nodes.VAEEncode().encode(vae, image)[0]["samples"]
        out = AVSyncSampler().sample(
            patched,
            text.positive,
            text.negative,
            audio,
            0,
            STEPS,
            4.0,
            1.0,
            "euler",
            "normal",
            1.0,
            image=image,
            vae=vae,
        )[0]["samples"]
    assert core.shape == (1, 4, 7, 8)
    assert out.shape == (FRAMES, 4, 7, 8) and torch.isfinite(out).all()
    assert torch.equal(out[0], core[0])


def test_applying_twice_is_refused(tiny, motion):
    from comfyui_avsync.avsync_core.errors import AVSyncError

    with pytest.raises(AVSyncError, match="already applied.*Connect the checkpoint's MODEL"):
        apply(apply(tiny.base.clone(), motion), motion)


def test_avsync_guider_on_a_plain_model_is_refused(tiny, audio, text):
    from comfyui_avsync.avsync_core.errors import AVSyncError
    from comfyui_avsync.nodes.sampling_nodes import AVSyncGuider

    with pytest.raises(AVSyncError, match="needs a MODEL with AVSyncD applied.*'Apply AVSyncD'"):
        AVSyncGuider().get_guider(tiny.base.clone(), text.positive, audio, 4.0, 1.0, 0, text.negative)


def test_plain_ksampler_on_the_patched_model_says_which_sampler_to_use(tiny, motion, text):
    import nodes as comfy_nodes
    from comfyui_avsync.avsync_core.errors import AVSyncError

    patched = apply(tiny.base.clone(), motion)
    with pytest.raises(AVSyncError) as error, torch.inference_mode():
        comfy_nodes.KSampler().sample(
            patched,
            0,
            STEPS,
            3.0,
            "euler",
            "normal",
            text.positive,
            text.negative,
            {"samples": torch.zeros(FRAMES, 4, 8, 8)},
        )
    assert "'AVSync Sampler'" in str(error.value) and "'AVSync Guider'" in str(error.value)


# --------------------------------------------------------------------------------------------------
# Node definitions and model folders
# --------------------------------------------------------------------------------------------------


def test_every_node_has_stable_prefixed_ids_categories_and_tooltips(pack, folders):
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("AVSync"), node_id
        assert cls.CATEGORY == "AVSync" or cls.CATEGORY.startswith("AVSync/"), (node_id, cls.CATEGORY)
        assert cls.DESCRIPTION and callable(getattr(cls, cls.FUNCTION))
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) and all(cls.OUTPUT_TOOLTIPS)
        inputs = cls.INPUT_TYPES()
        assert set(inputs) <= {"required", "optional"}
        for section in inputs.values():
            for name, spec in section.items():
                assert len(spec) == 2 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_models_in_extra_model_paths_folders_are_listed(pack, models_root, tmp_path):
    """ComfyUI loads extra_model_paths.yaml before custom nodes; the pack's registration keeps those folders."""
    import folder_paths
    import utils.extra_config
    from comfyui_avsync.nodes import model_paths
    from comfyui_avsync.nodes.audio_nodes import AVSyncImageBindLoader
    from comfyui_avsync.nodes.model_nodes import AVSyncMotionModuleLoader

    (models_root / "avsyncd" / "notes.txt").write_text("not a model")
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"shared_drive:\n  base_path: {models_root}\n  avsyncd: avsyncd\n  imagebind: |\n    imagebind\n")
    default = {k: str(Path(folder_paths.models_dir) / k) for k in ("avsyncd", "imagebind")}
    with model_folders(avsyncd=[], imagebind=[]):
        for key in default:
            del folder_paths.folder_names_and_paths[key]  # as at start-up, before any pack registered them
        utils.extra_config.load_extra_path_config(str(config))
        model_paths.register()
        assert folder_paths.get_folder_paths("avsyncd") == [default["avsyncd"], str(models_root / "avsyncd")]
        motion_choices = AVSyncMotionModuleLoader.INPUT_TYPES()["required"]["motion_module"][0]
        encoder_choices = AVSyncImageBindLoader.INPUT_TYPES()["required"]["encoder_name"][0]
        assert motion_choices == ["tiny_c [AVSyncD folder]", "tiny_c_motion.safetensors"]
        assert encoder_choices == ["imagebind_tiny.safetensors", "tiny_c [AVSyncD folder]"]
        folder_module = AVSyncMotionModuleLoader().load(motion_choices[0])[0][0]
        file_module = AVSyncMotionModuleLoader().load(motion_choices[1])[0][0]
    (models_root / "avsyncd" / "notes.txt").unlink()
    folder_state, file_state = folder_module.state_dict(), file_module.state_dict()
    assert folder_state.keys() == file_state.keys() and all(
        torch.equal(folder_state[k], file_state[k]) for k in folder_state
    )


def test_official_release_tree_is_found_at_any_depth_and_listed_once(pack, official_tiny_c, tmp_path):
    """The release nests its weights as <run>/ckpts/checkpoint-<N>/modules/{unet,audio_encoder}."""
    from comfyui_avsync.nodes import model_paths

    modules = tmp_path / "avsyncd" / "avsync15_audio-cond_cfg" / "ckpts" / "checkpoint-37000" / "modules"
    modules.parent.mkdir(parents=True)
    modules.symlink_to(official_tiny_c, target_is_directory=True)
    with model_folders(avsyncd=[tmp_path / "avsyncd"], imagebind=[tmp_path / "imagebind"]):
        choices = model_paths.motion_choices()
        assert choices == ["avsync15_audio-cond_cfg/ckpts/checkpoint-37000/modules [AVSyncD folder]"]
        assert model_paths.resolve(model_paths.MOTION_FOLDER, choices[0]) == modules
        assert model_paths.imagebind_choices() == choices


# --------------------------------------------------------------------------------------------------
# Composition with other patches, per-call cost
# --------------------------------------------------------------------------------------------------


def _pass_through_patches(model, log: list):
    """A clone of ``model`` with one recording, result-preserving patch of every kind the pack uses."""
    import comfy.patcher_extension

    def attn1_patch(n, context, value, extra_options):
        log.append("attn1")
        return n, context, value

    def middle_patch(x, extra_options):
        log.append("middle")
        return x

    def attn2_output_patch(n, extra_options):
        log.append("attn2_output")
        return n

    def wrapper(executor, *args, **kwargs):
        log.append("wrapper")
        return executor(*args, **kwargs)

    out = model.clone()
    out.set_model_attn1_patch(attn1_patch)
    out.set_model_patch(middle_patch, "middle_patch")
    out.set_model_attn2_output_patch(attn2_output_patch)
    out.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "recorder", wrapper)
    return out


@pytest.mark.parametrize("order", ["before", "after"])
def test_pass_through_patches_of_other_nodes_leave_the_animation_unchanged(tiny, motion, audio, first, text, order):
    baseline = run_avsync(apply(tiny.base.clone(), motion), audio, first, text)
    log: list = []
    if order == "before":
        model = apply(_pass_through_patches(tiny.base.clone(), log), motion)
    else:
        model = _pass_through_patches(apply(tiny.base.clone(), motion), log)
    result = run_avsync(model, audio, first, text)
    assert {"attn1", "middle", "attn2_output", "wrapper"} <= set(log)  # they all ran
    assert torch.equal(result, baseline)


def test_a_later_middle_patch_is_part_of_the_stream_temporal_attention_reads(tiny, motion, audio, first, text):
    """Temporal attention must continue from the stream ComfyUI's block has after attn2 (x + n), including what a
    middle_patch of another node, added after AVSyncD, did to x."""
    from comfyui_avsync.avsync_core.model.additions import BlockAdditions

    block = tiny.base.get_model_object("diffusion_model.input_blocks.1.1.transformer_blocks.0")
    seen: dict = {}
    hooks = [
        block.norm2.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].clone())),
        block.attn2.register_forward_hook(lambda m, args, out: seen.setdefault("n", out.clone())),
    ]
    original = BlockAdditions.temporal_residual

    def recording(self, x, frames):
        seen.setdefault("stream", x.clone())
        return original(self, x, frames)

    model = apply(tiny.base.clone(), motion).clone()
    model.set_model_patch(lambda x, extra_options: x + 0.25, "middle_patch")
    try:
        BlockAdditions.temporal_residual = recording
        run_avsync(model, audio, first, text)
    finally:
        BlockAdditions.temporal_residual = original
        for hook in hooks:
            hook.remove()
    assert torch.equal(seen["stream"], seen["x"] + seen["n"])


@pytest.mark.parametrize("order", ["before", "after"])
def test_hypertile_cannot_be_combined_and_says_so(tiny, motion, audio, first, text, order):
    from comfy_extras.nodes_hypertile import HyperTile
    from comfyui_avsync.avsync_core.errors import AVSyncError

    def hypertile(model):  # tiles of 4x4 latent pixels: the 8x8 test latent is split into 4 tiles
        run = getattr(HyperTile, "execute", None) or HyperTile().patch  # node API V3 (0.3.64 on) or V1 (0.3.52)
        return run(model, tile_size=32, swap_size=1, max_depth=0, scale_depth=False)[0]

    if order == "before":
        model = apply(hypertile(tiny.base.clone()), motion)
    else:
        model = hypertile(apply(tiny.base.clone(), motion))
    with pytest.raises(AVSyncError, match="re-batched self-attention's tokens.*remove that node \\(e.g. HyperTile\\)"):
        run_avsync(model, audio, first, text)


def test_a_call_without_the_branch_list_is_an_error_not_branch_zero(tiny, motion, audio, first, text):
    import comfy.patcher_extension
    from comfyui_avsync.avsync_core.errors import AVSyncError

    def drop_branches(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        options = {k: v for k, v in transformer_options.items() if k != "cond_or_uncond"}
        return executor(x, timesteps, context, y, control, options, **kwargs)

    outer = tiny.base.clone()  # wrappers added before Apply run outside the pack's
    outer.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "drop", drop_branches)
    with pytest.raises(AVSyncError, match="without the branch list \\(cond_or_uncond\\)"):
        run_avsync(apply(outer, motion), audio, first, text)


def test_guider_releases_its_run_after_sampling(tiny, motion, audio, first, text):
    from comfyui_avsync.nodes.sampling_nodes import AVSyncClipLatent, AVSyncGuider

    model = apply(tiny.base.clone(), motion)
    with torch.inference_mode():
        guider = AVSyncGuider().get_guider(model, text.positive, audio, 4.0, 1.0, 0, text.negative)[0]
        latent = AVSyncClipLatent().make(model, audio, first_latent=first)[0]
    sample_custom(model, guider, latent)
    assert guider.run is None


def test_load_audio_change_key_is_size_and_mtime_without_reading_the_file(pack, monkeypatch):
    import builtins
    import os

    import folder_paths
    from comfyui_avsync.nodes.audio_nodes import AVSyncLoadAudio

    path = Path(folder_paths.get_input_directory()) / "avsync_is_changed.wav"
    path.write_bytes(b"\0" * 1000)
    try:

        def no_reading(*args, **kwargs):
            raise AssertionError("IS_CHANGED opened the file")

        monkeypatch.setattr(builtins, "open", no_reading)
        first_key = AVSyncLoadAudio.IS_CHANGED(path.name, 0.0, 0.0)
        assert AVSyncLoadAudio.IS_CHANGED(path.name, 0.0, 0.0) == first_key
        assert AVSyncLoadAudio.IS_CHANGED(path.name, 1.0, 0.0) != first_key
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        touched_key = AVSyncLoadAudio.IS_CHANGED(path.name, 0.0, 0.0)
        assert touched_key != first_key
        monkeypatch.undo()
        path.write_bytes(b"\0" * 1001)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same mtime, other size
        assert AVSyncLoadAudio.IS_CHANGED(path.name, 0.0, 0.0) not in (first_key, touched_key)
    finally:
        path.unlink()


def test_official_folder_list_is_cached_refreshed_and_ends_on_link_loops(pack, official_tiny_c, tmp_path, monkeypatch):
    from comfyui_avsync.nodes import model_paths

    root = tmp_path / "avsyncd"
    (root / "a" / "b").mkdir(parents=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "a" / "b" / "back").symlink_to(root / "a", target_is_directory=True)
    walks = []
    real_walk = model_paths.os.walk

    def counting_walk(*args, **kwargs):
        walks.append(args[0])
        return real_walk(*args, **kwargs)

    monkeypatch.setattr(model_paths.os, "walk", counting_walk)
    with model_folders(avsyncd=[root], imagebind=[tmp_path / "imagebind"]):
        assert model_paths.official_folders() == {}  # the loops end
        assert model_paths.official_folders() == {} and len(walks) == 1  # the second listing is the cached one
        (root / "a" / "b" / "release").symlink_to(official_tiny_c, target_is_directory=True)
        assert list(model_paths.official_folders()) == ["a/b/release [AVSyncD folder]"]  # a changed folder: rewalk
        assert len(walks) == 2


# --------------------------------------------------------------------------------------------------
# Memory: ComfyUI owns and moves the models; low-VRAM streaming; half-precision motion weights
# --------------------------------------------------------------------------------------------------


def _weight_patches(patched) -> None:
    """Diff patches on two motion-module weights of the applied model (a LoRA on the motion module would do this)."""
    from comfyui_avsync.nodes.patching import KEY

    owner = patched.get_additional_models_with_key(KEY)[0]
    g = torch.Generator().manual_seed(3)
    names = ("conv_in.conv_temp.weight", "down_blocks.0.attentions.0.transformer_blocks.0.attn_temp.to_q.weight")
    state = owner.model.state_dict()
    owner.add_patches({name: (0.5 * torch.randn(state[name].shape, generator=g),) for name in names}, 1.0)


@contextlib.contextmanager
def comfy_partial_load() -> Iterator[None]:
    """ComfyUI's low-VRAM path on any machine, as under --lowvram with almost no free VRAM: every model that
    load_models_gpu loads gets a 0.1-byte budget through ComfyUI's own partial-load API, so each comfy.ops layer
    keeps its weight offloaded and casts it per call, unless the caller forces a full load."""
    import inspect

    import comfy.model_management as mm

    original_load_models, original_model_load = mm.load_models_gpu, mm.LoadedModel.model_load
    forced: list[bool] = []

    def load_models_gpu(*args, **kwargs):
        bound = inspect.signature(original_load_models).bind(*args, **kwargs)
        forced.append(bool(bound.arguments.get("force_full_load", False)))
        try:
            return original_load_models(*args, **kwargs)
        finally:
            forced.pop()

    def model_load(self, lowvram_model_memory=0, force_patch_weights=False):
        return original_model_load(self, 0 if forced and forced[-1] else 0.1, force_patch_weights)

    mm.unload_all_models()
    mm.load_models_gpu, mm.LoadedModel.model_load = load_models_gpu, model_load
    try:
        yield
    finally:
        mm.load_models_gpu, mm.LoadedModel.model_load = original_load_models, original_model_load
        mm.unload_all_models()


def test_motion_module_streams_under_comfys_partial_load_with_its_weight_patches(tiny, motion, audio, first, text):
    """ComfyUI's low-VRAM path: every model loaded with a 0.1-byte budget (what --novram gives), so each comfy.ops
    layer keeps its weight offloaded and casts it, with its LoRA-style patches, on every call. The animation must
    be the fully loaded one."""
    from comfyui_avsync.nodes.patching import KEY

    plain = run_avsync(apply(tiny.base.clone(), motion), audio, first, text)
    full_model = apply(tiny.base.clone(), motion)
    _weight_patches(full_model)
    full = run_avsync(full_model, audio, first, text)
    assert not torch.allclose(full, plain, atol=1e-3), "the weight patches change the animation"

    with comfy_partial_load():
        low_model = apply(tiny.base.clone(), motion)
        _weight_patches(low_model)
        low = run_avsync(low_model, audio, first, text)
        owner = low_model.get_additional_models_with_key(KEY)[0]
        cast_aware = [m for m in owner.model.modules() if hasattr(m, "comfy_cast_weights")]
        assert owner.model.model_lowvram and cast_aware
        assert all(hasattr(m, "prev_comfy_cast_weights") for m in cast_aware), "ComfyUI streams every layer"
    assert_close_rel(low, full, 1e-6, "partially loaded vs fully loaded")


def test_audio_encoder_is_owned_by_comfy_and_streams_under_its_partial_load(encoder):
    """The loader builds ImageBind from comfy.ops layers; Encode Audio hands it to load_models_gpu through its one
    ModelPatcher. With a 0.1-byte budget every cast-aware layer stays offloaded and casts per call (the packed
    attention projections, extra key/value and embeddings are cast where they are used), and the tokens are the
    fully loaded ones."""
    import comfy.model_management
    from comfyui_avsync.nodes.ownership import owned, owner

    layers = [m for m in encoder.modules() if next(m.parameters(recurse=False), None) is not None]
    cast_aware = [m for m in layers if hasattr(m, "comfy_cast_weights")]
    raw = {type(m).__name__ for m in layers if not hasattr(m, "comfy_cast_weights")}
    assert len(cast_aware) == 5 * encoder.config.depth + 4 and raw == {"ImageBindAudioEncoder", "_Attention"}

    comfy.model_management.unload_all_models()
    full = encode(encoder, seconds=3.0, max_windows=2)
    patcher = owner(encoder)
    assert owned(patcher) is encoder and patcher.load_device == encoder.device
    assert patcher in [m.model for m in comfy.model_management.current_loaded_models]
    assert not patcher.model.model_lowvram

    with comfy_partial_load():
        low = encode(encoder, seconds=3.0, max_windows=2)
        assert patcher.model.model_lowvram
        assert all(hasattr(m, "prev_comfy_cast_weights") for m in cast_aware), "ComfyUI streams every layer"
    assert torch.equal(low.tokens, full.tokens) and torch.equal(low.null_tokens, full.null_tokens)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_motion_weights_in_one_copy_stay_near_fp32(tiny, official_tiny_c, audio, first, text, dtype):
    """The loader keeps one copy in ComfyUI's UNet weight dtype; with fp16 or bf16 weights (the GPU case) the
    layers cast them per call, so nothing is copied, and two sampling steps stay within the stated bound of the
    fp32 weights: 2e-3 (fp16) and 1.5e-2 (bf16) of the largest latent, about 4 units of the dtype's roundoff
    (measured: 8.6e-4 and 5.5e-3)."""
    import comfy.ops
    from comfyui_avsync.avsync_core.model.motion_files import load_motion_module

    dtype = getattr(torch, dtype)
    reference_motion = load_motion_module(official_tiny_c, operations=comfy.ops.manual_cast)
    half_motion = load_motion_module(official_tiny_c, dtype=dtype, operations=comfy.ops.manual_cast)
    assert {p.dtype for p in half_motion[0].parameters()} == {dtype}
    reference = run_avsync(apply(tiny.base.clone(), reference_motion), audio, first, text)
    patched = apply(tiny.base.clone(), half_motion)
    assert motion_of(patched) is half_motion[0], "applying must not copy the module"
    half = run_avsync(patched, audio, first, text)
    assert_close_rel(half, reference, {torch.float16: 2e-3, torch.bfloat16: 1.5e-2}[dtype], str(dtype))


def test_the_progress_preview_shows_the_middle_frame_of_the_first_video(pack, monkeypatch):
    """Frame 0 is only the input image, so the preview shows frame frames // 2 (documented in _progress)."""
    import latent_preview
    from comfyui_avsync.nodes import sampling_nodes

    shown = []

    class Previewer:
        def decode_latent_to_preview_image(self, image_format, latent):
            shown.append(latent.clone())
            return (image_format, None, None)

    monkeypatch.setattr(latent_preview, "get_previewer", lambda device, latent_format: Previewer())
    model = SimpleNamespace(load_device="cpu", model=SimpleNamespace(latent_format=None))
    for frames in (4, 5, 12):
        x0 = torch.arange(2 * frames, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(-1, 4, 2, 2)  # 2 videos
        sampling_nodes._progress(model, 1, 1, frames)(0)(0, x0, x0, 1)
        assert shown[-1].shape == (1, 4, 2, 2) and torch.all(shown[-1] == frames // 2), (frames, shown[-1])
