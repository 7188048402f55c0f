"""Validation renders during training: animate the first frame of held-out clips with their own sound.

Each clip is the centre window of a validation video (unflipped), so the renders of successive evaluations are
directly comparable. The first frame is encoded with the VAE's posterior mean, the animation is sampled with
the same sampler and guidance as inference, decoded frame by frame, and written as mp4 with the clip's sound.
"""

from __future__ import annotations

import logging
import re
from contextlib import nullcontext
from pathlib import Path

import torch

from ..audio import SAMPLE_RATE, AudioCondition, Waveform, segment_masks
from ..pipeline import decode_latents, encode_image
from ..sampling.loop import sample_video_latents
from ..sampling.schedulers import make_scheduler
from ..video import write_video
from .config import SEED_MODULUS, EvalConfig
from .models import TrainModels

logger = logging.getLogger(__name__)


def pick_validation_items(dataset, count: int) -> list[dict]:
    """Up to ``count`` clips, taking the classes in turn so a few renders cover several sounds."""
    by_class: dict[str, list[int]] = {}
    for index, record in enumerate(dataset.records):
        by_class.setdefault(record.class_name, []).append(index)
    order = []
    queues = [list(v) for _, v in sorted(by_class.items())]
    while len(order) < count and any(queues):
        for queue in queues:
            if queue and len(order) < count:
                order.append(queue.pop(0))
    return [dataset[i] for i in order]


@torch.no_grad()
def render_validation(
    models: TrainModels,
    items: list[dict],
    text_table: torch.Tensor,
    null_text: torch.Tensor | None,
    null_audio_tokens: torch.Tensor,
    config: EvalConfig,
    *,
    frames: int,
    fps: float,
    folder: str | Path,
    autocast_dtype: torch.dtype | None = None,
) -> list[Path]:
    """Write one mp4 per item into ``folder``; returns the paths."""
    unet, vae, encoder = models.unet, models.vae, models.audio_encoder
    device = unet.device
    folder = Path(folder)
    masks = segment_masks(frames).to(device)
    was_training = unet.training
    unet.eval()
    amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    paths = []
    try:
        for number, item in enumerate(items):
            with amp:
                first = encode_image(vae, item["video"][:, 0][None])
                audio = AudioCondition(
                    tokens=encoder.encode_tokens(item["mel"][None].to(device)),
                    null_tokens=null_audio_tokens,
                    masks=masks,
                    frames=frames,
                    fps=fps,
                )
                latents = sample_video_latents(
                    unet,
                    make_scheduler(config.scheduler),
                    first,
                    text_table[item["class_index"]][None],
                    audio,
                    steps=config.steps,
                    audio_scale=config.audio_scale,
                    text_scale=config.text_scale,
                    null_text=null_text,
                    seed=(config.seed + number) % SEED_MODULUS,
                    progress=False,
                )
                video = decode_latents(models.vae, latents)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(item["path"]).stem)
            path = folder / f"{number:02d}_{name}.mp4"
            write_video(path, video, fps, Waveform(item["audio"].float().cpu(), SAMPLE_RATE))
            paths.append(path)
    finally:
        unet.train(was_training)
    logger.info("Wrote %d validation animations to %s", len(paths), folder)
    return paths
