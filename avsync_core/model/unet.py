"""AVSyncUNet: a frozen diffusers SD1.5 ``UNet2DConditionModel`` with the AVSyncD additions injected.

The forward pass walks the base UNet's own modules in the official 3D order, inserting the additions, so the
SD1.5 part can be any fine-tune and the trained part is a separate ``MotionModule`` under the official names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from diffusers import UNet2DConditionModel
from einops import rearrange
from torch import nn

from ..checkpoints import find_weights, load_strict, read_state_dict
from ..errors import CheckpointError, InvalidInputError
from ..sd15 import move_module
from ..sd15.family import check_base_fits, check_text_width
from .additions import AudioContext, first_frame_attention, first_frame_resnet, frame_group_norm, gather_index
from .motion_module import MotionConfig, MotionModule, is_motion_key
from .official import base_config_from_official, read_official_unet_config, resolve_official_unet_folder

Tensor = torch.Tensor


@dataclass
class _Call:
    """Per-forward state the blocks share."""

    frames: int
    emb: Tensor
    context: Tensor
    audio: AudioContext


class AVSyncUNet(nn.Module):
    """SD1.5 UNet + AVSyncD additions; inputs and outputs use the official ``(b, c, f, h, w)`` layout."""

    def __init__(self, base: UNet2DConditionModel, motion: MotionModule) -> None:
        super().__init__()
        check_base_fits(base.config, motion.config)
        self.base = base
        self.motion = motion
        self.gradient_checkpointing = False
        self._index_cache: tuple[Tensor, int, Tensor | None] | None = None  # (mask, its version, gather index)

    @classmethod
    def from_official(
        cls, path: str | os.PathLike, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> "AVSyncUNet":
        """Load an official AVSyncD UNet (``unet/`` with config.json and .safetensors or .bin weights)."""
        folder = resolve_official_unet_folder(path)
        config = read_official_unet_config(folder)
        state = read_state_dict(find_weights(folder))
        motion_config = MotionConfig.from_unet_config(config)
        with torch.device("meta"):  # no random init: the loaded tensors are assigned
            try:
                base = UNet2DConditionModel.from_config(base_config_from_official(config))
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{folder / 'config.json'} is not a valid UNet config ({exc}).") from None
            motion = MotionModule(motion_config)
        load_strict(
            base, {k: v for k, v in state.items() if not is_motion_key(k)}, str(folder), "a complete SD1.5 UNet"
        )
        motion.load_official_state_dict({k: v for k, v in state.items() if is_motion_key(k)}, str(folder))
        return move_module(cls(base, motion), device, dtype).eval()

    @classmethod
    def from_base(
        cls, base: UNet2DConditionModel, motion: MotionModule | None = None, audio_dim: int = 768
    ) -> "AVSyncUNet":
        """Wrap an SD1.5 base; a fresh, zero-initialised motion module (for audio tokens of width ``audio_dim``,
        ImageBind-huge's 768 by default) is made when none is given."""
        if motion is None:
            config = MotionConfig.from_unet_config({**base.config, "audio_cross_attention_dim": audio_dim})
            motion = MotionModule(config).to(device=base.device, dtype=base.dtype)
        return cls(base, motion)

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    @property
    def device(self) -> torch.device:
        return self.base.device

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.gradient_checkpointing = enabled

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | int | float,
        encoder_hidden_states: Tensor,
        audio_encoder_hidden_states: Tensor,
        audio_attention_mask: Tensor | None = None,
    ) -> Tensor:
        """Predict the noise of every frame; ``sample`` is ``(b, c, f, h, w)``, the result has the same shape.

        ``encoder_hidden_states`` is ``(b, f, n, d)`` or ``(b, n, d)``; ``audio_encoder_hidden_states`` is
        ``(b, f, L, D)`` or ``(b, L, D)``; ``audio_attention_mask`` is ``(b, f, L)`` bool, True = attend.
        """
        sample, context, audio, frames = self._prepare(
            sample, encoder_hidden_states, audio_encoder_hidden_states, audio_attention_mask
        )
        b, _, _, h, w = sample.shape
        x = rearrange(sample, "b c f h w -> (b f) c h w")
        call = _Call(frames, self._time_embedding(timestep, b, frames), context, audio)
        base, motion = self.base, self.motion

        x = motion.mix("conv_in")(base.conv_in(x), frames)
        skips = [x]
        for i, block in enumerate(base.down_blocks):
            attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
            for j, (resnet, attn) in enumerate(zip(block.resnets, attentions)):
                x = self._resnet(resnet, f"down_blocks.{i}.resnets.{j}", x, call)
                if attn is not None:
                    x = self._transformer(attn, f"down_blocks.{i}.attentions.{j}", x, call)
                skips.append(x)
            if block.downsamplers is not None:
                x = motion.mix(f"down_blocks.{i}.downsamplers.0.conv")(block.downsamplers[0].conv(x), frames)
                skips.append(x)

        mid = base.mid_block
        x = self._resnet(mid.resnets[0], "mid_block.resnets.0", x, call)
        for j, (attn, resnet) in enumerate(zip(mid.attentions, mid.resnets[1:])):
            x = self._transformer(attn, f"mid_block.attentions.{j}", x, call)
            x = self._resnet(resnet, f"mid_block.resnets.{j + 1}", x, call)

        for i, block in enumerate(base.up_blocks):
            attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
            for j, (resnet, attn) in enumerate(zip(block.resnets, attentions)):
                x = torch.cat([x, skips.pop()], dim=1)
                x = self._resnet(resnet, f"up_blocks.{i}.resnets.{j}", x, call)
                if attn is not None:
                    x = self._transformer(attn, f"up_blocks.{i}.attentions.{j}", x, call)
            if block.upsamplers is not None:
                size = skips[-1].shape[-2:]  # the matching skip's size also covers odd latent sizes
                x = F.interpolate(x, size=size, mode="nearest")
                x = motion.mix(f"up_blocks.{i}.upsamplers.0.conv")(block.upsamplers[0].conv(x), frames)

        x = base.conv_act(frame_group_norm(base.conv_norm_out, x, frames))
        x = motion.mix("conv_out")(base.conv_out(x), frames)
        return rearrange(x, "(b f) c h w -> b c f h w", b=b)

    # -- pieces -------------------------------------------------------------------------------------------

    def _time_embedding(self, timestep: Tensor | int | float, batch: int, frames: int) -> Tensor:
        t = timestep if torch.is_tensor(timestep) else torch.tensor(timestep)
        if t.dim() == 0:
            t = t[None].expand(batch)
        elif t.shape != (batch,):
            raise InvalidInputError(f"timestep must be a number or a ({batch},) tensor, got shape {tuple(t.shape)}.")
        t_emb = self.base.time_proj(t.to(self.device)).to(self.dtype)
        return self.base.time_embedding(t_emb).repeat_interleave(frames, dim=0)

    def _resnet(self, resnet: nn.Module, name: str, x: Tensor, call: _Call) -> Tensor:
        motion = self.motion
        has_shortcut = resnet.conv_shortcut is not None

        def run(x: Tensor, emb: Tensor) -> Tensor:
            return (
                first_frame_resnet(
                    x,
                    resnet.time_emb_proj(resnet.nonlinearity(emb)),
                    call.frames,
                    norm1=resnet.norm1,
                    act=resnet.nonlinearity,
                    conv1=resnet.conv1,
                    mix1=motion.mix(f"{name}.conv1"),
                    norm2=resnet.norm2,
                    dropout=resnet.dropout,
                    conv2=resnet.conv2,
                    mix2=motion.mix(f"{name}.conv2"),
                    shortcut=resnet.conv_shortcut,
                    mix_shortcut=motion.mix(f"{name}.conv_shortcut") if has_shortcut else None,
                )
                / resnet.output_scale_factor
            )

        return self._maybe_checkpoint(run, x, call.emb)

    def _transformer(self, model: nn.Module, name: str, x: Tensor, call: _Call) -> Tensor:
        def run(x: Tensor) -> Tensor:
            n, _, h, w = x.shape
            residual = x
            x = model.norm(x)
            if not model.use_linear_projection:
                x = model.proj_in(x)
            x = x.permute(0, 2, 3, 1).reshape(n, h * w, -1)
            if model.use_linear_projection:
                x = model.proj_in(x)
            for k, block in enumerate(model.transformer_blocks):
                x = self._block(block, self.motion.block(f"{name}.transformer_blocks.{k}"), x, call)
            if model.use_linear_projection:
                x = model.proj_out(x)
            x = x.reshape(n, h, w, -1).permute(0, 3, 1, 2).contiguous()
            if not model.use_linear_projection:
                x = model.proj_out(x)
            return x + residual

        return self._maybe_checkpoint(run, x)

    @staticmethod
    def _block(block: nn.Module, additions: nn.Module, x: Tensor, call: _Call) -> Tensor:
        x = first_frame_attention(block.attn1, block.norm1(x), call.frames) + x
        x = additions.audio_attention(x, call.audio)
        x = block.attn2(block.norm2(x), encoder_hidden_states=call.context) + x
        x = additions.temporal_attention(x, call.frames)
        return block.ff(block.norm3(x)) + x

    def _maybe_checkpoint(self, fn: Callable[..., Tensor], *args: Any) -> Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _prepare(
        self, sample: Tensor, context: Tensor, audio: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, AudioContext, int]:
        """Validate shapes and dtypes with errors a user can act on, and lay the inputs out per frame."""
        _require_tensor("sample", sample, floating=True)
        if sample.dim() != 5:
            raise InvalidInputError(
                f"sample must be (batch, channels, frames, height, width), got shape {tuple(sample.shape)}."
            )
        b, c, frames = sample.shape[:3]
        if c != self.base.config.in_channels:
            raise InvalidInputError(
                f"sample has {c} channels; this UNet takes {self.base.config.in_channels} latent channels."
            )
        if frames < 2:
            raise InvalidInputError(f"AVSyncD animates at least 2 frames (frame 0 is the given image); got {frames}.")
        dtype, device = self.dtype, self.device

        _require_tensor("encoder_hidden_states", context, floating=True)
        context = _per_frame("encoder_hidden_states", context, b, frames)
        check_text_width(context.shape[-1], self.base.config.cross_attention_dim, "encoder_hidden_states")
        context = context.reshape(b * frames, *context.shape[2:]).to(device=device, dtype=dtype)

        _require_tensor("audio_encoder_hidden_states", audio, floating=True)
        if audio.dim() not in (3, 4) or audio.shape[0] != b or (audio.dim() == 4 and audio.shape[1] != frames):
            raise InvalidInputError(
                f"audio_encoder_hidden_states must be ({b}, {frames}, tokens, width) or ({b}, tokens, width), "
                f"got {tuple(audio.shape)}."
            )
        if audio.shape[-1] != self.motion.config.audio_dim:
            raise InvalidInputError(
                f"audio tokens have width {audio.shape[-1]}; this AVSyncD model takes {self.motion.config.audio_dim}."
            )
        audio = audio.to(device=device, dtype=dtype)
        if mask is not None:
            _require_tensor("audio_attention_mask", mask)
            if mask.dtype != torch.bool:
                raise InvalidInputError(
                    f"audio_attention_mask must be a bool tensor (True = attend), got {mask.dtype}."
                )
            if mask.shape != (b, frames, audio.shape[-2]):
                raise InvalidInputError(
                    f"audio_attention_mask must be ({b}, {frames}, {audio.shape[-2]}), got {tuple(mask.shape)}."
                )
            mask = mask.to(device)
        return (
            sample.to(device=device, dtype=dtype),
            context,
            AudioContext(audio, frames, mask, self._gather_index(mask)),
            frames,
        )

    def _gather_index(self, mask: Tensor | None) -> Tensor | None:
        """The mask's gather index, computed once per mask: samplers pass the same mask at every step, and the
        computation syncs with the device. The cache holds the mask itself, so its identity cannot be reused."""
        if mask is None:
            return None
        cached = self._index_cache
        if cached is None or cached[0] is not mask or cached[1] != mask._version:
            self._index_cache = cached = (mask, mask._version, gather_index(mask))
        return cached[2]


def _require_tensor(name: str, value: object, floating: bool = False) -> None:
    if not isinstance(value, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch tensor, got {type(value).__name__}.")
    if floating and not value.is_floating_point():
        raise InvalidInputError(f"{name} must be a floating-point tensor, got {value.dtype}.")


def _per_frame(name: str, value: Tensor, batch: int, frames: int) -> Tensor:
    if value.dim() == 3 and value.shape[0] == batch:
        return value[:, None].expand(batch, frames, *value.shape[1:])
    if value.dim() == 4 and value.shape[:2] == (batch, frames):
        return value
    raise InvalidInputError(
        f"{name} must be ({batch}, {frames}, tokens, width) or ({batch}, tokens, width), got {tuple(value.shape)}."
    )
