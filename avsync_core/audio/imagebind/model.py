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

Layers are built from ``operations`` (see avsync_core/model/operations.py), so a host can stream them; the raw
parameters (packed attention projection, extra key/value, cls token, position embedding) are cast to the input
where they are used, as a streaming host never moves them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ...checkpoints import (
    WEIGHT_SUFFIXES,
    find_weights,
    load_strict,
    read_json,
    read_safetensors_metadata,
    read_state_dict,
    write_safetensors_atomic,
)
from ...errors import CheckpointError, InvalidInputError, existing_path, preview
from ...model.operations import Operations, cast_to_input
from .config import AudioEncoderOutput, ImageBindAudioConfig
from .layouts import (
    AVSYNCD_NAMES,
    FORMAT_NAME,
    FORMAT_VERSION,
    IMAGEBIND_PREFIXES,
    audio_keys_only,
    canonical_state,
    infer_config,
    is_audio_key,
)


class Mlp(nn.Module):
    """ImageBind's transformer MLP (fc1, exact GELU, fc2), shared by its audio and vision trunks."""

    def __init__(self, dim: int, hidden: int, operations: Operations = nn) -> None:
        super().__init__()
        self.fc1 = operations.Linear(dim, hidden)
        self.fc2 = operations.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Attention(nn.Module):
    """``nn.MultiheadAttention(bias=True, add_bias_kv=True)`` semantics and parameter names, batch first.

    The learned ``bias_k``/``bias_v`` are appended, unprojected, as one extra key and value after the input
    projection, so 229 queries attend over 230 keys.
    """

    def __init__(self, dim: int, num_heads: int, operations: Operations = nn) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.bias_k = nn.Parameter(torch.empty(1, 1, dim))
        self.bias_v = nn.Parameter(torch.empty(1, 1, dim))
        self.out_proj = operations.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, dim = x.shape
        weight, bias = cast_to_input(self.in_proj_weight, x), cast_to_input(self.in_proj_bias, x)
        q, k, v = F.linear(x, weight, bias).chunk(3, dim=-1)
        k = torch.cat([k, cast_to_input(self.bias_k, x).expand(batch, 1, dim)], dim=1)
        v = torch.cat([v, cast_to_input(self.bias_v, x).expand(batch, 1, dim)], dim=1)
        q, k, v = (t.unflatten(-1, (self.num_heads, dim // self.num_heads)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class _Block(nn.Module):
    def __init__(self, config: ImageBindAudioConfig, operations: Operations) -> None:
        super().__init__()
        dim = config.embed_dim
        self.norm_1 = operations.LayerNorm(dim, eps=config.norm_eps)
        self.attn = _Attention(dim, config.num_heads, operations)
        self.norm_2 = operations.LayerNorm(dim, eps=config.norm_eps)
        self.mlp = Mlp(dim, config.mlp_hidden, operations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x))
        return x + self.mlp(self.norm_2(x))


class ImageBindAudioEncoder(nn.Module):
    """Log-mel (b, 1, 128, 204) -> AVSyncD audio tokens (b, 229, D) and ImageBind's cls embedding.

    ``execution_device`` is where a host that streams the weights runs the encoder (ComfyUI's load device); by
    default the encoder runs where its weights are.
    """

    def __init__(self, config: ImageBindAudioConfig | None = None, operations: Operations = nn) -> None:
        super().__init__()
        self.config = config = config or ImageBindAudioConfig()
        self.execution_device: torch.device | None = None
        dim = config.embed_dim
        self.stem = operations.Conv2d(1, dim, config.kernel, stride=config.stride, bias=False)
        self.stem_norm = operations.LayerNorm(dim, eps=config.stem_norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, dim))
        self.blocks = nn.ModuleList(_Block(config, operations) for _ in range(config.depth))
        self.head_norm = operations.LayerNorm(dim, eps=config.norm_eps)
        self.head_proj = operations.Linear(dim, config.out_dim, bias=False)
        self.register_buffer("log_logit_scale", torch.tensor(math.log(20.0)))
        self.reset_parameters()
        self.eval()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random ImageBind-style weights, for tests and benchmarks; real use always loads a checkpoint.

        Uses only uniform-based initialisers, which stay cheap on the meta device the loaders build on. Every
        weight is set here, since a host's layer classes may skip their own initialisation (ComfyUI's do).
        """
        for module in self.modules():
            if isinstance(module, _Attention):
                nn.init.xavier_uniform_(module.in_proj_weight)
                module.in_proj_bias.zero_()
                nn.init.trunc_normal_(module.bias_k, std=0.02)
                nn.init.trunc_normal_(module.bias_v, std=0.02)
            elif isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
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
        return self.execution_device or self.stem.weight.device

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
        cls = cast_to_input(self.cls_token, x).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + cast_to_input(self.pos_embed, x)

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
        scale = cast_to_input(self.log_logit_scale, cls).exp().clamp(max=self.config.max_logit_scale)
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
        cls,
        tensors: Mapping[str, torch.Tensor],
        source: str = "state dict",
        num_heads: int | None = None,
        config: ImageBindAudioConfig | None = None,
        operations: Operations = nn,
    ) -> "ImageBindAudioEncoder":
        """Build from tensors in any supported layout (ImageBind, official AVSyncD, or ours).

        Sizes are read from the weights; the head count is not stored in them and defaults to embed_dim / 64
        (ImageBind's head width) unless ``num_heads`` or a full ``config`` is given. ``operations`` are the layer
        classes to build it from (every loader below takes them too).
        """
        state = canonical_state(tensors, source)
        config = config or infer_config(state, source, num_heads)
        state = {k: v if v.dtype == torch.float32 else v.float() for k, v in state.items()}
        with torch.device("meta"):
            model = cls(config, operations)
        load_strict(model, state, source, f"the weights of a {config.depth}-block ImageBind audio branch")
        return model.requires_grad_(False).eval()

    @classmethod
    def from_imagebind_checkpoint(
        cls, path: str | os.PathLike, num_heads: int | None = None, operations: Operations = nn
    ) -> "ImageBindAudioEncoder":
        """Meta's imagebind_huge.pth (or any file with ``modality_*.audio.*`` keys, .pth or .safetensors)."""
        p = existing_path(path, "ImageBind checkpoint")
        tensors = read_state_dict(p, audio_keys_only)
        if not any(is_audio_key(k) for k in tensors):
            raise CheckpointError(
                f"{p} has no ImageBind audio weights (keys modality_trunks.audio.*); "
                f"its keys look like {preview(sorted(tensors), 3)}."
            )
        return cls.from_state_dict(tensors, str(p), num_heads, operations=operations)

    @classmethod
    def from_avsyncd_folder(
        cls, path: str | os.PathLike, num_heads: int | None = None, operations: Operations = nn
    ) -> "ImageBindAudioEncoder":
        """An official AVSyncD checkpoint root (with ``audio_encoder/``) or the ``audio_encoder/`` folder itself."""
        root = existing_path(path, "AVSyncD checkpoint")
        if not root.is_dir():
            raise CheckpointError(f"{root} is not a folder; an AVSyncD checkpoint is a folder with audio_encoder/.")
        folder = root / "audio_encoder" if (root / "audio_encoder").is_dir() else root
        config_file = folder / "config.json"
        if config_file.is_file():
            class_name = read_json(config_file, "audio encoder config").get("_class_name")
            if class_name not in (None, "ImageBindSegmaskAudioEncoder"):
                raise CheckpointError(
                    f"{folder} holds a {class_name}, not the audio encoder; point at the AVSyncD checkpoint root "
                    "or its audio_encoder/ folder."
                )
        try:
            weights = find_weights(folder)
        except CheckpointError:
            raise CheckpointError(
                f"{folder} has no audio encoder weights: expected audio_encoder/diffusion_pytorch_model.safetensors "
                "(or .bin) as written by AVSyncD's save_pretrained."
            ) from None
        return cls.from_state_dict(read_state_dict(weights), str(weights), num_heads, operations=operations)

    @classmethod
    def from_safetensors(cls, path: str | os.PathLike, operations: Operations = nn) -> "ImageBindAudioEncoder":
        """The compact audio-only file written by :meth:`save_safetensors`."""
        p = existing_path(path, "ImageBind audio file")
        metadata = read_safetensors_metadata(p)
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
        return cls.from_state_dict(read_state_dict(p), str(p), config=config, operations=operations)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, num_heads: int | None = None, operations: Operations = nn
    ) -> "ImageBindAudioEncoder":
        """Any supported source: an AVSyncD folder, imagebind_huge.pth, or a .safetensors file of any layout."""
        p = existing_path(path, "ImageBind checkpoint")
        if p.is_dir():
            return cls.from_avsyncd_folder(p, num_heads, operations)
        if p.suffix == ".safetensors" and read_safetensors_metadata(p).get("format") == FORMAT_NAME:
            return cls.from_safetensors(p, operations)
        if p.suffix not in WEIGHT_SUFFIXES:
            raise CheckpointError(
                f"{p}: unsupported file type {p.suffix or '(none)'}; expected an AVSyncD checkpoint folder, "
                "imagebind_huge.pth (.pth/.pt/.bin/.ckpt) or a .safetensors file."
            )
        return cls.from_state_dict(read_state_dict(p, audio_keys_only), str(p), num_heads, operations=operations)

    def state_dict_in_layout(self, layout: str) -> dict[str, torch.Tensor]:
        """The weights under official names: "imagebind" (imagebind_huge.pth) or "avsyncd" (audio_encoder/)."""
        if layout not in ("imagebind", "avsyncd"):
            raise InvalidInputError(f'layout must be "imagebind" or "avsyncd", got {layout!r}.')
        ours_to_avsyncd = {v: k for k, v in AVSYNCD_NAMES.items()}
        state = {
            ours_to_avsyncd.get(k, f"trunk.{k}" if k.startswith("blocks.") else k): v.detach()
            for k, v in self.state_dict().items()
        }
        if layout == "avsyncd":
            dim = self.config.embed_dim
            state["final_layer_norm.weight"] = torch.ones(dim, dtype=self.dtype, device=self.stem.weight.device)
            state["final_layer_norm.bias"] = torch.zeros(dim, dtype=self.dtype, device=self.stem.weight.device)
            return state
        avsyncd_to_imagebind = {v: k for k, v in IMAGEBIND_PREFIXES.items()}
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
