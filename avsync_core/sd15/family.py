"""Is this Stable Diffusion 1.5? The one place that tells model families apart, for every kind of source.

AVSyncD's additions fit SD1.5's UNet only. Users hand the pack single files, diffusers folders and ComfyUI
models of every family, so each source is reduced to the same few traits (input channels, text width, SDXL's
label embedding, the text encoder's key prefix) and judged here, with one message per family. Needs neither
diffusers nor ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch

from ..errors import CheckpointError, InvalidInputError
from ..model.motion_module import MotionConfig

SD15_TEXT_WIDTH = 768
_TEXT_WIDTH_FAMILIES = {1024: "a Stable Diffusion 2.x model", 2048: "an SDXL model"}
# Text-encoder prefixes of single-file checkpoints that SD1.5 (cond_stage_model.transformer.*) does not use.
_TEXT_ENCODER_FAMILIES = {
    "conditioner.embedders.": "an SDXL model",
    "cond_stage_model.model.": "a Stable Diffusion 2.x model (OpenCLIP text encoder)",
}
_FIX = "AVSyncD needs a Stable Diffusion 1.5 checkpoint (any SD1.5 fine-tune works)."


@dataclass(frozen=True)
class UNetTraits:
    """The shapes that tell UNet families apart; None where the source does not show them."""

    in_channels: int | None
    text_width: int | None
    label_embedding: bool = False

    @classmethod
    def from_diffusers_config(cls, config: Mapping[str, Any]) -> "UNetTraits":
        text = config.get("cross_attention_dim", SD15_TEXT_WIDTH)
        return cls(
            in_channels=config.get("in_channels", 4),
            text_width=text if isinstance(text, int) else -1,  # per-block widths: no SD model
            label_embedding=bool(config.get("addition_embed_type")),
        )

    @classmethod
    def from_ldm_state(cls, ldm: Mapping[str, torch.Tensor]) -> "UNetTraits":
        """From LDM UNet tensors (single files and ComfyUI, ``model.diffusion_model.`` removed)."""
        return cls._from_state(
            ldm,
            "input_blocks.0.0.weight",
            "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
            "label_emb.0.0.weight",
        )

    @classmethod
    def from_diffusers_state(cls, state: Mapping[str, torch.Tensor]) -> "UNetTraits":
        return cls._from_state(
            state,
            "conv_in.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            "add_embedding.linear_1.weight",
        )

    @classmethod
    def _from_state(cls, state: Mapping[str, torch.Tensor], conv_in: str, text_key: str, label: str) -> "UNetTraits":
        return cls(
            in_channels=state[conv_in].shape[1] if conv_in in state else None,
            text_width=state[text_key].shape[1] if text_key in state else None,
            label_embedding=label in state,
        )


def check_sd15(traits: UNetTraits, source: str) -> None:
    """Refuse anything but a regular 4-channel SD1.5 UNet, naming the family that was found."""
    if traits.label_embedding:
        raise CheckpointError(f"{source} is an SDXL model; {_FIX}")
    if traits.text_width in _TEXT_WIDTH_FAMILIES:
        raise CheckpointError(
            f"{source} is {_TEXT_WIDTH_FAMILIES[traits.text_width]} (text encodings of width "
            f"{traits.text_width}); {_FIX}"
        )
    if traits.in_channels is None or traits.text_width is None or traits.text_width < 0:
        raise CheckpointError(f"{source} does not have the Stable Diffusion 1.5 UNet layout. {_FIX}")
    if traits.in_channels != 4:
        raise CheckpointError(
            f"{source} takes {traits.in_channels} input channels (an inpainting or depth model?); AVSyncD needs a "
            "regular 4-channel Stable Diffusion 1.5 checkpoint."
        )


def check_text_encoder_keys(keys: Iterable[str], source: str) -> None:
    """Refuse single files whose text encoder belongs to another family (seen before any UNet is read)."""
    for prefix, family in _TEXT_ENCODER_FAMILIES.items():
        if any(k.startswith(prefix) for k in keys):
            raise CheckpointError(f"{source} is {family}; {_FIX}")


def check_base_fits(base_config: Mapping[str, Any], motion_config: MotionConfig, source: str = "The base UNet") -> None:
    """Refuse bases the additions were not made for: another family, or an SD1.5-like UNet of another layout."""
    check_sd15(UNetTraits.from_diffusers_config(base_config), source)
    base = MotionConfig.from_unet_config(base_config)
    fields = (
        "block_out_channels",
        "layers_per_block",
        "attention_heads",
        "down_attention",
        "mid_attention",
        "transformer_layers",
    )
    mismatched = [f for f in fields if getattr(base, f) != getattr(motion_config, f)]
    if mismatched:
        raise CheckpointError(
            f"The AVSyncD additions were made for a UNet with {motion_config.describe()}, but {source} has "
            f"{base.describe()} (differs in: {', '.join(mismatched)}). AVSyncD needs a Stable Diffusion 1.5 base."
        )


def check_text_width(width: int, model_width: int, text_input: str = "The text conditioning") -> None:
    """Text encodings must be as wide as the UNet's cross-attention; ``text_input`` names what to change."""
    if width != model_width:
        raise InvalidInputError(
            f"{text_input} has width {width}; this UNet takes {model_width}-wide text encodings (SD1.5's CLIP text "
            "encoder gives 768). Encode the prompt with the CLIP of the SD1.5 checkpoint the model comes from."
        )
