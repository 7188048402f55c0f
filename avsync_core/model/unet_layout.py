"""The official (diffusers-named) UNet <-> LDM layout map: where each official module sits in the LDM UNet.

The LDM layout is the one of single-file SD1.5 checkpoints (``model.diffusion_model.*``) and of ComfyUI's own
``UNetModel``. One table serves both: converting single-file checkpoints, and finding the ComfyUI module that
an AVSyncD addition belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CheckpointError
from .motion_module import MotionConfig

RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


@dataclass(frozen=True)
class LdmPlace:
    """An LDM module path plus, for transformer blocks, ComfyUI's ``transformer_options["block"]`` key."""

    path: str
    block: tuple[str, int] | None = None


def unet_module_map(config: MotionConfig) -> dict[str, LdmPlace]:
    """Official module prefix -> LDM place, for resnets, transformers, samplers and the stem/head layers."""
    layers = config.layers_per_block
    levels = len(config.block_out_channels)
    places: dict[str, LdmPlace] = {
        "conv_in": LdmPlace("input_blocks.0.0", ("input", 0)),
        "time_embedding.linear_1": LdmPlace("time_embed.0"),
        "time_embedding.linear_2": LdmPlace("time_embed.2"),
        "conv_norm_out": LdmPlace("out.0"),
        "conv_out": LdmPlace("out.2"),
    }
    for i in range(levels):
        for j in range(layers):
            idx = 1 + i * (layers + 1) + j
            places[f"down_blocks.{i}.resnets.{j}"] = LdmPlace(f"input_blocks.{idx}.0", ("input", idx))
            if config.down_attention[i]:
                places[f"down_blocks.{i}.attentions.{j}"] = LdmPlace(f"input_blocks.{idx}.1", ("input", idx))
        if i < levels - 1:
            idx = 1 + i * (layers + 1) + layers
            places[f"down_blocks.{i}.downsamplers.0.conv"] = LdmPlace(f"input_blocks.{idx}.0.op", ("input", idx))
    places["mid_block.resnets.0"] = LdmPlace("middle_block.0", ("middle", 0))
    if config.mid_attention:
        places["mid_block.attentions.0"] = LdmPlace("middle_block.1", ("middle", 0))
    places["mid_block.resnets.1"] = LdmPlace(f"middle_block.{2 if config.mid_attention else 1}", ("middle", 0))
    for i in range(levels):
        attn = config.up_attention[i]
        for j in range(layers + 1):
            idx = i * (layers + 1) + j
            places[f"up_blocks.{i}.resnets.{j}"] = LdmPlace(f"output_blocks.{idx}.0", ("output", idx))
            if attn:
                places[f"up_blocks.{i}.attentions.{j}"] = LdmPlace(f"output_blocks.{idx}.1", ("output", idx))
        if i < levels - 1:
            idx = i * (layers + 1) + layers
            places[f"up_blocks.{i}.upsamplers.0.conv"] = LdmPlace(
                f"output_blocks.{idx}.{2 if attn else 1}.conv", ("output", idx)
            )
    return places


def diffusers_to_ldm_key(key: str, places: dict[str, LdmPlace]) -> str:
    """Map one official/diffusers UNet parameter name to its LDM name (transformer internals keep their names)."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in places:
            rest = parts[cut:]
            if ".resnets." in f".{prefix}." and rest[0] in RESNET_PARTS:
                rest = RESNET_PARTS[rest[0]].split(".") + rest[1:]
            return ".".join([places[prefix].path, *rest])
    raise KeyError(f"no LDM place for UNet parameter {key}")


def ldm_to_diffusers_state_dict(ldm: dict, diffusers_keys: list[str], config: MotionConfig) -> dict:
    """Rename an LDM UNet state dict to diffusers names; ``diffusers_keys`` are the names the target expects."""
    places = unet_module_map(config)
    out = {}
    for key in diffusers_keys:
        ldm_key = diffusers_to_ldm_key(key, places)
        if ldm_key in ldm:
            out[key] = ldm[ldm_key]
    return out


def diffusers_config_from_ldm(unet_config: dict) -> dict:
    """The diffusers-style UNet config equivalent to an LDM ``unet_config`` (ComfyUI's model description).

    Only the fields that decide whether the AVSyncD additions fit are produced; they feed ``check_base_fits``.
    """
    channels = [unet_config["model_channels"] * m for m in unet_config["channel_mult"]]
    res_blocks = unet_config["num_res_blocks"]
    if isinstance(res_blocks, (list, tuple)):
        if len(set(res_blocks)) != 1:
            raise CheckpointError(
                f"A UNet with {list(res_blocks)} resnets per level is not a Stable Diffusion 1.5 UNet."
            )
        res_blocks = res_blocks[0]
    depth = list(unet_config.get("transformer_depth") or [])
    per_level = [depth[i * res_blocks] if i * res_blocks < len(depth) else 0 for i in range(len(channels))]
    heads = unet_config.get("num_heads", -1)
    if heads == -1:
        heads_per_level = [c // unet_config["num_head_channels"] for c in channels]
    else:
        heads_per_level = [heads] * len(channels)
    return {
        "block_out_channels": channels,
        "layers_per_block": res_blocks,
        "attention_head_dim": heads_per_level,
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in per_level],
        "mid_block_type": "UNetMidBlock2DCrossAttn"
        if unet_config.get("transformer_depth_middle", 1)
        else "UNetMidBlock2D",
        "transformer_layers_per_block": max(per_level) if any(per_level) else 1,
        "cross_attention_dim": unet_config.get("context_dim"),
        "in_channels": unet_config.get("in_channels", 4),
        "out_channels": unet_config.get("out_channels", 4),
        "use_linear_projection": bool(unet_config.get("use_linear_in_transformer", False)),
        "addition_embed_type": "text_time" if unet_config.get("adm_in_channels") else None,
    }
