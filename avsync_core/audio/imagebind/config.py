"""The sizes of ImageBind's audio branch (imagebind_huge's by default) and what the encoder returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch

from ...errors import CheckpointError, InvalidInputError


@dataclass
class ImageBindAudioConfig:
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    out_dim: int = 1024
    kernel: int = 16
    stride: int = 10
    mel_bins: int = 128
    target_frames: int = 204
    mlp_hidden: int | None = None  # None: 4 x embed_dim
    stem_norm_eps: float = 1e-5
    norm_eps: float = 1e-6
    final_norm_eps: float = 1e-6
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        if self.mlp_hidden is None:
            self.mlp_hidden = 4 * self.embed_dim
        if self.embed_dim % self.num_heads:
            raise InvalidInputError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}.")
        if self.freq_patches < 1 or self.time_patches < 1:
            raise InvalidInputError(
                f"A {self.kernel}x{self.kernel} stem with stride {self.stride} does not fit a "
                f"{self.mel_bins}x{self.target_frames} mel."
            )

    @property
    def freq_patches(self) -> int:
        return (self.mel_bins - self.kernel) // self.stride + 1

    @property
    def time_patches(self) -> int:
        return (self.target_frames - self.kernel) // self.stride + 1

    @property
    def num_tokens(self) -> int:
        return 1 + self.freq_patches * self.time_patches

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ImageBindAudioConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"Unknown ImageBind audio config entries {unknown}; known: {sorted(known)}.")
        return cls(**data)


@dataclass
class AudioEncoderOutput:
    tokens: torch.Tensor  # (b, 229, D): weight-free LayerNorm of the trunk output, AVSyncD's audio context
    trunk: torch.Tensor  # (b, 229, D): raw trunk output
    cls: torch.Tensor  # (b, out_dim): head output
    cls_normalized: torch.Tensor  # (b, out_dim): L2-normalised x logit scale (ImageBind's joint embedding)
