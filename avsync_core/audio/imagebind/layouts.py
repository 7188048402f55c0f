"""The key layouts ImageBind's audio weights come in, mapped to this encoder's names, and the sizes read from them.

Three layouts exist in the wild: Meta's ``imagebind_huge.pth`` (``modality_*.audio.*``, next to five other
modalities), an official AVSyncD ``audio_encoder/`` (``preprocessor.*``, ``trunk.blocks.*``, ``head.*`` plus an
untrained final LayerNorm) and the compact file this pack writes (this encoder's own names).
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

from ...errors import CheckpointError, InvalidInputError, preview
from .config import ImageBindAudioConfig

FORMAT_NAME = "avsync.imagebind_audio"  # metadata "format" of the compact file
FORMAT_VERSION = "1"
HEAD_DIM = 64  # every ImageBind trunk uses 64-dim heads; the head count is not stored in the weights
IMAGEBIND_PREFIXES = {
    "modality_preprocessors.audio.": "preprocessor.",
    "modality_trunks.audio.": "trunk.",
    "modality_heads.audio.": "head.",
    "modality_postprocessors.audio.": "postprocessor.",
}
# Official AVSyncD (ImageBindSegmaskAudioEncoder) names -> ours.
AVSYNCD_NAMES = {
    "preprocessor.cls_token": "cls_token",
    "preprocessor.rgbt_stem.proj.weight": "stem.weight",
    "preprocessor.rgbt_stem.norm_layer.weight": "stem_norm.weight",
    "preprocessor.rgbt_stem.norm_layer.bias": "stem_norm.bias",
    "preprocessor.pos_embedding_helper.pos_embed": "pos_embed",
    "head.0.weight": "head_norm.weight",
    "head.0.bias": "head_norm.bias",
    "head.2.weight": "head_proj.weight",
    "postprocessor.1.log_logit_scale": "log_logit_scale",
}
_AVSYNCD_BLOCK = re.compile(r"^trunk\.(blocks\.\d+\..+)$")
_FINAL_NORM_KEYS = ("final_layer_norm.weight", "final_layer_norm.bias")


def audio_keys_only(key: str) -> bool:
    """Read filter for multi-modality files: keys of other modalities are never read."""
    return not key.startswith("modality_") or is_audio_key(key)


def is_audio_key(key: str) -> bool:
    return key.startswith(tuple(IMAGEBIND_PREFIXES))


def canonical_state(tensors: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Our parameter names from ImageBind's, AVSyncD's or our own; other modalities are never touched."""
    keys = list(tensors.keys())
    if any(k.startswith("audio_encoder.") for k in keys):
        tensors = {k[len("audio_encoder.") :]: tensors[k] for k in keys if k.startswith("audio_encoder.")}
        keys = list(tensors.keys())
    if any(is_audio_key(k) for k in keys):
        renamed = {}
        for k in keys:
            for prefix, official in IMAGEBIND_PREFIXES.items():
                if k.startswith(prefix):
                    renamed[official + k[len(prefix) :]] = tensors[k]
        tensors, keys = renamed, list(renamed)
    if any(k.startswith("trunk.blocks.") for k in keys):
        out: dict[str, torch.Tensor] = {}
        for k in keys:
            block = _AVSYNCD_BLOCK.match(k)
            if block:
                out[block.group(1)] = tensors[k]
            elif k in AVSYNCD_NAMES:
                out[AVSYNCD_NAMES[k]] = tensors[k]
            elif k in _FINAL_NORM_KEYS:
                _check_identity_norm(k, tensors[k], source)
            else:
                out[k] = tensors[k]  # reported as unexpected by the caller
        return out
    if any(k.startswith("blocks.") for k in keys):
        return {k: tensors[k] for k in keys}
    raise CheckpointError(
        f"{source} holds no ImageBind audio weights (expected keys like modality_trunks.audio.blocks.0..., "
        f"trunk.blocks.0... or blocks.0...); its keys look like {preview(sorted(keys), 3)}."
    )


def _check_identity_norm(key: str, value: torch.Tensor, source: str) -> None:
    """AVSyncD's final LayerNorm is created fresh and never trained; anything else would be silently dropped."""
    target = 1.0 if key.endswith("weight") else 0.0
    if not bool((value.float() == target).all()):
        raise CheckpointError(
            f"{source}: {key} is not the untrained identity ({target:g} everywhere); this encoder applies a "
            "weight-free final LayerNorm and cannot reproduce a trained one."
        )


def infer_config(state: Mapping[str, torch.Tensor], source: str, num_heads: int | None) -> ImageBindAudioConfig:
    try:
        dim, channels, kernel, kernel_w = state["stem.weight"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        mlp_hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
        out_dim = state["head_proj.weight"].shape[0]
        tokens = state["pos_embed"].shape[1]
    except (KeyError, ValueError, IndexError) as err:
        raise CheckpointError(f"{source}: the ImageBind audio weights are incomplete (missing {err}).") from None
    if channels != 1 or kernel != kernel_w:
        raise CheckpointError(f"{source}: the stem weight {tuple(state['stem.weight'].shape)} is not an audio stem.")
    if num_heads is None:
        if dim % HEAD_DIM:
            raise CheckpointError(
                f"{source}: embed dim {dim} is not a multiple of ImageBind's 64-wide heads; pass num_heads."
            )
        num_heads = dim // HEAD_DIM
    try:
        config = ImageBindAudioConfig(
            embed_dim=dim, depth=depth, num_heads=num_heads, out_dim=out_dim, kernel=kernel, mlp_hidden=mlp_hidden
        )
    except InvalidInputError as err:
        raise CheckpointError(f"{source}: {err}") from None
    if config.num_tokens != tokens:
        raise CheckpointError(
            f"{source}: the position embedding has {tokens} tokens, but a {kernel}x{kernel} stride-{config.stride} "
            f"stem over a {config.mel_bins}x{config.target_frames} mel gives {config.num_tokens}."
        )
    return config
