"""The trained part of AVSyncD (the "motion module"), laid out under the official parameter names.

The module tree mirrors the official 3D UNet, so ``state_dict()`` keys are exactly the official ones
(``down_blocks.0.resnets.0.conv1.conv_temp.weight``,
``mid_block.attentions.0.transformer_blocks.0.attn_audio.to_k.weight``,
...). Official checkpoints and the files this project writes are therefore interchangeable.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Mapping

import torch
from torch import nn

from ..checkpoints import load_strict
from ..errors import CheckpointError
from .additions import BlockAdditions, TemporalConvMix
from .operations import Operations

# A parameter is trained by AVSyncD when one of its module names ends in one of these (the official rule).
_MOTION_SEGMENT = re.compile(r"(^|\.)[A-Za-z_]+_(temp|audio)\.")


def is_motion_key(key: str) -> bool:
    """True for the parameters AVSyncD trains (``conv_temp``, ``*_temp``, ``*_audio``)."""
    return _MOTION_SEGMENT.search(key) is not None


@dataclass(frozen=True)
class MotionConfig:
    """The UNet layout the additions are made for; SD1.5's by default."""

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    attention_heads: tuple[int, ...] = (8, 8, 8, 8)
    down_attention: tuple[bool, ...] = (True, True, True, False)
    mid_attention: bool = True
    transformer_layers: int = 1
    audio_dim: int = 768
    out_channels: int = 4

    def __post_init__(self) -> None:
        levels = len(self.block_out_channels)
        if len(self.attention_heads) != levels or len(self.down_attention) != levels:
            raise CheckpointError(
                f"Inconsistent UNet layout: {levels} block levels but {len(self.attention_heads)} head counts and "
                f"{len(self.down_attention)} attention flags."
            )

    @classmethod
    def from_unet_config(cls, config: Mapping) -> "MotionConfig":
        """From a diffusers-style UNet config (the official 3D one or SD1.5's 2D one); a config with missing or
        malformed entries is refused with the entry named."""
        try:
            return cls._from_unet_config(config)
        except KeyError as exc:
            raise CheckpointError(f"The UNet config has no {exc} entry; is config.json damaged?") from None
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"The UNet config has a malformed entry ({exc}); is config.json damaged?") from None

    @classmethod
    def _from_unet_config(cls, config: Mapping) -> "MotionConfig":
        down_types = list(config["down_block_types"])
        if not all(isinstance(t, str) for t in down_types):
            raise TypeError(f"down_block_types must be block names, got {down_types}")
        levels = len(down_types)
        heads = config.get("attention_head_dim", 8)
        heads = tuple(heads) if isinstance(heads, (list, tuple)) else (heads,) * levels
        if config.get("num_attention_heads") is not None:
            raw = config["num_attention_heads"]
            heads = tuple(raw) if isinstance(raw, (list, tuple)) else (raw,) * levels
        layers = config.get("layers_per_block", 2)
        if not isinstance(layers, int):
            raise CheckpointError(f"Per-level layers_per_block {layers} is not an SD1.5 layout.")
        mid_type = config.get("mid_block_type") or "UNetMidBlock2DCrossAttn"
        return cls(
            block_out_channels=tuple(config["block_out_channels"]),
            layers_per_block=layers,
            attention_heads=heads,
            down_attention=tuple("CrossAttn" in t for t in down_types),
            mid_attention="CrossAttn" in mid_type,
            transformer_layers=int(config.get("transformer_layers_per_block", 1) or 1),
            audio_dim=int(config.get("audio_cross_attention_dim", 768)),
            out_channels=int(config.get("out_channels", 4)),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "MotionConfig":
        raw = json.loads(text)
        for key in ("block_out_channels", "attention_heads", "down_attention"):
            raw[key] = tuple(raw[key])
        return cls(**raw)

    @property
    def up_attention(self) -> tuple[bool, ...]:
        return tuple(reversed(self.down_attention))

    def describe(self) -> str:
        return (
            f"block channels {list(self.block_out_channels)}, {self.layers_per_block} layers per block, "
            f"audio tokens of width {self.audio_dim}"
        )


def conv_channels(config: MotionConfig) -> dict[str, int]:
    """Official name of every convolution that gets a ``conv_temp``, with its output channels, in forward order."""
    ch = config.block_out_channels
    levels = len(ch)
    layers = config.layers_per_block
    convs: dict[str, int] = {"conv_in": ch[0]}
    for i, out in enumerate(ch):
        for j in range(layers):
            inp = (ch[i - 1] if i else ch[0]) if j == 0 else out
            base = f"down_blocks.{i}.resnets.{j}"
            convs[f"{base}.conv1"] = out
            convs[f"{base}.conv2"] = out
            if inp != out:
                convs[f"{base}.conv_shortcut"] = out
        if i < levels - 1:
            convs[f"down_blocks.{i}.downsamplers.0.conv"] = out
    for j in range(2):
        convs[f"mid_block.resnets.{j}.conv1"] = ch[-1]
        convs[f"mid_block.resnets.{j}.conv2"] = ch[-1]
    rev = list(reversed(ch))
    for i, out in enumerate(rev):
        for j in range(layers + 1):
            base = f"up_blocks.{i}.resnets.{j}"
            convs[f"{base}.conv1"] = out
            convs[f"{base}.conv2"] = out
            convs[f"{base}.conv_shortcut"] = out  # skip concatenation always changes the width
        if i < levels - 1:
            convs[f"up_blocks.{i}.upsamplers.0.conv"] = out
    convs["conv_out"] = config.out_channels
    return convs


def block_layout(config: MotionConfig) -> dict[str, tuple[int, int]]:
    """Official name of every transformer block, with its (channels, heads), in forward order."""
    ch = config.block_out_channels
    layers = config.layers_per_block
    blocks: dict[str, tuple[int, int]] = {}

    def add(prefix: str, channels: int, heads: int) -> None:
        for k in range(config.transformer_layers):
            blocks[f"{prefix}.transformer_blocks.{k}"] = (channels, heads)

    for i, out in enumerate(ch):
        if config.down_attention[i]:
            for j in range(layers):
                add(f"down_blocks.{i}.attentions.{j}", out, config.attention_heads[i])
    if config.mid_attention:
        add("mid_block.attentions.0", ch[-1], config.attention_heads[-1])
    rev_heads = list(reversed(config.attention_heads))
    for i, out in enumerate(reversed(ch)):
        if config.up_attention[i]:
            for j in range(layers + 1):
                add(f"up_blocks.{i}.attentions.{j}", out, rev_heads[i])
    return blocks


class MotionModule(nn.Module):
    """All AVSyncD additions for one UNet layout, addressable by official module name."""

    def __init__(
        self, config: MotionConfig = MotionConfig(), zero_init: bool = True, operations: Operations = nn
    ) -> None:
        """``operations`` gives the layer classes (``torch.nn``, or a host's cast-aware ones: see additions.py)."""
        super().__init__()
        self.config = config
        for name, channels in conv_channels(config).items():
            _attach(self, name, TemporalConvMix(channels, zero_init=zero_init, operations=operations))
        for name, (channels, heads) in block_layout(config).items():
            _attach(self, name, BlockAdditions(channels, heads, config.audio_dim, zero_init, operations))

    def mix(self, name: str) -> TemporalConvMix:
        """The ``conv_temp`` holder of the convolution with this official name (e.g. ``conv_in``)."""
        return self.get_submodule(name)

    def block(self, name: str) -> BlockAdditions:
        """The additions of the transformer block with this official name."""
        return self.get_submodule(name)

    def conv_names(self) -> list[str]:
        return list(conv_channels(self.config))

    def block_names(self) -> list[str]:
        return list(block_layout(self.config))

    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor], source: str = "the checkpoint") -> None:
        """Strict load (tensors assigned, so a module built on the meta device gets them without a copy)."""
        load_strict(
            self,
            state_dict,
            source,
            f"AVSyncD weights for a UNet with {self.config.describe()}",
            hint="Use an AVSyncD checkpoint made for a Stable Diffusion 1.5 UNet.",
        )


def infer_motion_config(
    state_dict: Mapping[str, torch.Tensor], attention_heads: tuple[int, ...] | None = None
) -> MotionConfig:
    """Recover the layout from parameter shapes; head counts are not visible in shapes, so they come from outside."""
    if "conv_in.conv_temp.weight" not in state_dict:
        raise CheckpointError("No AVSyncD weights found (conv_in.conv_temp.weight is missing).")
    channels: list[int] = []
    while f"down_blocks.{len(channels)}.resnets.0.conv1.conv_temp.weight" in state_dict:
        channels.append(state_dict[f"down_blocks.{len(channels)}.resnets.0.conv1.conv_temp.weight"].shape[0])
    layers = 0
    while f"down_blocks.0.resnets.{layers}.conv1.conv_temp.weight" in state_dict:
        layers += 1
    down_attention = tuple(
        f"down_blocks.{i}.attentions.0.transformer_blocks.0.attn_audio.to_k.weight" in state_dict
        for i in range(len(channels))
    )
    depth = 0
    while any(k.startswith(f"mid_block.attentions.0.transformer_blocks.{depth}.") for k in state_dict):
        depth += 1
    audio_keys = [k for k in state_dict if k.endswith("attn_audio.to_k.weight")]
    if not channels or not audio_keys:
        raise CheckpointError("The AVSyncD weights are incomplete: no down blocks or no audio cross-attention found.")
    return MotionConfig(
        block_out_channels=tuple(channels),
        layers_per_block=layers,
        attention_heads=attention_heads or (8,) * len(channels),
        down_attention=down_attention,
        mid_attention=depth > 0,
        transformer_layers=max(depth, 1),
        audio_dim=state_dict[audio_keys[0]].shape[1],
        # A truncated file may lack it; the strict load then lists every missing tensor in one message.
        out_channels=state_dict["conv_out.conv_temp.weight"].shape[0]
        if "conv_out.conv_temp.weight" in state_dict
        else MotionConfig.out_channels,
    )


def _attach(root: nn.Module, dotted: str, module: nn.Module) -> None:
    parent = root
    *path, leaf = dotted.split(".")
    for part in path:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    parent.add_module(leaf, module)
