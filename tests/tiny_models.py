"""Test fixtures: tiny model files in the formats the commands read, so the commands run unchanged on them.

* ``sd15/``: a diffusers SD1.5 folder with tiny configs: the SD1.5 part of the golden unet_tiny_c, a random tiny
  VAE and CLIP text encoder (``train.models.random_parts``) and a byte-level CLIP tokenizer;
* ``motion.safetensors``: unet_tiny_c's motion module in our format;
* ``imagebind.safetensors``: the golden tiny ImageBind as the compact audio-only file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avsync_core.audio import ImageBindAudioEncoder
from avsync_core.model.motion_files import load_motion_module, save_motion_module
from avsync_core.sd15.unet import load_sd15_unet
from avsync_core.train.models import byte_level_tokenizer, random_parts
from conftest import golden_dir, write_official_unet_folder


def write_tiny_models(root: Path) -> dict[str, Path]:
    official = write_official_unet_folder("unet_tiny_c", root / "official_c")
    sd15 = root / "sd15"
    load_sd15_unet(official).save_pretrained(sd15 / "unet")
    _, vae, text_encoder, _ = random_parts("tiny", seed=4)
    vae.save_pretrained(sd15 / "vae")
    text_encoder.save_pretrained(sd15 / "text_encoder")
    byte_level_tokenizer().save_pretrained(sd15 / "tokenizer")
    motion, info = load_motion_module(official)
    save_motion_module(root / "motion.safetensors", motion, frames=info.frames, fps=info.fps)
    tiny_imagebind = golden_dir() / "imagebind_audio_tiny" / "imagebind_audio_tiny.safetensors"
    ImageBindAudioEncoder.from_file(tiny_imagebind, num_heads=4).save_safetensors(root / "imagebind.safetensors")
    return {
        "sd15": sd15,
        "official": official,
        "motion": root / "motion.safetensors",
        "imagebind": root / "imagebind.safetensors",
    }


def write_image(path: Path, width: int = 80, height: int = 64, seed: int = 0) -> Path:
    """A smooth colour image (gradients plus a disc), wider than tall so the centre crop matters."""
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = x / width
    g = y / height
    b = ((x - width / 2) ** 2 + (y - height / 2) ** 2 < (height / 4 + seed) ** 2).astype(np.float32)
    pixels = (np.stack([r, g, 0.2 + 0.6 * b], -1) * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_wav(path: Path, seconds: float, rate: int = 22050, channels: int = 2, seed: int = 0) -> Path:
    """16-bit PCM: noise bursts three times a second (something for the audio encoder to hear)."""
    import wave

    g = torch.Generator().manual_seed(seed)
    n = round(seconds * rate)
    envelope = (torch.arange(n) % (rate // 3) < rate // 20).float()
    data = (0.5 * torch.randn(channels, n, generator=g) * envelope).clamp(-1, 1)
    pcm = (data.T.numpy() * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path
