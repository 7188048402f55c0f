"""ImageBind's audio branch alone: the frozen encoder that turns a log-mel into AVSyncD's 229 audio tokens.

Meta's ``imagebind_huge.pth`` holds six modalities (4.5 GB); AVSyncD needs only the audio branch (86 M
parameters). Loading memory-maps the checkpoint and takes only the ``modality_*.audio.*`` tensors, which stay
backed by the file until the module is moved to another device or dtype, so the other modalities are never
read into memory. The same weights load from an official AVSyncD ``audio_encoder/`` folder or from the compact
safetensors file :meth:`ImageBindAudioEncoder.save_safetensors` writes.

Architecture (ImageBind's audio settings): Conv2d patch stem (16x16, stride 10, no bias) over the (128, 204)
mel -> 12 x 19 patches, frequency-major -> LayerNorm(eps 1e-5) -> prepend cls, add the learned position
embedding -> blocks of pre-norm multi-head attention with one extra learned key/value (add_bias_kv) and an
exact-GELU MLP -> trunk output. AVSyncD's tokens are a weight-free LayerNorm(eps 1e-6) of the trunk output; the
cls embedding is the head (LayerNorm, token 0, bias-free Linear), optionally L2-normalised and scaled by the
checkpoint's logit scale (20 for audio, at most 100). ImageBind's drop-path is a training-time regulariser the
encoder never needs: AVSyncD keeps it frozen.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pickle
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from ..checkpoints import write_safetensors_atomic
from ..errors import CheckpointError, InvalidInputError

log = logging.getLogger(__name__)

FORMAT_NAME = "avsync.imagebind_audio"
FORMAT_VERSION = "1"
_HEAD_DIM = 64  # every ImageBind trunk uses 64-dim heads; the head count is not stored in the weights
_TORCH_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}
_IMAGEBIND_PREFIXES = {
    "modality_preprocessors.audio.": "preprocessor.",
    "modality_trunks.audio.": "trunk.",
    "modality_heads.audio.": "head.",
    "modality_postprocessors.audio.": "postprocessor.",
}
# Official AVSyncD (ImageBindSegmaskAudioEncoder) names -> ours.
_AVSYNCD_NAMES = {
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
            raise InvalidInputError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}."
            )
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


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Attention(nn.Module):
    """``nn.MultiheadAttention(bias=True, add_bias_kv=True)`` semantics and parameter names, batch first.

    The learned ``bias_k``/``bias_v`` are appended, unprojected, as one extra key and value after the input
    projection, so 229 queries attend over 230 keys.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.bias_k = nn.Parameter(torch.empty(1, 1, dim))
        self.bias_v = nn.Parameter(torch.empty(1, 1, dim))
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, dim = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        k = torch.cat([k, self.bias_k.expand(batch, 1, dim)], dim=1)
        v = torch.cat([v, self.bias_v.expand(batch, 1, dim)], dim=1)
        q, k, v = (t.unflatten(-1, (self.num_heads, dim // self.num_heads)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class _Block(nn.Module):
    def __init__(self, config: ImageBindAudioConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.norm_1 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.attn = _Attention(dim, config.num_heads)
        self.norm_2 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.mlp = _Mlp(dim, config.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x))
        return x + self.mlp(self.norm_2(x))


class ImageBindAudioEncoder(nn.Module):
    """Log-mel (b, 1, 128, 204) -> AVSyncD audio tokens (b, 229, D) and ImageBind's cls embedding."""

    def __init__(self, config: ImageBindAudioConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ImageBindAudioConfig()
        dim = config.embed_dim
        self.stem = nn.Conv2d(1, dim, config.kernel, stride=config.stride, bias=False)
        self.stem_norm = nn.LayerNorm(dim, eps=config.stem_norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, dim))
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.depth))
        self.head_norm = nn.LayerNorm(dim, eps=config.norm_eps)
        self.head_proj = nn.Linear(dim, config.out_dim, bias=False)
        self.register_buffer("log_logit_scale", torch.tensor(math.log(20.0)))
        self.reset_parameters()
        self.eval()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random ImageBind-style weights, for tests and benchmarks; real use always loads a checkpoint.

        Uses only uniform-based initialisers, which stay cheap on the meta device the loaders build on.
        """
        for module in self.modules():
            if isinstance(module, _Attention):
                nn.init.xavier_uniform_(module.in_proj_weight)
                module.in_proj_bias.zero_()
                nn.init.trunc_normal_(module.bias_k, std=0.02)
                nn.init.trunc_normal_(module.bias_v, std=0.02)
            elif isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    module.bias.zero_()
        nn.init.trunc_normal_(self.cls_token, std=self.config.embed_dim**-0.5)
        nn.init.trunc_normal_(self.pos_embed, std=self.config.embed_dim**-0.5)

    @property
    def token_dim(self) -> int:
        return self.config.embed_dim

    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    @property
    def device(self) -> torch.device:
        return self.stem.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.stem.weight.dtype

    def _check_mel(self, mel: torch.Tensor) -> torch.Tensor:
        c = self.config
        expected = (1, c.mel_bins, c.target_frames)
        if not isinstance(mel, torch.Tensor) or mel.ndim != 4 or tuple(mel.shape[1:]) != expected:
            shape = tuple(mel.shape) if isinstance(mel, torch.Tensor) else type(mel).__name__
            raise InvalidInputError(
                f"The audio encoder takes log-mels shaped (batch, 1, {c.mel_bins}, {c.target_frames}), got {shape}. "
                "Use melspectrogram_batch() or null_melspectrogram()."
            )
        return mel.to(device=self.device, dtype=self.dtype)

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        """The trunk's input tokens: patches (frequency-major), cls first, position embedding added."""
        x = self.stem(self._check_mel(mel)).flatten(2).transpose(1, 2)
        x = self.stem_norm(x)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed

    def trunk(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.embed(mel)
        for block in self.blocks:
            x = block(x)
        return x

    def final_norm(self, trunk: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(trunk, (self.config.embed_dim,), eps=self.config.final_norm_eps)

    def forward(self, mel: torch.Tensor) -> AudioEncoderOutput:
        trunk = self.trunk(mel)
        cls = self.head_proj(self.head_norm(trunk[:, 0]))
        scale = self.log_logit_scale.exp().clamp(max=self.config.max_logit_scale)
        return AudioEncoderOutput(
            tokens=self.final_norm(trunk),
            trunk=trunk,
            cls=cls,
            cls_normalized=F.normalize(cls, dim=-1) * scale,
        )

    def encode_tokens(self, mel: torch.Tensor) -> torch.Tensor:
        return self.final_norm(self.trunk(mel))

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def from_state_dict(
        cls, tensors: Mapping[str, torch.Tensor], source: str = "state dict", num_heads: int | None = None,
        config: ImageBindAudioConfig | None = None,
    ) -> "ImageBindAudioEncoder":
        """Build from tensors in any supported layout (ImageBind, official AVSyncD, or ours).

        Sizes are read from the weights; the head count is not stored in them and defaults to embed_dim / 64
        (ImageBind's head width) unless ``num_heads`` or a full ``config`` is given.
        """
        state = _canonical_state(tensors, source)
        config = config or _infer_config(state, source, num_heads)
        with torch.device("meta"):
            model = cls(config)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{source}: the ImageBind audio weights are incomplete or do not fit a {config.depth}-block branch. "
                f"Missing: {_few(missing)}. Unexpected: {_few(unexpected)}."
            )
        wrong = [
            f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
            for k, v in expected.items()
            if tuple(state[k].shape) != tuple(v.shape)
        ]
        if wrong:
            raise CheckpointError(f"{source}: tensors with the wrong shape: {_few(wrong)}.")
        state = {k: v if v.dtype == torch.float32 else v.float() for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        return model.requires_grad_(False).eval()

    @classmethod
    def from_imagebind_checkpoint(
        cls, path: str | os.PathLike, num_heads: int | None = None
    ) -> "ImageBindAudioEncoder":
        """Meta's imagebind_huge.pth (or any file with ``modality_*.audio.*`` keys, .pth or .safetensors)."""
        p = _existing(path)
        tensors = _read_safetensors(p)[0] if p.suffix == ".safetensors" else _read_torch(p)
        if not any(k.startswith(tuple(_IMAGEBIND_PREFIXES)) for k in tensors):
            raise CheckpointError(
                f"{p} has no ImageBind audio weights (keys modality_trunks.audio.*); "
                f"its keys look like {_few(sorted(tensors), 3)}."
            )
        return cls.from_state_dict(tensors, str(p), num_heads)

    @classmethod
    def from_avsyncd_folder(cls, path: str | os.PathLike, num_heads: int | None = None) -> "ImageBindAudioEncoder":
        """An official AVSyncD checkpoint root (with ``audio_encoder/``) or the ``audio_encoder/`` folder itself."""
        root = _existing(path)
        if not root.is_dir():
            raise CheckpointError(f"{root} is not a folder; an AVSyncD checkpoint is a folder with audio_encoder/.")
        folder = root / "audio_encoder" if (root / "audio_encoder").is_dir() else root
        config_file = folder / "config.json"
        if config_file.is_file():
            try:
                class_name = json.loads(config_file.read_text()).get("_class_name")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
                raise CheckpointError(f"{config_file} is not valid JSON ({err}).") from None
            if class_name not in (None, "ImageBindSegmaskAudioEncoder"):
                raise CheckpointError(
                    f"{folder} holds a {class_name}, not the audio encoder; point at the AVSyncD checkpoint root "
                    "or its audio_encoder/ folder."
                )
        weights = _diffusers_weights(folder)
        if weights is None:
            raise CheckpointError(
                f"{folder} has no audio encoder weights: expected audio_encoder/diffusion_pytorch_model.safetensors "
                "(or .bin) as written by AVSyncD's save_pretrained."
            )
        tensors = _read_safetensors(weights)[0] if weights.suffix == ".safetensors" else _read_torch(weights)
        return cls.from_state_dict(tensors, str(weights), num_heads)

    @classmethod
    def from_safetensors(cls, path: str | os.PathLike) -> "ImageBindAudioEncoder":
        """The compact audio-only file written by :meth:`save_safetensors`."""
        p = _existing(path)
        tensors, metadata = _read_safetensors(p)
        if metadata.get("format") != FORMAT_NAME:
            raise CheckpointError(
                f"{p} is not an AVSync ImageBind-audio file (metadata format {metadata.get('format')!r}); "
                "use ImageBindAudioEncoder.from_file for other layouts."
            )
        if metadata.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{p} has format version {metadata.get('format_version')!r}; this version reads {FORMAT_VERSION}."
            )
        try:
            config = ImageBindAudioConfig.from_dict(json.loads(metadata["config"]))
        except (KeyError, json.JSONDecodeError, TypeError) as err:
            raise CheckpointError(f"{p}: its config metadata is missing or broken ({err}).") from None
        return cls.from_state_dict(tensors, str(p), config=config)

    @classmethod
    def from_file(cls, path: str | os.PathLike, num_heads: int | None = None) -> "ImageBindAudioEncoder":
        """Any supported source: an AVSyncD folder, imagebind_huge.pth, or a .safetensors file of any layout."""
        p = _existing(path)
        if p.is_dir():
            return cls.from_avsyncd_folder(p, num_heads)
        if p.suffix == ".safetensors":
            tensors, metadata = _read_safetensors(p)
            if metadata.get("format") == FORMAT_NAME:
                return cls.from_safetensors(p)
            return cls.from_state_dict(tensors, str(p), num_heads)
        if p.suffix in _TORCH_SUFFIXES:
            return cls.from_state_dict(_read_torch(p), str(p), num_heads)
        raise CheckpointError(
            f"{p}: unsupported file type {p.suffix or '(none)'}; expected an AVSyncD checkpoint folder, "
            "imagebind_huge.pth (.pth/.pt/.bin/.ckpt) or a .safetensors file."
        )

    def state_dict_in_layout(self, layout: str) -> dict[str, torch.Tensor]:
        """The weights under official names: "imagebind" (imagebind_huge.pth) or "avsyncd" (audio_encoder/)."""
        if layout not in ("imagebind", "avsyncd"):
            raise InvalidInputError(f'layout must be "imagebind" or "avsyncd", got {layout!r}.')
        ours_to_avsyncd = {v: k for k, v in _AVSYNCD_NAMES.items()}
        state = {
            ours_to_avsyncd.get(k, f"trunk.{k}" if k.startswith("blocks.") else k): v.detach()
            for k, v in self.state_dict().items()
        }
        if layout == "avsyncd":
            dim = self.config.embed_dim
            state["final_layer_norm.weight"] = torch.ones(dim, dtype=self.dtype, device=self.device)
            state["final_layer_norm.bias"] = torch.zeros(dim, dtype=self.dtype, device=self.device)
            return state
        avsyncd_to_imagebind = {v: k for k, v in _IMAGEBIND_PREFIXES.items()}
        out = {}
        for k, v in state.items():
            prefix = k.split(".", 1)[0] + "."
            out[avsyncd_to_imagebind[prefix] + k[len(prefix) :]] = v
        return out

    def save_safetensors(self, path: str | os.PathLike) -> None:
        """Write the compact audio-only file (config in its metadata); atomic, so a crash never leaves half a file."""
        # Cloned: weights memory-mapped from one .pth share a storage, which safetensors refuses to write.
        tensors = {k: v.detach().to("cpu").clone() for k, v in self.state_dict().items()}
        metadata = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "config": json.dumps(self.config.to_dict()),
        }
        write_safetensors_atomic(Path(os.fspath(path)), tensors, metadata)


# ---------------------------------------------------------------------------------------------- helpers


def _few(items: Sequence[str], n: int = 5) -> str:
    if not items:
        return "none"
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _existing(path: str | os.PathLike) -> Path:
    p = Path(os.fspath(path))
    if not p.exists():
        raise CheckpointError(f"Checkpoint not found: {p}")
    return p


def _read_torch(path: Path) -> Mapping[str, torch.Tensor]:
    """Memory-mapped, pickled-code-free load: only the tensors that are used are ever read from disk."""
    try:
        try:
            data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            log.warning("%s uses torch's legacy format and cannot be memory-mapped; loading all of it.", path)
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = re.search(r"GLOBAL ([\w.]+)", str(err))
        if blocked:
            raise CheckpointError(
                f"{path} contains Python objects besides tensors ({blocked.group(1)}) and is not loaded, because "
                "unpickling it could run code."
            ) from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (damaged, or not a checkpoint).") from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({err}).") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(data, Mapping) and wrapper in data and isinstance(data[wrapper], Mapping):
            data = data[wrapper]
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(data).__name__}).")
    return data


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            keys = list(f.keys())
            wanted = [k for k in keys if _is_audio_key(k)] if any(k.startswith("modality_") for k in keys) else keys
            return {k: f.get_tensor(k) for k in wanted}, metadata
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}).") from None


def _is_audio_key(key: str) -> bool:
    return key.startswith(tuple(_IMAGEBIND_PREFIXES))


def _diffusers_weights(folder: Path) -> Path | None:
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    variants = sorted(folder.glob("diffusion_pytorch_model.*.safetensors")) + sorted(
        folder.glob("diffusion_pytorch_model.*.bin")
    )
    return variants[0] if variants else None


def _canonical_state(tensors: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Our parameter names from ImageBind's, AVSyncD's or our own; other modalities are never touched."""
    keys = list(tensors.keys())
    if any(k.startswith("audio_encoder.") for k in keys):
        tensors = {k[len("audio_encoder.") :]: tensors[k] for k in keys if k.startswith("audio_encoder.")}
        keys = list(tensors.keys())
    if any(_is_audio_key(k) for k in keys):
        renamed = {}
        for k in keys:
            for prefix, official in _IMAGEBIND_PREFIXES.items():
                if k.startswith(prefix):
                    renamed[official + k[len(prefix) :]] = tensors[k]
        tensors, keys = renamed, list(renamed)
    if any(k.startswith("trunk.blocks.") for k in keys):
        out: dict[str, torch.Tensor] = {}
        for k in keys:
            block = _AVSYNCD_BLOCK.match(k)
            if block:
                out[block.group(1)] = tensors[k]
            elif k in _AVSYNCD_NAMES:
                out[_AVSYNCD_NAMES[k]] = tensors[k]
            elif k in _FINAL_NORM_KEYS:
                _check_identity_norm(k, tensors[k], source)
            else:
                out[k] = tensors[k]  # reported as unexpected by the caller
        return out
    if any(k.startswith("blocks.") for k in keys):
        return {k: tensors[k] for k in keys}
    raise CheckpointError(
        f"{source} holds no ImageBind audio weights (expected keys like modality_trunks.audio.blocks.0..., "
        f"trunk.blocks.0... or blocks.0...); its keys look like {_few(sorted(keys), 3)}."
    )


def _check_identity_norm(key: str, value: torch.Tensor, source: str) -> None:
    """AVSyncD's final LayerNorm is created fresh and never trained; anything else would be silently dropped."""
    target = 1.0 if key.endswith("weight") else 0.0
    if not bool((value.float() == target).all()):
        raise CheckpointError(
            f"{source}: {key} is not the untrained identity ({target:g} everywhere); this encoder applies a "
            "weight-free final LayerNorm and cannot reproduce a trained one."
        )


def _infer_config(state: Mapping[str, torch.Tensor], source: str, num_heads: int | None) -> ImageBindAudioConfig:
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
        if dim % _HEAD_DIM:
            raise CheckpointError(
                f"{source}: embed dim {dim} is not a multiple of ImageBind's 64-wide heads; pass num_heads."
            )
        num_heads = dim // _HEAD_DIM
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


def main(argv: Sequence[str] | None = None) -> None:
    """Write the compact audio-only file once from imagebind_huge.pth or an AVSyncD checkpoint."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("source", help="imagebind_huge.pth, an AVSyncD checkpoint folder, or a .safetensors file")
    parser.add_argument("output", help="where to write the compact .safetensors file")
    parser.add_argument("--num-heads", type=int, default=None, help="attention heads (default: embed dim / 64)")
    args = parser.parse_args(argv)
    ImageBindAudioEncoder.from_file(args.source, num_heads=args.num_heads).save_safetensors(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
