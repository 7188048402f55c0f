"""The frozen SD1.5 parts training needs besides the UNet: the VAE, the CLIP text encoder and its tokenizer.

They load from a diffusers folder (``vae/``, ``text_encoder/``, ``tokenizer/``) or from a single-file LDM
checkpoint (``first_stage_model.*``, ``cond_stage_model.transformer.*``) with this project's own key table, so
nothing is fetched from a hub. Single files carry no tokenizer: one is taken from an explicit folder, else from
ComfyUI's bundled SD1 tokenizer when ``COMFYUI_PATH`` is set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ..checkpoints import (
    WEIGHT_SUFFIXES,
    find_weights,
    load_strict,
    model_subfolder,
    read_json,
    read_keys,
    read_state_dict,
)
from ..errors import CheckpointError, existing_path
from . import move_module
from .family import check_text_encoder_keys

SD15_VAE_CONFIG: dict = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
# CLIP ViT-L/14's text tower, as SD1.5 uses it.
SD15_TEXT_ENCODER_CONFIG: dict = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
}
LDM_VAE_PREFIX = "first_stage_model."
LDM_TEXT_PREFIX = "cond_stage_model.transformer."
TOKEN_LENGTH = 77

_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


# -- VAE -------------------------------------------------------------------------------------------------


def load_vae(
    path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    single_file_config: dict | None = None,
) -> AutoencoderKL:
    """SD1.5's VAE from a diffusers model root, its ``vae/`` folder, or a single-file checkpoint."""
    path = existing_path(path, "SD1.5 model")
    if path.is_dir():
        folder = _subfolder(path, "vae", "a VAE")
        vae = AutoencoderKL.from_config(read_json(folder / "config.json", "VAE config"))
        _load_part(vae, read_state_dict(find_weights(folder)), folder, "VAE")
    else:
        state = _single_file_part(path, LDM_VAE_PREFIX, "VAE")
        vae = AutoencoderKL.from_config(single_file_config or SD15_VAE_CONFIG)
        _load_part(vae, vae_from_ldm(state, vae, path), path, "VAE")
    return move_module(vae, device, dtype).eval().requires_grad_(False)


def vae_latent_scale(vae: AutoencoderKL) -> float:
    """The factor between the VAE posterior and the latents the UNet works in (0.18215 for SD1.5)."""
    return float(vae.config.scaling_factor)


def vae_factor(vae: AutoencoderKL) -> int:
    """How many pixels one latent covers along each side (8 for SD1.5)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def vae_ldm_name(name: str, num_levels: int) -> str:
    """The LDM (single-file) name of a diffusers ``AutoencoderKL`` parameter."""
    name = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", name)
    name = re.sub(r"\.mid_block\.resnets\.(\d+)\.", lambda m: f".mid.block_{int(m[1]) + 1}.", name)
    attn = re.match(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)$", name)
    if attn:
        return f"{attn[1]}.mid.attn_1.{_VAE_ATTN[attn[2]]}.{attn[3]}"
    name = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", name)
    name = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", name)
    name = re.sub(
        r"^decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{num_levels - 1 - int(m[1])}.block.", name
    )
    name = re.sub(
        r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
        lambda m: f"decoder.up.{num_levels - 1 - int(m[1])}.upsample.",
        name,
    )
    return name.replace(".conv_shortcut.", ".nin_shortcut.")


def vae_from_ldm(state: dict[str, torch.Tensor], vae: AutoencoderKL, source: Path) -> dict[str, torch.Tensor]:
    """Rename (and reshape: LDM's attention projections are 1x1 convs) an LDM VAE state dict for ``vae``."""
    levels = len(vae.config.block_out_channels)
    out, missing = {}, []
    for name, own in vae.state_dict().items():
        ldm = vae_ldm_name(name, levels)
        if ldm not in state:
            missing.append(ldm)
            continue
        out[name] = state[ldm].reshape(own.shape) if state[ldm].numel() == own.numel() else state[ldm]
    if missing:
        raise CheckpointError(
            f"{source.name}: the VAE is incomplete or not SD1.5's ({len(missing)} tensors missing, e.g. "
            f"{', '.join(LDM_VAE_PREFIX + m for m in missing[:3])})."
        )
    return out


# -- text encoder and tokenizer ------------------------------------------------------------------------


def load_text_encoder(
    path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    single_file_config: dict | None = None,
):
    """SD1.5's CLIP text encoder (transformers ``CLIPTextModel``) from a diffusers folder or a single file."""
    from transformers import CLIPTextConfig, CLIPTextModel

    path = existing_path(path, "SD1.5 model")
    if path.is_dir():
        folder = _subfolder(path, "text_encoder", "a CLIP text encoder")
        try:
            model = CLIPTextModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{folder} does not hold a readable CLIP text encoder ({exc}).") from exc
    else:
        state = _single_file_part(path, LDM_TEXT_PREFIX, "CLIP text encoder")
        model = CLIPTextModel(CLIPTextConfig(**(single_file_config or SD15_TEXT_ENCODER_CONFIG)))
        _load_part(model, text_encoder_from_ldm(state, model), path, "CLIP text encoder")
    return move_module(model, device, dtype).eval().requires_grad_(False)


def text_encoder_from_ldm(state: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """LDM keys hold transformers' ``text_model.*`` names; transformers 5 dropped that prefix inside the model."""
    own = model.state_dict()
    prefixed = any(k.startswith("text_model.") for k in own)
    out = {}
    for key, value in state.items():
        name = key if prefixed else key.removeprefix("text_model.")
        if name in own:
            out[name] = value
    return out


def load_tokenizer(tokenizer: str | os.PathLike | None = None, model_path: str | os.PathLike | None = None):
    """A CLIP tokenizer: ``tokenizer`` if given, else the model folder's ``tokenizer/``, else ComfyUI's SD1 one."""
    from transformers import CLIPTokenizer

    candidates: list[Path] = []
    if tokenizer is not None:
        folder = Path(tokenizer).expanduser()
        if not folder.is_dir():
            raise CheckpointError(f"Tokenizer folder {folder} does not exist.")
        candidates.append(folder)
    else:
        if model_path is not None and Path(model_path).is_dir() and (Path(model_path) / "tokenizer").is_dir():
            candidates.append(Path(model_path) / "tokenizer")
        comfy = os.environ.get("COMFYUI_PATH")
        if comfy and (Path(comfy) / "comfy" / "sd1_tokenizer").is_dir():
            candidates.append(Path(comfy) / "comfy" / "sd1_tokenizer")
    if not candidates:
        raise CheckpointError(
            "No CLIP tokenizer found: single-file checkpoints do not include one. Set model.tokenizer to a folder "
            "with vocab.json and merges.txt (or tokenizer.json), e.g. the tokenizer/ folder of a diffusers SD1.5 "
            "model or ComfyUI's comfy/sd1_tokenizer, or set COMFYUI_PATH to your ComfyUI folder."
        )
    folder = candidates[0]
    try:
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{folder} is not a CLIP tokenizer folder (needs vocab.json and merges.txt, or tokenizer.json): {exc}"
        ) from exc


@torch.no_grad()
def encode_prompts(text_encoder, tokenizer, prompts: list[str]) -> torch.Tensor:
    """(n, 77, width) float32: the last hidden state SD1.5 conditions on, prompts padded to 77 tokens."""
    ids = tokenizer(
        prompts, padding="max_length", max_length=TOKEN_LENGTH, truncation=True, return_tensors="pt"
    ).input_ids
    device = next(text_encoder.parameters()).device
    return text_encoder(ids.to(device)).last_hidden_state.float()


# -- shared ---------------------------------------------------------------------------------------------


def _subfolder(path: Path, name: str, what: str) -> Path:
    folder = model_subfolder(path, name)
    if folder is not None:
        return folder
    hint = (
        " AVSyncD checkpoints hold only unet/ and audio_encoder/; point to the SD1.5 model."
        if (path / "audio_encoder").is_dir()
        else ""
    )
    raise CheckpointError(f"{path} holds no {what}: expected {name}/config.json in a diffusers SD1.5 folder.{hint}")


def _single_file_part(path: Path, prefix: str, what: str) -> dict[str, torch.Tensor]:
    if path.suffix not in WEIGHT_SUFFIXES:
        raise CheckpointError(f"{path.name} is not a checkpoint file ({', '.join(WEIGHT_SUFFIXES)}).")
    check_text_encoder_keys(read_keys(path), path.name)  # before any tensor is read
    state = read_state_dict(path, lambda k: k.startswith(prefix))
    part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not part:
        raise CheckpointError(
            f"{path.name} holds no SD1.5 {what} (no {prefix}* tensors). Use a full SD1.5 checkpoint, or a diffusers "
            "folder with vae/, text_encoder/ and tokenizer/."
        )
    return part


def _load_part(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path, what: str) -> None:
    """Full checkpoints hold more than this part, so extra keys are fine; missing or misshapen ones are not."""
    load_strict(model, state, str(source), f"an SD1.5 {what}", allow_unexpected=True, assign=False)
