"""AVSyncD inside ComfyUI's own SD1.5 UNet, through ModelPatcher mechanisms only.

- Every convolution gets its ``conv_temp`` and the resnet/output GroupNorms get frame-spanning statistics through
  object patches with *shadows*: modules that share all their state with the original (weights, LoRA patches,
  ComfyUI's low-VRAM flags; literally the same ``__dict__``) and differ only in ``forward``. ComfyUI's own
  ``UNetModel._forward`` and ``ResBlock`` code keep running, so ControlNet and other patches still apply.
- The transformer additions: SD's ``attn1`` gets a shadow that takes keys/values from frame 0 of whatever context
  the block's ``attn1_patch`` list produced; ``middle_patch`` adds audio cross-attention right after attn1's
  residual; ``attn2_output_patch`` adds temporal attention to the stream after attn2's residual. That stream is read
  where ComfyUI has it, at the input of the block's ``norm2`` (a recording shadow), so ``middle_patch``es of other
  nodes, before or after this one, are part of it. A patch that re-tiles self-attention's tokens (HyperTile) or
  replaces attn1 cannot be combined with first-frame attention and is refused with a clear error.
- A DIFFUSION_MODEL wrapper puts the clean first-frame latent into frame 0 and gives each cond/uncond chunk its
  audio, from the run the AVSync guider places in ``transformer_options``.
- The motion module rides along as an additional model: a clone of the one ModelPatcher that owns it, so ComfyUI
  alone loads, offloads, partially loads and accounts for it (its layers are comfy.ops layers, cast per call).
"""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace
from typing import Iterator

import comfy.model_patcher
import comfy.patcher_extension
import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
from torch import nn

from ..avsync_core.errors import AVSyncError, CheckpointError
from ..avsync_core.model.additions import AudioContext, frame_group_norm
from ..avsync_core.model.motion_module import MotionModule
from ..avsync_core.model.unet_layout import diffusers_config_from_ldm, diffusers_to_ldm_key, unet_module_map
from ..avsync_core.sampling.run import ContextRun, SamplingRun
from ..avsync_core.sd15.family import check_base_fits
from .ownership import owner

KEY = "avsyncd"  # additional-models / wrapper key
RUN_KEY = "avsync_run"  # where the guider puts the SamplingRun in transformer_options


class _Runtime:
    """What the injected modules need to know about the UNet call in progress."""

    def __init__(self) -> None:
        self.frames: int | None = None
        self.rows: int | None = None  # clips x frames: the batch of every (b f) tensor in this call
        self.audio: AudioContext | None = None
        self.streams: dict[tuple, torch.Tensor] = {}  # block -> the residual stream entering its norm2

    @contextmanager
    def call(self, frames: int, rows: int, audio: AudioContext) -> Iterator[None]:
        self.frames, self.rows, self.audio = frames, rows, audio
        try:
            yield
        finally:
            self.frames, self.rows, self.audio = None, None, None
            self.streams.clear()


class _FrameNorm:
    """GroupNorm mixin: statistics over all frames of a clip, as the official 5-D resnets compute them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return frame_group_norm(super().forward, x, self._avsync.runtime.frames)


class _TemporalMix:
    """Convolution mixin: the convolution, then AVSyncD's first-frame temporal mix (``conv_temp``)."""

    def forward(self, *args, **kwargs) -> torch.Tensor:
        out = super().forward(*args, **kwargs)
        return self._avsync.mix(out, self._avsync.runtime.frames)


class _FirstFrameAttention:
    """SD's attn1 with keys/values from frame 0 of each clip, taken from the context the attn1 patches left."""

    def forward(self, x, context=None, value=None, *args, **kwargs):
        runtime = self._avsync.runtime
        context = x if context is None else context
        value = context if value is None else value
        if not x.shape[0] == context.shape[0] == value.shape[0] == runtime.rows:
            raise AVSyncError(
                f"Another patch on this model re-batched self-attention's tokens ({x.shape[0]} query rows for "
                f"{runtime.rows} frames; HyperTile does this). AVSyncD's first-frame attention needs every frame's "
                "full token set, so the two cannot be combined: remove that node (e.g. HyperTile) from the model."
            )
        return super().forward(x, _frame0(context, runtime.frames), _frame0(value, runtime.frames), *args, **kwargs)


class _StreamRecorder:
    """norm2 of a transformer block, recording its input: the residual stream after attn1 and every middle_patch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._avsync.runtime.streams[self._avsync.key] = x
        return super().forward(x)


def _shadow(original: nn.Module, mixin: type, **extras: object) -> nn.Module:
    """A module sharing ``original``'s entire state, whose class adds ``mixin``'s forward."""
    cls = type(f"AVSync{type(original).__name__}", (mixin, type(original)), {"_avsync": SimpleNamespace(**extras)})
    shadow = cls.__new__(cls)
    object.__setattr__(shadow, "__dict__", original.__dict__)
    return shadow


def is_avsync_model(model: comfy.model_patcher.ModelPatcher) -> bool:
    return bool(model.get_additional_models_with_key(KEY))


def avsync_motion(model: comfy.model_patcher.ModelPatcher) -> MotionModule:
    """The motion module applied to ``model`` (which must have AVSyncD applied)."""
    return model.get_additional_models_with_key(KEY)[0].model


def apply_avsync(model: comfy.model_patcher.ModelPatcher, motion: MotionModule) -> comfy.model_patcher.ModelPatcher:
    """A clone of ``model`` with AVSyncD injected; ``model`` itself is left untouched."""
    _check_model(model, motion)
    patched = model.clone()
    runtime = _Runtime()
    places = unet_module_map(motion.config)

    def module_path(official: str) -> str:
        return "diffusion_model." + diffusers_to_ldm_key(f"{official}.weight", places)[: -len(".weight")]

    for name in motion.conv_names():
        path = module_path(name)
        patched.add_object_patch(
            path, _shadow(patched.get_model_object(path), _TemporalMix, mix=motion.mix(name), runtime=runtime)
        )
    resnets = [name for name in places if ".resnets." in name]
    for name in [f"{r}.{norm}" for r in resnets for norm in ("norm1", "norm2")] + ["conv_norm_out"]:
        path = module_path(name)
        patched.add_object_patch(path, _shadow(patched.get_model_object(path), _FrameNorm, runtime=runtime))

    blocks = {}
    for name in motion.block_names():
        prefix, index = name.rsplit(".transformer_blocks.", 1)
        key = (places[prefix].block, int(index))
        blocks[key] = motion.block(name)
        block_path = f"diffusion_model.{places[prefix].path}.transformer_blocks.{index}"
        for part, mixin in (("attn1", _FirstFrameAttention), ("norm2", _StreamRecorder)):
            path = f"{block_path}.{part}"
            patched.add_object_patch(path, _shadow(patched.get_model_object(path), mixin, runtime=runtime, key=key))
    patched.set_model_patch(_audio_patch(runtime, blocks), "middle_patch")
    patched.set_model_attn2_output_patch(_temporal_patch(runtime, blocks))
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY, _diffusion_wrapper(runtime))
    # Every model the module is applied to gets a clone of its one owner, so ComfyUI sees one set of weights (a
    # clone unloads the others instead of booking the memory twice).
    patched.set_additional_models(KEY, [owner(motion, model.load_device, model.offload_device).clone()])
    return patched


def _check_model(model: comfy.model_patcher.ModelPatcher, motion: MotionModule) -> None:
    if is_avsync_model(model):
        raise AVSyncError("AVSyncD is already applied to this model. Connect the checkpoint's MODEL instead.")
    fix = "Connect the MODEL of a Stable Diffusion 1.5 checkpoint (fine-tunes and LoRAs of SD1.5 work)."
    diffusion_model = model.get_model_object("diffusion_model")
    if not isinstance(diffusion_model, UNetModel):
        raise CheckpointError(
            f"The model input is a {type(model.model).__name__} model ({type(diffusion_model).__name__}), but AVSyncD "
            f"needs a Stable Diffusion 1.5 UNet. {fix}"
        )
    try:
        check_base_fits(diffusers_config_from_ldm(model.model.model_config.unet_config), motion.config)
    except CheckpointError as err:
        raise CheckpointError(f"The model input does not fit AVSyncD: {err} {fix}") from None


def _block_key(extra_options: dict) -> tuple:
    block = extra_options.get("block")
    return (tuple(block) if block is not None else None, extra_options.get("block_index", 0))


def _frame0(t: torch.Tensor, frames: int) -> torch.Tensor:
    rows = t.shape[0]
    return t.view(rows // frames, frames, *t.shape[1:])[:, :1].expand(-1, frames, *t.shape[1:]).reshape(t.shape)


def _audio_patch(runtime: _Runtime, blocks: dict):
    def middle_patch(x, extra_options):
        return blocks[_block_key(extra_options)].audio_attention(x, runtime.audio)

    return middle_patch


def _temporal_patch(runtime: _Runtime, blocks: dict):
    def attn2_output_patch(n, extra_options):
        key = _block_key(extra_options)
        stream = runtime.streams.pop(key) + n  # what ComfyUI's block adds n to
        return n + blocks[key].temporal_residual(stream, runtime.frames)

    return attn2_output_patch


def _diffusion_wrapper(runtime: _Runtime):
    def wrapper(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        run: SamplingRun | ContextRun | None = transformer_options.get(RUN_KEY)
        if run is None:
            raise AVSyncError(
                "This model has AVSyncD applied, so it needs the audio and the first frame: sample it with the "
                "'AVSync Sampler' node, or with SamplerCustomAdvanced and the 'AVSync Guider'."
            )
        branches = transformer_options.get("cond_or_uncond")
        if not branches:
            raise AVSyncError(
                "ComfyUI called the AVSyncD model without the branch list (cond_or_uncond) that says which chunk of "
                "the batch is conditional and which unconditional, so the audio of each chunk is unknown. Sample "
                "with the 'AVSync Sampler' or 'AVSync Guider'; a custom node calling the model directly must pass it."
            )
        if transformer_options.get("patches_replace", {}).get("attn1"):
            raise AVSyncError(
                "Another node replaced self-attention (an attn1 replace patch) on this model; AVSyncD's first-frame "
                "attention runs there, so the two cannot be combined. Remove that node from the model."
            )
        window = transformer_options.get("context_window")  # set by the host's context handler
        run = run.in_window(None if window is None else window.index_list)
        x, audio = run.model_input(x, branches)
        with runtime.call(run.frames, x.shape[0], audio):
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)

    return wrapper
