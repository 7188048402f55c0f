"""Where each official (diffusers-named) UNet module sits in the original LDM layout.

The LDM layout is the one of single-file SD1.5 checkpoints (``model.diffusion_model.*``) and of ComfyUI's own
``UNetModel``. One table serves both: converting single-file checkpoints, and finding the ComfyUI module that
an AVSyncD addition belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

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
            places[f"up_blocks.{i}.upsamplers.0.conv"] = LdmPlace(f"output_blocks.{idx}.{2 if attn else 1}.conv", ("output", idx))
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
