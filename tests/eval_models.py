"""Models for the evaluation tests: the classifier with the golden README's procedural weights (no weight file
needed) and the golden tiny ImageBind (vision + audio, built by ImageBind's own constructor)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from avsync_core.checkpoints import write_safetensors_atomic
from avsync_core.evaluation import AVSyncClassifier, ImageBindImageAudio
from avsync_core.evaluation.fid import FIDInception
from avsync_core.evaluation.imagebind import FORMAT_NAME, FORMAT_VERSION, is_branch_key
from avsync_core.evaluation.imagebind_text import TEXT_HEADS_METADATA
from conftest import golden_dir


def _hash_uniform(x: torch.Tensor) -> torch.Tensor:
    h = x & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    h = (h >> 16) ^ h
    return h.double() * 2 / 2**32 - 1


def procedural_weights(state: dict[str, torch.Tensor], tag: int) -> dict[str, torch.Tensor]:
    """The golden README's weights: every tensor k of the sorted state dict from a hash of its element index."""
    out = {}
    for k, key in enumerate(sorted(state)):
        value = state[key]
        if not value.is_floating_point():
            out[key] = torch.zeros_like(value, device="cpu")  # num_batches_tracked stays as built (0)
            continue
        s = _hash_uniform(torch.arange(value.numel(), dtype=torch.int64) + 4194319 * k + 1000003 * tag)
        if key.endswith("running_var"):
            s = 1 + 0.5 * s.abs()
        elif key.endswith("running_mean"):
            s = 0.05 * s
        elif value.ndim == 1 and key.endswith("weight"):
            s = 1 + 0.1 * s
        elif value.ndim == 1 and key.endswith("bias"):
            s = 0.05 * s
        else:
            assert value.ndim >= 2, key
            s = s * math.sqrt(6 / (value.numel() / value.shape[0]))
        out[key] = s.reshape(value.shape).float()
    return out


def procedural_classifier(tag: int = 0) -> AVSyncClassifier:
    model = AVSyncClassifier.build()
    model.load_state_dict(procedural_weights(model.state_dict(), tag), strict=True)
    return model.requires_grad_(False).eval()


def write_fid_inception(path: Path) -> Path:
    """pytorch-fid's FID Inception state dict with the golden README's weights (tag 2), saved as a .pth."""
    with torch.device("meta"):
        shapes = FIDInception().net.state_dict()
    torch.save(procedural_weights(shapes, tag=2), path)
    return path


def write_tiny_imagebind_with_text(path: Path) -> Path:
    """The golden tiny ImageBind's vision, audio and text branches in one file, with their head counts."""
    source = golden_dir() / "paper_eval" / "imagebind_tiny.safetensors"
    image_audio = ImageBindImageAudio.from_file(source, vision_heads=2, audio_heads=4)
    text = {k: v for k, v in load_file(source).items() if is_branch_key(k, "text")}
    tensors = {**image_audio.vision.imagebind_state_dict(), **image_audio.audio.state_dict_in_layout("imagebind")}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "vision_config": json.dumps(image_audio.vision.config.to_dict()),
        "audio_config": json.dumps(image_audio.audio.config.to_dict()),
        TEXT_HEADS_METADATA: "2",
    }
    write_safetensors_atomic(path, {**tensors, **text}, metadata)
    return path


def tiny_imagebind() -> ImageBindImageAudio:
    path = golden_dir() / "sync_metrics" / "imagebind_tiny_vision_audio.safetensors"
    return ImageBindImageAudio.from_file(path, vision_heads=2, audio_heads=4)


CLASSIFIER_CONFIGS = {
    "audio_encoder": {"_class_name": "AudioConv2DNet", "_diffusers_version": "0.27.2", "pretrained": False},
    "video_encoder": {"_class_name": "VideoR2Plus1DNet", "_diffusers_version": "0.27.2", "pretrained": False},
    "head": {"_class_name": "FCHead", "_diffusers_version": "0.27.2", "dim": 512, "out_dim": 1, "dropout": 0.0},
}


def write_official_folder(model: AVSyncClassifier, root: Path) -> Path:
    """The release's layout: modules/{audio_encoder,video_encoder,head}/ with config.json + a .bin pickle each."""
    modules = root / "modules"
    for name, config in CLASSIFIER_CONFIGS.items():
        folder = modules / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config))
        torch.save(getattr(model, name).state_dict(), folder / "diffusion_pytorch_model.bin")
    return modules
