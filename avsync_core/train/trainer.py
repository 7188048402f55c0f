"""One optimizer step of AVSyncD training: conditioning, the paper's loss, mixed precision, accumulation,
clipping, and the learning-rate schedule; ``loop`` drives it over the data."""

from __future__ import annotations

import gc
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from ..audio import null_melspectrogram, segment_masks
from ..errors import AVSyncError, InvalidInputError
from .config import TrainConfig
from .loss import diffusion_loss, draw_for_samples, training_alphas_cumprod
from .models import TrainModels, trainable_parameters
from .processes import DistContext

AMP_DTYPES = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    lr: float


class Trainer:
    """The optimiser, the AMP machinery and the loss around the models; data loading happens elsewhere."""

    def __init__(self, config: TrainConfig, models: TrainModels, dist: DistContext, prompts: list[str]) -> None:
        self.config, self.models, self.dist = config, models, dist
        self.device = dist.device
        self.amp_dtype = AMP_DTYPES[config.train.mixed_precision]
        self.frames = config.data.frames
        unet = models.unet
        self.params = trainable_parameters(unet)
        self.model = (
            DistributedDataParallel(unet, device_ids=[self.device] if self.device.type == "cuda" else None)
            if dist.initialized
            else unet
        )

        self.text_table = models.encode_prompts(prompts).to(self.device)  # once per class, in full precision
        self.null_text = models.encode_prompts([""]).to(self.device) if config.eval.text_scale > 1 else None
        with torch.no_grad(), self._autocast():
            self.null_tokens = models.audio_encoder.encode_tokens(null_melspectrogram(1, device=self.device)).float()
        models.release_text_encoder()
        gc.collect()
        self.masks = segment_masks(self.frames).to(self.device)
        self.alphas_cumprod = training_alphas_cumprod().to(self.device)

        opt = config.optim
        self.optimizer = torch.optim.AdamW(
            self.params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay
        )
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(config, step))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @torch.no_grad()
    def conditioning(self, batch: dict, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """Clean latents (VAE posterior sample with per-sample noise), text and audio tokens of a micro-batch."""
        models, device = self.models, self.device
        video = batch["video"].to(device, non_blocking=True)
        b, _, frames, size, _ = video.shape
        if frames != self.frames:
            raise InvalidInputError(f"The batch has {frames} frames; the run is configured for {self.frames}.")
        pixels = video.transpose(1, 2).reshape(b * frames, 3, size, size) * 2.0 - 1.0
        means, stds = [], []
        with self._autocast():
            for chunk in pixels.split(self.config.train.vae_batch):
                posterior = models.vae.encode(chunk.to(models.vae.dtype)).latent_dist
                means.append(posterior.mean.float())
                stds.append(posterior.std.float())
            tokens = models.audio_encoder.encode_tokens(batch["mel"].to(device)).float()
        mean, std = (torch.cat(t).view(b, frames, *t[0].shape[1:]).transpose(1, 2) for t in (means, stds))
        draws = draw_for_samples(
            self.config.seed, step, batch["position"], tuple(mean.shape[1:]), self.config.train.audio_drop_prob
        )
        latents = (mean + std * draws.latent_noise.to(device)) * models.latent_scale
        text = self.text_table[batch["class_index"].to(device)]
        return latents, text, tokens, draws

    def train_step(self, micro_batches: list[dict], step: int) -> StepResult:
        """Accumulate over ``micro_batches``, then one clipped optimizer step; ``step`` keys the random draws."""
        self.model.train()
        accumulation = len(micro_batches)
        total = torch.zeros((), device=self.device)
        for index, batch in enumerate(micro_batches):
            latents, text, tokens, draws = self.conditioning(batch, step)
            sync = index == accumulation - 1 or not isinstance(self.model, DistributedDataParallel)
            with nullcontext() if sync else self.model.no_sync():
                with self._autocast():
                    loss, _ = diffusion_loss(
                        self.model,
                        latents,
                        text,
                        tokens,
                        self.masks,
                        self.null_tokens,
                        self.masks,
                        draws.keep_audio.to(self.device),
                        draws.timesteps.to(self.device),
                        draws.noise.to(self.device),
                        self.alphas_cumprod,
                    )
                if not torch.isfinite(loss) and self.amp_dtype != torch.float16:
                    raise AVSyncError(
                        f"The loss became {loss.item()} at step {step + 1}; nothing was updated. Lower optim.lr, check "
                        "the data, or resume from the last checkpoint (with bf16, try fp32: train.mixed_precision=no)."
                    )
                self.scaler.scale(loss / accumulation).backward()
            total += loss.detach()
        self.scaler.unscale_(self.optimizer)
        max_norm = self.config.optim.max_grad_norm or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        mean_loss = self.dist.mean(total / accumulation)
        return StepResult(float(mean_loss), float(grad_norm), float(lr))

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])


def lr_factor(config: TrainConfig, step: int) -> float:
    """Multiplier of ``optim.lr`` at optimizer step ``step``: constant, linear warmup, or warmup + cosine."""
    opt = config.optim
    if opt.lr_schedule == "constant":
        return 1.0
    if step < opt.warmup_steps:
        return (step + 1) / opt.warmup_steps
    if opt.lr_schedule == "warmup":
        return 1.0
    progress = min((step - opt.warmup_steps) / max(1, config.train.max_steps - opt.warmup_steps), 1.0)
    return opt.min_lr_ratio + (1.0 - opt.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
