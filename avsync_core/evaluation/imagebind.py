"""ImageBind's vision branch next to its audio branch: AlignSync's image-audio similarity.

AlignSync asks, frame by frame, how well each generated frame matches the sound in ImageBind's joint space.
The official evaluation runs the whole ``imagebind_huge`` for this; only two of its six branches are used. Here
just those two are read from ``imagebind_huge.pth`` (or from a compact safetensors copy of them): the audio
branch is the pack's own :class:`~avsync_core.audio.ImageBindAudioEncoder`, the vision branch is below.

Vision branch (ImageBind's settings; ViT-H/14 in imagebind_huge: width 1280, 32 blocks, 16 heads, out 1024):
each (3, 224, 224) image is repeated into a 2-frame clip (``PadIm2Video``), patchified by a bias-free Conv3d with
kernel = stride = (2, 14, 14) into 16 x 16 tokens, a cls token is prepended and the learned position embedding
added, then a LayerNorm (eps 1e-6) before the blocks (pre-norm ``nn.MultiheadAttention`` without extra key/value,
exact-GELU MLP, LayerNorms eps 1e-6). The head is LayerNorm, cls token, bias-free Linear; the embedding is
L2-normalised.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..audio import ImageBindAudioConfig, ImageBindAudioEncoder
from ..audio.imagebind.model import Mlp
from ..checkpoints import load_strict, read_safetensors_metadata, read_state_dict, write_safetensors_atomic
from ..errors import CheckpointError, InvalidInputError

FORMAT_NAME = "avsync.imagebind_vision_audio"
FORMAT_VERSION = "1"
_VISION = "vision"
_AUDIO = "audio"
_BRANCH_PREFIXES = ("modality_preprocessors.", "modality_trunks.", "modality_heads.", "modality_postprocessors.")
# ImageBind's vision names (after the "modality_*.vision." prefix is split off) -> ours.
_VISION_NAMES = {
    "modality_preprocessors.vision.rgbt_stem.proj.1.weight": "stem.weight",
    "modality_preprocessors.vision.cls_token": "cls_token",
    "modality_preprocessors.vision.pos_embedding_helper.pos_embed": "pos_embed",
    "modality_trunks.vision.pre_transformer_layer.0.weight": "pre_norm.weight",
    "modality_trunks.vision.pre_transformer_layer.0.bias": "pre_norm.bias",
    "modality_heads.vision.0.weight": "head_norm.weight",
    "modality_heads.vision.0.bias": "head_norm.bias",
    "modality_heads.vision.2.weight": "head_proj.weight",
}
_VISION_BLOCKS = "modality_trunks.vision.blocks."
_VIT_H_WIDTH, _VIT_H_HEADS = 1280, 16  # imagebind_huge's vision trunk: 80-wide heads, unlike the other branches


def is_branch_key(key: str, modality: str) -> bool:
    return any(key.startswith(f"{prefix}{modality}.") for prefix in _BRANCH_PREFIXES)


@dataclass
class ImageBindVisionConfig:
    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    out_dim: int = 1024
    patch: int = 14
    kernel_frames: int = 2
    pad_frames: int = 2  # PadIm2Video repeats an image into this many frames
    image_size: int = 224
    mlp_hidden: int | None = None  # None: 4 x embed_dim
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.mlp_hidden is None:
            self.mlp_hidden = 4 * self.embed_dim
        if self.embed_dim % self.num_heads:
            raise InvalidInputError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}.")
        if self.image_size % self.patch or self.pad_frames % self.kernel_frames:
            raise InvalidInputError(
                f"A {self.kernel_frames}x{self.patch}x{self.patch} stem does not tile {self.pad_frames} frames of "
                f"{self.image_size}x{self.image_size}."
            )

    @property
    def num_tokens(self) -> int:
        return 1 + (self.pad_frames // self.kernel_frames) * (self.image_size // self.patch) ** 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageBindVisionConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise CheckpointError(f"Unknown ImageBind vision config entries {unknown}.")
        return cls(**data)


class _Block(nn.Module):
    def __init__(self, config: ImageBindVisionConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.norm_1 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.attn = nn.MultiheadAttention(dim, config.num_heads, bias=True, batch_first=True)
        self.norm_2 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.mlp = Mlp(dim, config.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm_2(x))


class ImageBindVisionEncoder(nn.Module):
    """CLIP-normalised images (b, 3, 224, 224) -> L2-normalised ImageBind embeddings (b, out_dim)."""

    def __init__(self, config: ImageBindVisionConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ImageBindVisionConfig()
        dim = config.embed_dim
        kernel = (config.kernel_frames, config.patch, config.patch)
        self.stem = nn.Conv3d(3, dim, kernel, stride=kernel, bias=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, dim))
        self.pre_norm = nn.LayerNorm(dim, eps=config.norm_eps)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.depth))
        self.head_norm = nn.LayerNorm(dim, eps=config.norm_eps)
        self.head_proj = nn.Linear(dim, config.out_dim, bias=False)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.stem.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.stem.weight.dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InvalidInputError(
                f"ImageBind's vision branch takes CLIP-normalised images shaped (batch, 3, {size}, {size}), "
                f"got {shape}."
            )
        x = images.to(device=self.device, dtype=self.dtype).unsqueeze(2)
        x = x.expand(-1, -1, self.config.pad_frames, -1, -1)
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.pre_norm(x)
        for block in self.blocks:
            x = block(x)
        return F.normalize(self.head_proj(self.head_norm(x[:, 0])), dim=-1)

    @classmethod
    def from_state_dict(
        cls,
        tensors: Mapping[str, torch.Tensor],
        source: str,
        num_heads: int | None = None,
        config: ImageBindVisionConfig | None = None,
    ) -> ImageBindVisionEncoder:
        """From ImageBind-named tensors (``modality_*.vision.*``); other modalities are ignored."""
        state: dict[str, torch.Tensor] = {}
        for key, value in tensors.items():
            if key in _VISION_NAMES:
                state[_VISION_NAMES[key]] = value
            elif key.startswith(_VISION_BLOCKS):
                state["blocks." + key[len(_VISION_BLOCKS) :]] = value
            elif is_branch_key(key, _VISION):
                state[key] = value  # reported as unexpected below
        if not state:
            raise CheckpointError(
                f"{source} has no ImageBind vision weights (keys modality_trunks.vision.*); is it imagebind_huge.pth?"
            )
        config = config or _infer_vision_config(state, source, num_heads)
        with torch.device("meta"):
            model = cls(config)
        state = {k: v if v.dtype == torch.float32 else v.float() for k, v in state.items()}
        load_strict(
            model,
            state,
            source,
            f"the weights of a {config.depth}-block, {config.embed_dim}-wide ImageBind vision branch",
        )
        return model.requires_grad_(False).eval()

    def imagebind_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under imagebind_huge.pth's names."""
        ours_to_imagebind = {v: k for k, v in _VISION_NAMES.items()}
        return {
            ours_to_imagebind.get(k, _VISION_BLOCKS + k[len("blocks.") :]): v.detach()
            for k, v in self.state_dict().items()
        }


def _infer_vision_config(
    state: Mapping[str, torch.Tensor], source: str, num_heads: int | None
) -> ImageBindVisionConfig:
    try:
        dim, channels, kernel_frames, patch, patch_w = state["stem.weight"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        mlp_hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
        out_dim = state["head_proj.weight"].shape[0]
        tokens = state["pos_embed"].shape[1]
    except (KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{source}: the ImageBind vision weights are incomplete (missing {exc}).") from None
    side = round((tokens - 1) ** 0.5)
    if channels != 3 or patch != patch_w or side * side != tokens - 1:
        raise CheckpointError(f"{source}: the vision stem {tuple(state['stem.weight'].shape)} is not ImageBind's.")
    if num_heads is None:
        num_heads = _VIT_H_HEADS if dim == _VIT_H_WIDTH else dim // 64 if dim % 64 == 0 else None
        if num_heads is None:
            raise CheckpointError(
                f"{source}: cannot tell the vision head count of a {dim}-wide trunk; pass vision_heads."
            )
    try:
        return ImageBindVisionConfig(
            embed_dim=dim,
            depth=depth,
            num_heads=num_heads,
            out_dim=out_dim,
            patch=patch,
            kernel_frames=kernel_frames,
            image_size=side * patch,
            mlp_hidden=mlp_hidden,
        )
    except InvalidInputError as exc:
        raise CheckpointError(f"{source}: {exc}") from None


class ImageBindImageAudio(nn.Module):
    """The two ImageBind branches AlignSync uses, with the official ``CLIPModel``'s embeddings."""

    def __init__(self, vision: ImageBindVisionEncoder, audio: ImageBindAudioEncoder) -> None:
        super().__init__()
        self.vision = vision
        self.audio = audio

    @property
    def device(self) -> torch.device:
        return self.vision.device

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(b, 3, 224, 224) CLIP-normalised -> (b, out_dim), unit length."""
        return self.vision(images)

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """(b, 1, 128, 204) log-mel -> (b, out_dim): ImageBind's scaled audio embedding divided by its logit scale.

        Done in the official order (normalise, multiply by the clipped scale, divide by it again) so the float
        rounding is the same; the result is the unit-length embedding.
        """
        scale = self.audio.log_logit_scale.exp().clamp(max=self.audio.config.max_logit_scale)
        return self.audio(mel).cls_normalized / scale

    def image_audio_similarity(self, images: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """Per-pair dot products (b,) of images (b, 3, 224, 224) and mels (b or 1, 1, 128, 204)."""
        return (self.encode_image(images) * self.encode_audio(mel)).sum(dim=1)

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def from_state_dict(
        cls,
        tensors: Mapping[str, torch.Tensor],
        source: str,
        *,
        vision_heads: int | None = None,
        audio_heads: int | None = None,
        vision_config: ImageBindVisionConfig | None = None,
        audio_config: ImageBindAudioConfig | None = None,
    ) -> ImageBindImageAudio:
        vision = ImageBindVisionEncoder.from_state_dict(tensors, source, vision_heads, vision_config)
        audio_tensors = {k: v for k, v in tensors.items() if is_branch_key(k, _AUDIO)}
        if not audio_tensors:
            raise CheckpointError(f"{source} has no ImageBind audio weights (keys modality_trunks.audio.*).")
        audio = ImageBindAudioEncoder.from_state_dict(audio_tensors, source, audio_heads, audio_config)
        return cls(vision, audio).requires_grad_(False).eval()

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, *, vision_heads: int | None = None, audio_heads: int | None = None
    ) -> ImageBindImageAudio:
        """imagebind_huge.pth (only the vision and audio tensors are read) or a safetensors file with those keys.

        Head counts are not stored in ImageBind's weights: files written by :meth:`save_safetensors` carry them;
        otherwise they default to imagebind_huge's (16 vision heads at width 1280, else width / 64).
        """
        p = Path(os.fspath(path))
        if not p.is_file():
            raise CheckpointError(
                f"ImageBind checkpoint not found: {p} (expected imagebind_huge.pth or a .safetensors)."
            )
        vision_config = audio_config = None
        if p.suffix == ".safetensors":
            metadata = read_safetensors_metadata(p)
            if metadata.get("format") == FORMAT_NAME:
                try:
                    vision_config = ImageBindVisionConfig.from_dict(json.loads(metadata["vision_config"]))
                    audio_config = ImageBindAudioConfig.from_dict(json.loads(metadata["audio_config"]))
                except (KeyError, ValueError, TypeError, InvalidInputError) as exc:
                    raise CheckpointError(f"{p}: its config metadata is missing or broken ({exc}).") from None
        tensors = read_state_dict(p, _is_needed)  # memory-mapped from a .pth: the other branches stay on disk
        return cls.from_state_dict(
            tensors,
            str(p),
            vision_heads=vision_heads,
            audio_heads=audio_heads,
            vision_config=vision_config,
            audio_config=audio_config,
        )

    def save_safetensors(self, path: str | os.PathLike) -> None:
        """Both branches under ImageBind's names, with their configs in the metadata; atomic."""
        tensors = {**self.vision.imagebind_state_dict(), **self.audio.state_dict_in_layout("imagebind")}
        tensors = {k: v.detach().cpu().clone() for k, v in tensors.items()}
        metadata = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "vision_config": json.dumps(self.vision.config.to_dict()),
            "audio_config": json.dumps(self.audio.config.to_dict()),
        }
        write_safetensors_atomic(Path(os.fspath(path)), tensors, metadata)


def _is_needed(key: str) -> bool:
    return is_branch_key(key, _VISION) or is_branch_key(key, _AUDIO)


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (also read by the docs test)."""
    parser = argparse.ArgumentParser(prog="python -m avsync_core.evaluation.imagebind", description=main.__doc__)
    parser.add_argument("source", help="imagebind_huge.pth (or a .safetensors with its vision and audio keys)")
    parser.add_argument("output", help="where to write the .safetensors file")
    parser.add_argument("--vision-heads", type=int, default=None, help="vision attention heads (default: 16 for ViT-H)")
    parser.add_argument("--audio-heads", type=int, default=None, help="audio attention heads (default: width / 64)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Write ImageBind's vision and audio branches (what AlignSync needs) from imagebind_huge.pth into one file."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        model = ImageBindImageAudio.from_file(args.source, vision_heads=args.vision_heads, audio_heads=args.audio_heads)
        model.save_safetensors(args.output)
    except CheckpointError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
