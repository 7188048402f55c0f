"""Long sound in context windows inside ComfyUI: core's Context Windows (Manual) node and the AVSync Sampler's
long_sound option on the patched model, windows anchored on the picture, clear errors for settings that cannot fit.

Host tests: ComfyUI in-process on the CPU, ComfyUI's own SD1.5 UNet holding the golden unet_tiny_c with its motion
module, 4-frame clips; the audio has three clips and distinct tokens for every start frame. AnimateDiff-Evolved's
context options are played by a stand-in that sets what that pack sets (CI has no such pack).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import comfy_host
from conftest import golden_dir, load_golden

pytestmark = pytest.mark.host

FRAMES = 4
STEPS = 2
CLIPS = 3
KEY = "avsync-test-windows"


@pytest.fixture(scope="module")
def setup(official_tiny_c):
    comfy_host.import_comfy()
    comfy_host.load_plugin_package()
    from comfyui_avsync.avsync_core.audio import clip_windows
    from comfyui_avsync.avsync_core.audio.condition import AudioCondition
    from comfyui_avsync.avsync_core.model.motion_files import load_motion_module
    from comfyui_avsync.nodes.patching import apply_avsync

    base, unet_config = comfy_host.build_comfy_tiny_unet(golden_dir())
    motion, _ = load_motion_module(official_tiny_c)
    t = load_golden("samplers", "sampler_c_ddim_audio_cfg.safetensors")
    masks = load_golden("segment_masks", "segment_masks.safetensors")[f"mask_nseg{FRAMES}"]
    audio = t["in.audio_tokens"][:1]
    starts = 1 + (CLIPS - 1) * (FRAMES - 1)
    start_tokens = torch.cat([audio.roll(j, dims=1) * (1.0 - 0.1 * j) for j in range(starts)])
    g = torch.Generator().manual_seed(3)

    def condition(clips: int) -> AudioCondition:
        rows = start_tokens[: 1 + (clips - 1) * (FRAMES - 1)]
        windows = clip_windows((clips * (FRAMES - 1) + 1) / 2.0, FRAMES, 2.0)  # a sound of `clips` clips
        return AudioCondition(
            rows[:: FRAMES - 1], t["in.null_audio_tokens"], masks, FRAMES, 2.0, windows, rows.contiguous()
        )

    return SimpleNamespace(
        model=apply_avsync(base, motion),
        audio=condition(CLIPS),
        one_clip=condition(1),
        positive=[[torch.randn(1, 7, unet_config["context_dim"], generator=g), {}]],
        negative=[[torch.randn(1, 7, unet_config["context_dim"], generator=g), {}]],
        first={"samples": torch.randn(1, 4, 8, 8, generator=g)},
    )


def core_context_windows(model, length=FRAMES, overlap=1, schedule="standard_static", fuse="pyramid", dim=0):
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode

    return ContextWindowsManualNode.execute(model, length, overlap, schedule, 1, False, fuse, dim).result[0]


def sample(setup, model, audio=None, **options):
    out = sampler_output(setup, model, audio, **options)
    return (out["result"] if isinstance(out, dict) else out)[0]["samples"]


def guider_sample(setup, model, audio, whole_sound: bool):
    from comfy_extras import nodes_custom_sampler as ncs
    from comfyui_avsync.nodes.sampling_nodes import AVSyncClipLatent, AVSyncGuider

    with torch.inference_mode():
        guider = AVSyncGuider().get_guider(model, setup.positive, audio, 4.0, 1.0, 0, setup.negative)[0]
        latent = AVSyncClipLatent().make(model, audio, first_latent=setup.first, whole_sound=whole_sound)[0]
        sigmas = ncs.BasicScheduler().get_sigmas(model, "normal", STEPS, 1.0)[0]
        sampler = ncs.KSamplerSelect().get_sampler("euler")[0]
        out = ncs.SamplerCustomAdvanced().sample(ncs.RandomNoise().get_noise(0)[0], guider, sampler, sigmas, latent)
    return out[0]["samples"]


def sampler_output(setup, model, audio=None, **options):
    """What the AVSync Sampler returns to ComfyUI: its outputs, or a dict of them and what the page shows."""
    from comfyui_avsync.nodes.sampling_nodes import AVSyncSampler

    with torch.inference_mode():
        return AVSyncSampler().sample(
            model,
            setup.positive,
            setup.negative,
            setup.audio if audio is None else audio,
            seed=0,
            steps=STEPS,
            audio_guidance=4.0,
            text_guidance=1.0,
            sampler_name="euler",
            scheduler="normal",
            denoise=1.0,
            first_latent=setup.first,
            **options,
        )


def recording(model, steps: list | None = None):
    """A clone recording, for every model call, the latent rows of its context window and the audio it hears (and
    into ``steps`` its timestep)."""
    import comfy.patcher_extension

    calls = []

    def wrapper(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        if steps is not None:
            steps.append(float(timesteps.reshape(-1)[0]))
        window = transformer_options.get("context_window")
        run = transformer_options["avsync_run"].in_window(None if window is None else window.index_list)
        calls.append((None if window is None else list(window.index_list), run.tokens.clone(), x.shape[0]))
        return executor(x, timesteps, context, y, control, transformer_options, **kwargs)

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY, wrapper)
    return clone, calls


@pytest.mark.parametrize("fuse", ["pyramid", "overlap-linear"])
def test_core_node_and_the_samplers_option_give_the_same_result(setup, fuse):
    option = sample(setup, setup.model, long_sound="context", overlap=1, fuse_method=fuse)
    node = sample(setup, core_context_windows(setup.model, overlap=1, fuse=fuse), long_sound="chain")
    assert option.shape == (setup.audio.total_frames, 4, 8, 8)
    assert torch.equal(option, node)
    assert torch.equal(option[0], setup.first["samples"][0]), "frame 0 is the picture's latent, bit for bit"
    if fuse == "pyramid":
        assert not torch.allclose(option, sample(setup, setup.model)), "the context windows had no effect"


@pytest.mark.parametrize("overlap", [0, 2])
def test_every_call_is_one_anchored_window_hearing_the_2_s_from_its_frame_0(setup, overlap):
    from comfyui_avsync.avsync_core.sampling.context import context_schedule

    model, calls = recording(core_context_windows(setup.model, overlap=overlap))
    sample(setup, model)
    windows = context_schedule(setup.audio.total_frames, FRAMES, overlap)
    assert [rows for rows, _, _ in calls] == windows * STEPS
    for rows, tokens, batch in calls:
        assert batch == 2 * FRAMES, "each call is one clip per guidance branch"
        assert torch.equal(tokens, setup.audio.start_tokens[rows[1] - 1 : rows[1]])
    if overlap == 0:  # the chained clips' windows and the chained clips' audio
        assert [rows[1] - 1 for rows, _, _ in calls[: len(windows)]] == [k * (FRAMES - 1) for k in range(CLIPS)]
        for k, (_, tokens, _) in enumerate(calls[:CLIPS]):
            assert torch.equal(tokens, setup.audio.tokens[k : k + 1])


def test_a_sound_of_one_clip_samples_that_clip_bit_for_bit(setup):
    context = sample(setup, setup.model, audio=setup.one_clip, long_sound="context", overlap=2)
    clip = sample(setup, setup.model, audio=setup.one_clip)
    assert torch.equal(context, clip)


def test_guider_and_sampler_custom_advanced_with_core_node_equal_the_sampler(setup):
    model = core_context_windows(setup.model, overlap=2, fuse="overlap-linear")
    assert torch.equal(guider_sample(setup, model, setup.audio, whole_sound=True), sample(setup, model))


@pytest.mark.parametrize(
    "settings, fits",
    [
        ({"length": 8}, "context_length = 8 is not the model's clip of 4 frames"),
        ({"dim": 1}, "dim = 1"),
        ({"overlap": 3}, "context_overlap = 3"),
        ({"fuse": "relative"}, "fuse_method = relative"),
        ({"schedule": "looped_uniform"}, "looped"),
    ],
)
def test_settings_the_pack_cannot_honour_name_the_node_and_what_fits(setup, settings, fits):
    from comfyui_avsync.avsync_core.errors import AVSyncError

    with pytest.raises(AVSyncError, match="Context Windows \\(Manual\\)") as err:
        sample(setup, core_context_windows(setup.model, **settings))
    assert fits in str(err.value) and "set context_length = 4" in str(err.value)


def test_bad_overlap_on_the_sampler_is_a_clear_error(setup):
    from comfyui_avsync.avsync_core.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="overlap must be a whole number from 0 to 2"):
        sample(setup, setup.model, long_sound="context", overlap=3)


def shown(out) -> np.ndarray:
    """The one picture the node shows in the page, as the page loads it from the temp folder."""
    import folder_paths

    (image,) = out["ui"]["images"]
    assert image["type"] == "temp"
    path = Path(folder_paths.get_temp_directory()) / image["subfolder"] / image["filename"]
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("overlap, fuse", [(1, "pyramid"), (2, "overlap-linear")])
def test_the_sampler_shows_the_context_windows_it_ran(setup, overlap, fuse):
    from comfyui_avsync.avsync_core.sampling.context import context_schedule
    from comfyui_avsync.avsync_core.sampling.context_preview import render_context_preview

    model, calls = recording(setup.model)
    out = sampler_output(setup, model, long_sound="context", overlap=overlap, fuse_method=fuse)
    windows = context_schedule(setup.audio.total_frames, FRAMES, overlap)
    assert [rows for rows, _, _ in calls] == windows * STEPS
    assert np.array_equal(shown(out), render_context_preview(setup.audio, windows, fuse, overlap))
    assert torch.equal(
        out["result"][0]["samples"], sample(setup, setup.model, long_sound="context", overlap=overlap, fuse_method=fuse)
    )
    chained = sampler_output(setup, setup.model, long_sound="chain")
    assert isinstance(chained, tuple), "chained clips have no context windows to show"
    one_clip = sampler_output(setup, setup.model, audio=setup.one_clip, long_sound="context", overlap=overlap)
    assert isinstance(one_clip, tuple), "a sound of one clip is one clip, no windows"


def test_with_core_node_the_sampler_shows_the_first_steps_windows_and_says_the_schedule_moved_them(setup):
    from comfyui_avsync.avsync_core.sampling.context_preview import render_context_preview

    steps = []
    model, calls = recording(
        core_context_windows(setup.model, overlap=1, schedule="standard_uniform", fuse="flat"), steps
    )
    out = sampler_output(setup, model)
    per_step = {}
    for (rows, _, _), step in zip(calls, steps):
        per_step.setdefault(step, []).append(rows)
    schedules = list(per_step.values())
    assert len(schedules) == STEPS and schedules[0] != schedules[1], "standard_uniform moves the windows"
    note = f"first step's windows shown (standard_uniform moved them: {STEPS} schedules)"
    assert np.array_equal(shown(out), render_context_preview(setup.audio, schedules[0], "flat", 1, note))


def evolved_stand_in(model, windows: bool):
    """What AnimateDiff-Evolved's 'Use Evolved Sampling' with context options puts on a model (no code of that
    pack): an outer-sample wrapper keeping its run state in the guider's transformer_options["ADGS"], which says
    whether it windows this latent, and a calc_cond_batch wrapper that, when it does, sets the window's rows in
    transformer_options["ad_params"]: a dict only its own sampling function creates, so (as with the pack at
    d8d163c) it fails with KeyError 'ad_params' under the AVSync guider."""
    import comfy.model_patcher
    import comfy.patcher_extension

    class RunState:
        def is_using_sliding_context(self) -> bool:
            return windows

    def outer_sample(executor, *args, **kwargs):
        guider = executor.class_obj
        original = guider.model_options
        guider.model_options = comfy.model_patcher.create_model_options_clone(original)
        guider.model_options["transformer_options"]["ADGS"] = RunState()
        try:
            return executor(*args, **kwargs)
        finally:
            guider.model_options = original

    def calc_cond_batch(executor, model, conds, x, timestep, model_options):
        options = model_options["transformer_options"]
        if options["ADGS"].is_using_sliding_context():
            options["ad_params"]["sub_idxs"] = list(range(x.shape[0] - 1))
        return executor(model, conds, x, timestep, model_options)

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "ADE", outer_sample)
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "ADE", calc_cond_batch)
    return clone


EVOLVED_RUNS = {  # name -> (run of a model, frames of the latent the run samples at once)
    "one clip": (lambda setup, model: sample(setup, model, audio=setup.one_clip), FRAMES),
    "chain": (lambda setup, model: sample(setup, model, long_sound="chain"), FRAMES),
    "context": (lambda setup, model: sample(setup, model, long_sound="context", overlap=1), 1 + CLIPS * (FRAMES - 1)),
    "guider with core node": (
        lambda setup, model: guider_sample(setup, core_context_windows(model), setup.audio, whole_sound=True),
        1 + CLIPS * (FRAMES - 1),
    ),
}


@pytest.mark.parametrize("name", list(EVOLVED_RUNS))
def test_animatediff_evolved_windows_are_refused_naming_its_node_and_what_to_use(setup, name):
    from comfyui_avsync.avsync_core.errors import InvalidInputError

    run, latent_frames = EVOLVED_RUNS[name]
    with pytest.raises(InvalidInputError, match="AnimateDiff-Evolved's context options") as err:
        run(setup, evolved_stand_in(setup.model, windows=True))
    message = str(err.value)
    assert f"would cut this {latent_frames}-frame latent" in message
    assert "Disconnect context_options from 'Use Evolved Sampling'" in message
    assert f"a context_length of {latent_frames} or more" in message
    assert "long_sound = context" in message and "'Context Windows (Manual)' node with context_length = 4" in message


@pytest.mark.parametrize("name", ["one clip", "context"])
def test_animatediff_evolved_that_does_not_window_changes_nothing(setup, name):
    run, _ = EVOLVED_RUNS[name]
    assert torch.equal(run(setup, evolved_stand_in(setup.model, windows=False)), run(setup, setup.model))
