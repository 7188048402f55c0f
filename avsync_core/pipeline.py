"""The standalone pipeline: image + sound -> frames, with the models loaded from the user's own files.

Shared by ``python -m avsync_core.animate`` (one animation) and ``python -m avsync_core.generate`` (a dataset).
The SD1.5 checkpoint gives the UNet, the VAE and the CLIP text encoder (nothing is downloaded); the AVSyncD path
gives the motion module (and, for an official folder, the ImageBind audio encoder in its ``audio_encoder/``).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from .audio import AudioCondition, ImageBindAudioEncoder, Waveform, encode_audio_condition
from .audio.mel import CLIP_SECONDS
from .audio.segments import MAX_FRAMES
from .errors import AVSyncError, CheckpointError, InvalidInputError
from .model.motion_files import load_motion_module
from .model.motion_module import MotionConfig
from .model.unet import AVSyncUNet
from .sampling import make_scheduler, sample_context_video_latents, sample_long_video_latents
from .sampling.context import DEFAULT_OVERLAP, check_fuse, check_long_sound, check_overlap
from .sd15 import move_module
from .sd15.components import (
    encode_prompts,
    load_text_encoder,
    load_tokenizer,
    load_vae,
    vae_factor,
    vae_latent_scale,
)
from .sd15.unet import load_sd15_unet
from .video import center_crop_resize

Tensor = torch.Tensor
log = logging.getLogger(__name__)


@dataclass
class AnimationModels:
    unet: AVSyncUNet
    vae: AutoencoderKL
    audio_encoder: ImageBindAudioEncoder
    text_encoder: torch.nn.Module
    tokenizer: object

    def encode_prompts(self, prompts: list[str]) -> Tensor:
        return encode_prompts(self.text_encoder, self.tokenizer, prompts)


@dataclass(frozen=True)
class SamplingOptions:
    """How each animation is sampled (the paper: PNDM, 50 steps, audio guidance 4, no text guidance)."""

    frames: int = 12
    fps: float = 6.0
    steps: int = 50
    scheduler: str = "pndm"
    audio_guidance: float = 4.0
    text_guidance: float = 1.0
    long_sound: str = "chain"  # sound past one clip: "chain" clips, or "context" windows (sampling/context.py)
    overlap: int = DEFAULT_OVERLAP  # context windows: new frames shared by neighbouring windows
    fuse: str = "pyramid"  # context windows: how overlapping predictions are weighted

    def check(self) -> None:
        """Refuse long-sound settings that cannot run, before any model is loaded."""
        check_long_sound(self.long_sound)
        if self.long_sound == "context":
            check_overlap(self.overlap, self.frames)
            check_fuse(self.fuse)


def check_frame_layout(frames: int, fps: float) -> None:
    """AVSyncD hears 2 s of audio per clip, and the segment masks split exactly that window over the frames."""
    if isinstance(frames, bool) or not isinstance(frames, int) or not 2 <= frames <= MAX_FRAMES:
        raise InvalidInputError(f"--frames must be a whole number from 2 to {MAX_FRAMES}, got {frames!r}.")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise InvalidInputError(f"--fps must be a positive number, got {fps!r}.")
    if abs(frames / fps - CLIP_SECONDS) > 1e-6:
        raise InvalidInputError(
            f"--frames {frames} at --fps {fps:g} cover {frames / fps:.3g} s, but each clip hears a {CLIP_SECONDS:g} s "
            f"audio window: use frames = {CLIP_SECONDS:g} x fps (12 at 6 fps, the paper's; 16 at 8; 24 at 12)."
        )


def load_models(
    sd15: str | os.PathLike,
    avsyncd: str | os.PathLike,
    imagebind: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> AnimationModels:
    """Every model from the user's files. The SD1.5 UNet is read first, so an SDXL or SD2 file is refused before
    anything else is loaded. The text encoder stays float32 (it runs once per prompt)."""
    if importlib.util.find_spec("transformers") is None:
        raise AVSyncError(
            "Encoding the prompt with SD1.5's CLIP needs the transformers package: pip install transformers "
            "(or the pack's standalone extra: pip install -e '.[standalone]')."
        )
    base = load_sd15_unet(sd15, dtype, device)
    heads = MotionConfig.from_unet_config(base.config).attention_heads
    motion, _ = load_motion_module(avsyncd, attention_heads=heads, device=device, dtype=dtype)
    unet = AVSyncUNet(base, motion).eval()
    audio = move_module(_audio_encoder(avsyncd, imagebind), device, dtype).eval()
    if audio.token_dim != motion.config.audio_dim:
        raise CheckpointError(
            f"The motion module {avsyncd} takes audio tokens of width {motion.config.audio_dim}, but the ImageBind "
            f"encoder gives {audio.token_dim}-wide tokens. Use the audio encoder the motion module was trained with."
        )
    vae = load_vae(sd15, dtype, device)
    text_encoder = load_text_encoder(sd15, torch.float32, device)
    return AnimationModels(unet, vae, audio, text_encoder, load_tokenizer(None, sd15))


def _audio_encoder(avsyncd: str | os.PathLike, imagebind: str | os.PathLike | None) -> ImageBindAudioEncoder:
    if imagebind is not None:
        return ImageBindAudioEncoder.from_file(imagebind)
    if Path(avsyncd).is_dir() and (Path(avsyncd) / "audio_encoder").is_dir():
        return ImageBindAudioEncoder.from_file(avsyncd)
    raise CheckpointError(
        f"{avsyncd} holds no audio encoder (only official AVSyncD folders have audio_encoder/). Give the ImageBind "
        "file with --imagebind (imagebind_huge.pth, or the compact file python -m avsync_core.motion_io convert "
        "writes)."
    )


def load_image(path: str | os.PathLike, size: int) -> Tensor:
    """(1, 3, size, size) in [0, 1]: the centre square of the image at ``size`` pixels (the official crop)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path).expanduser()
    if not p.is_file():
        raise InvalidInputError(f"Image file not found: {p}")
    try:
        with Image.open(p) as image:
            pixels = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInputError(f"Cannot read {p} as an image ({exc}).") from None
    frame = pixels.view(height, width, 3).permute(2, 0, 1)[None]
    return center_crop_resize(frame, size)


@torch.no_grad()
def encode_image(vae: AutoencoderKL, image: Tensor) -> Tensor:
    """(b, c, h, w) float32 first-frame latents: the VAE posterior's mean, scaled (as validation does)."""
    pixels = image.to(vae.device, vae.dtype) * 2.0 - 1.0
    return vae.encode(pixels).latent_dist.mean.float() * vae_latent_scale(vae)


@torch.no_grad()
def decode_latents(vae: AutoencoderKL, latents: Tensor) -> Tensor:
    """(1, c, F, h, w) latents -> (F, 3, H, W) float frames in [0, 1], one frame at a time to bound memory."""
    scale = vae_latent_scale(vae)
    frames = []
    for f in range(latents.shape[2]):
        image = vae.decode((latents[:, :, f] / scale).to(vae.device, vae.dtype)).sample
        frames.append(((image.float() + 1.0) / 2.0).clamp(0.0, 1.0)[0].cpu())
    return torch.stack(frames)


def check_size(models: AnimationModels, size: int) -> None:
    factor = vae_factor(models.vae)
    if isinstance(size, bool) or not isinstance(size, int) or size < factor or size % factor:
        raise InvalidInputError(
            f"--size must be a positive multiple of {factor} (the VAE's downscale), got {size!r}; the paper "
            "animates at 256."
        )


def animate(
    models: AnimationModels,
    image: Tensor,
    sound: Waveform,
    prompt: str,
    negative: str,
    options: SamplingOptions,
    seed: int,
    progress: bool = True,
) -> tuple[Tensor, AudioCondition]:
    """(1 + W * (F - 1), 3, H, W) frames in [0, 1] for every 2 s window of ``sound``, and the encoded audio;
    chained clips or context windows as ``options.long_sound`` says."""
    options.check()
    context = options.long_sound == "context"
    audio = encode_audio_condition(
        models.audio_encoder, sound, options.frames, options.fps, every_start=context and options.overlap > 0
    )
    if context and audio.num_windows == 1:
        log.warning("The sound fills one clip, so context windows have nothing to overlap: sampling one clip.")
    text = models.encode_prompts([prompt])
    null_text = models.encode_prompts([negative]) if options.text_guidance > 1.0 else None
    sample = sample_context_video_latents if context else sample_long_video_latents
    extra = {"overlap": options.overlap, "fuse": options.fuse} if context else {}
    latents = sample(
        models.unet,
        make_scheduler(options.scheduler),
        encode_image(models.vae, image),
        text,
        audio,
        seed=seed,
        steps=options.steps,
        progress=progress,
        audio_scale=options.audio_guidance,
        text_scale=options.text_guidance,
        null_text=null_text,
        **extra,
    )
    return decode_latents(models.vae, latents), audio


def sound_for_video(sound: Waveform, frame_count: int, fps: float) -> Waveform:
    """The sound exactly as long as the video: trimmed, or padded with silence where the last clip runs past it
    (that clip heard silence there too)."""
    samples = round(frame_count / fps * sound.sample_rate)
    data = sound.samples[:, :samples]
    if data.shape[1] < samples:
        data = torch.nn.functional.pad(data, (0, samples - data.shape[1]))
    return Waveform(data, sound.sample_rate)
