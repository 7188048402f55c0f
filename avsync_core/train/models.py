"""Building the models training needs, with only AVSyncD's additions trainable.

Frozen: the SD1.5 UNet, VAE and CLIP text encoder, and ImageBind's audio branch (they may be cast to a half
dtype). Trained, in float32 master weights: the motion module, fresh and zero-initialised like the official
init, or loaded from an official AVSyncD checkpoint or one of our motion-module files for fine-tuning.

``model.tiny`` builds random-weight models with SD1.5's structure at toy widths instead, for smoke runs and
tests: no file is needed and a step takes a fraction of a second on a CPU.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn

from ..audio import ImageBindAudioConfig, ImageBindAudioEncoder
from ..checkpoints import read_state_dict
from ..errors import CheckpointError
from ..model.motion_files import load_motion_module
from ..model.motion_module import MotionConfig, MotionModule
from ..model.unet import AVSyncUNet
from ..sd15 import move_module
from ..sd15.components import (
    SD15_TEXT_ENCODER_CONFIG,
    SD15_VAE_CONFIG,
    encode_prompts,
    load_text_encoder,
    load_tokenizer,
    load_vae,
    vae_factor,
    vae_latent_scale,
)
from ..sd15.unet import SD15_UNET_CONFIG, load_sd15_unet
from .config import ModelConfig

# Tiny SD1.5-shaped models (the layout of the golden unet_tiny_c, which ComfyUI's own UNet also accepts).
TINY_UNET_CONFIG: dict = {
    **SD15_UNET_CONFIG,
    "block_out_channels": [32, 32, 64, 64],
    "attention_head_dim": 4,
    "cross_attention_dim": 32,
    "sample_size": 8,
}
TINY_VAE_CONFIG: dict = {
    "block_out_channels": [16, 16, 32, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "latent_channels": 4,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}
TINY_TEXT_CONFIG: dict = {
    "vocab_size": 600,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "bos_token_id": 512,
    "eos_token_id": 513,
    "pad_token_id": 513,
}
TINY_IMAGEBIND_CONFIG = ImageBindAudioConfig(embed_dim=48, depth=2, num_heads=4, out_dim=32)


@dataclass
class TrainModels:
    unet: AVSyncUNet
    vae: AutoencoderKL
    audio_encoder: ImageBindAudioEncoder
    text_encoder: nn.Module | None  # dropped once the prompts are encoded
    tokenizer: object | None

    @property
    def latent_scale(self) -> float:
        return vae_latent_scale(self.vae)

    @property
    def vae_factor(self) -> int:
        return vae_factor(self.vae)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        if self.text_encoder is None or self.tokenizer is None:
            raise RuntimeError("The text encoder was already released.")
        return encode_prompts(self.text_encoder, self.tokenizer, prompts)

    def release_text_encoder(self) -> None:
        """Text encodings are computed once per class; the encoder's memory is then better spent elsewhere."""
        self.text_encoder = None
        self.tokenizer = None


def build_models(
    config: ModelConfig,
    device: torch.device,
    frozen_dtype: torch.dtype = torch.float32,
    gradient_checkpointing: bool = True,
    seed: int = 0,
) -> TrainModels:
    """Load (or, for ``tiny``, build) every model, freeze all but the motion module, and place them.

    A fresh motion module's random layers are drawn from ``seed``, so every process starts from the same one.
    """
    if config.tiny:
        base, vae, text_encoder, audio = random_parts("tiny", config.tiny_seed)
        tokenizer = load_tokenizer(config.tokenizer) if config.tokenizer else byte_level_tokenizer()
        if config.imagebind:  # e.g. a tiny ImageBind for tests; its heads are not 64 wide
            audio = ImageBindAudioEncoder.from_file(config.imagebind, num_heads=TINY_IMAGEBIND_CONFIG.num_heads)
    else:
        base = load_sd15_unet(config.sd15)  # refuses SDXL / SD2 / inpainting files with a clear reason
        vae = load_vae(config.sd15)
        text_encoder = load_text_encoder(config.sd15)
        tokenizer = load_tokenizer(config.tokenizer, config.sd15)
        audio = ImageBindAudioEncoder.from_file(config.imagebind)

    motion = None
    if config.init_from:
        heads = MotionConfig.from_unet_config(base.config).attention_heads
        motion, _ = load_motion_module(config.init_from, attention_heads=heads)
    return assemble(
        base,
        vae,
        text_encoder,
        tokenizer,
        audio,
        motion,
        device,
        frozen_dtype,
        gradient_checkpointing,
        seed,
        source=config.init_from,
    )


def assemble(
    base: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder: nn.Module,
    tokenizer: object,
    audio: ImageBindAudioEncoder,
    motion: MotionModule | None,
    device: torch.device,
    frozen_dtype: torch.dtype = torch.float32,
    gradient_checkpointing: bool = True,
    seed: int = 0,
    source: str | None = None,
) -> TrainModels:
    """Wrap the base with a motion module (fresh when None), freeze everything else, and place it all."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = AVSyncUNet.from_base(base, motion, audio_dim=audio.token_dim)
    if unet.motion.config.audio_dim != audio.token_dim:
        raise CheckpointError(
            f"The motion module in {source} takes audio tokens of width {unet.motion.config.audio_dim}, "
            f"but the ImageBind encoder gives {audio.token_dim}-wide tokens. Use the matching audio encoder."
        )
    for module in (base, vae, text_encoder, audio):
        module.requires_grad_(False).eval()
    move_module(base, device, frozen_dtype)
    move_module(unet.motion, device, torch.float32).requires_grad_(True)
    move_module(vae, device, frozen_dtype)
    move_module(audio, device, frozen_dtype)
    move_module(text_encoder, device, torch.float32)  # used once, for the prompts: keep full precision
    unet.enable_gradient_checkpointing(gradient_checkpointing)
    unet.train()
    return TrainModels(unet, vae, audio, text_encoder, tokenizer)


def random_parts(
    size: str, seed: int = 0
) -> tuple[UNet2DConditionModel, AutoencoderKL, nn.Module, ImageBindAudioEncoder]:
    """Random-weight UNet, VAE, CLIP text encoder and ImageBind audio branch: ``tiny`` or ``sd15`` (full size,
    for benchmarks). Every process building them with the same seed gets the same weights."""
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = {
        "tiny": (TINY_UNET_CONFIG, TINY_VAE_CONFIG, TINY_TEXT_CONFIG, TINY_IMAGEBIND_CONFIG),
        "sd15": (SD15_UNET_CONFIG, SD15_VAE_CONFIG, SD15_TEXT_ENCODER_CONFIG, ImageBindAudioConfig()),
    }
    unet_config, vae_config, text_config, imagebind_config = configs[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
        audio = ImageBindAudioEncoder(imagebind_config)
    return base, vae, text_encoder, audio


def load_motion_weights(models: TrainModels, path: Path, device: torch.device) -> None:
    """Put a checkpoint's weights into the motion module as fp32 trainable parameters on ``device``.

    Call it before the optimizer is built: loading may replace the parameter objects.
    """
    motion = models.unet.motion
    motion.load_official_state_dict(read_state_dict(path), str(path))
    move_module(motion, device, torch.float32).requires_grad_(True)


def trainable_parameters(unet: AVSyncUNet) -> list[nn.Parameter]:
    """The motion module's parameters, in ``named_parameters`` order (the optimizer state follows it)."""
    return [p for p in unet.motion.parameters() if p.requires_grad]


def byte_level_tokenizer():
    """A CLIP tokenizer over single bytes (no merges), for tiny models: no vocabulary file has to exist."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({f"{s}</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab.update({"<|startoftext|>": 2 * len(symbols), "<|endoftext|>": 2 * len(symbols) + 1})
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab))
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


def _byte_symbols() -> list[str]:
    """Byte-level BPE's printable stand-in for each of the 256 byte values."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\xa1"), ord("\xac") + 1),
        *range(ord("\xae"), ord("\xff") + 1),
    ]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
