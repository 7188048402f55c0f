"""The training loop: one process or many (torchrun / accelerate launch), mixed precision, accumulation,
clipping, logging, atomic checkpoints with exact resume, and validation renders.

Several processes are recognised from the environment torchrun and accelerate both set (``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); gradients are averaged with DDP over gloo (CPU) or
NCCL (GPU). Which samples a step sees and every random draw of the loss are functions of the step number and
the sample's position in the global sample stream, so one process with batch G trains exactly like N processes
with batch G/N, and a resumed run continues exactly like one that never stopped.
"""

from __future__ import annotations

import datetime
import gc
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..audio import null_melspectrogram, segment_masks
from ..errors import AVSyncError, InvalidInputError
from ..motion_io import save_motion_module
from . import checkpointing
from .batches import GlobalBatchStream, StreamBatchSampler, StreamClips
from .config import TrainConfig
from .data import AVClipDataset, collate_clips, load_prompts, scan_dataset
from .evaluate import pick_validation_items, render_validation
from .logs import TrainLogger
from .loss import diffusion_loss, draw_for_samples, training_alphas_cumprod
from .models import TrainModels, build_models, load_motion_weights, trainable_parameters

logger = logging.getLogger(__name__)

AMP_DTYPES = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}
OOM_HELP = (
    "Out of memory during training{where}. Lower train.batch_size (and raise train.gradient_accumulation to keep "
    "the global batch), lower data.size or data.frames, keep train.gradient_checkpointing=true, and use "
    "train.mixed_precision=fp16 or bf16. No checkpoint was written by the failed step; the last complete one is "
    "intact."
)


# -- processes ---------------------------------------------------------------------------------------------


@dataclass
class DistContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.initialized:
            torch_dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if not self.initialized:
            return value
        value = value.clone()
        torch_dist.all_reduce(value)
        return value / self.world_size

    def gather(self, obj: Any) -> list[Any]:
        if not self.initialized:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.initialized and torch_dist.is_initialized():
            torch_dist.destroy_process_group()
        self.initialized = False


def select_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device=cuda, but PyTorch sees no CUDA GPU. Use device=cpu or auto.")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def init_distributed(preference: str = "auto") -> DistContext:
    """One process, or the process group described by torchrun's / accelerate's environment variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(preference, local_rank)
    if world <= 1:
        return DistContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch_dist.init_process_group(backend, timeout=datetime.timedelta(minutes=60))
    return DistContext(world, rank, local_rank, device, True)


# -- one optimisation step -----------------------------------------------------------------------------


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
        self.model = DistributedDataParallel(unet, device_ids=[self.device] if self.device.type == "cuda" else None) if dist.initialized else unet

        self.text_table = models.encode_prompts(prompts).to(self.device)  # once per class, in full precision
        self.null_text = models.encode_prompts([""]).to(self.device) if config.eval.text_scale > 1 else None
        with torch.no_grad(), self._autocast():
            self.null_tokens = models.audio_encoder.encode_tokens(null_melspectrogram(1, device=self.device)).float()
        models.release_text_encoder()
        gc.collect()
        self.masks = segment_masks(self.frames).to(self.device)
        self.alphas_cumprod = training_alphas_cumprod().to(self.device)

        opt = config.optim
        self.optimizer = torch.optim.AdamW(self.params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)
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
                        self.model, latents, text, tokens, self.masks, self.null_tokens, self.masks,
                        draws.keep_audio.to(self.device), draws.timesteps.to(self.device),
                        draws.noise.to(self.device), self.alphas_cumprod,
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


# -- RNG state ------------------------------------------------------------------------------------------


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG states, as plain tensors and numbers (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# -- the run ---------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    final_step: int
    motion_module: Path | None
    checkpoints: list[Path]
    last_loss: float | None


def run(config: TrainConfig, resume: str | None = None) -> RunResult:
    """Train as configured; ``resume`` is ``latest`` or a checkpoint folder."""
    dist = init_distributed(config.device)
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        return _run(config, resume, dist)
    except torch.OutOfMemoryError:
        raise AVSyncError(OOM_HELP.format(where=f" on {dist.device}")) from None
    except RuntimeError as exc:
        text = str(exc)
        if "can't allocate memory" in text or "out of memory" in text.lower():
            where = f" on {dist.device}" if "CUDA" in text else " (CPU memory)"
            raise AVSyncError(OOM_HELP.format(where=where)) from None
        raise
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])  # global state: give it back
        dist.close()


def _run(config: TrainConfig, resume: str | None, dist: DistContext) -> RunResult:
    output = Path(config.output_dir).expanduser()
    ckpt_root = output / "checkpoints"
    if dist.is_main:
        _check_writable(output)
    dist.barrier()
    resume_from = checkpointing.resolve_resume(resume, ckpt_root)
    if resume is None and checkpointing.list_checkpoints(ckpt_root):
        latest = checkpointing.list_checkpoints(ckpt_root)[-1][1]
        raise InvalidInputError(
            f"{output} already holds checkpoints (newest: {latest.name}). Pass --resume latest to continue that "
            "run, or choose another output_dir."
        )
    _seed_everything(config, dist)

    if not config.data.root:
        raise InvalidInputError("data.root is not set: give the folder of training videos.")
    records, classes = scan_dataset(config.data.root, config.data.train_split)
    prompts = load_prompts(classes, config.data.prompt_file)
    dataset = AVClipDataset(
        records, classes, prompts, frames=config.data.frames, fps=config.data.fps, size=config.data.size,
        random_flip=config.data.random_flip, seed=config.seed, validate=config.data.validate_files,
    )

    amp_dtype = AMP_DTYPES[config.train.mixed_precision]
    models = build_models(config.model, dist.device, amp_dtype or torch.float32, config.train.gradient_checkpointing, config.seed)
    if config.data.size % models.vae_factor:
        raise InvalidInputError(f"data.size {config.data.size} is not a multiple of the VAE's factor {models.vae_factor}.")
    resume_state = None
    if resume_from is not None:
        resume_state = checkpointing.load_state(resume_from)
        load_motion_weights(models, resume_from / checkpointing.MOTION_FILE, dist.device)
    trainer = Trainer(config, models, dist, [prompts[c] for c in classes])

    stream = GlobalBatchStream(len(dataset), config.seed, config.train.batch_size, config.train.gradient_accumulation, dist.world_size, dist.rank)
    start_step = 0
    if resume_state is not None:
        start_step = _resume(resume_from, resume_state, trainer, stream, dist)
    elif resume is not None and dist.is_main:
        logger.info("No checkpoint in %s yet: starting from step 0.", ckpt_root)

    validation = _validation_items(config, classes, prompts) if dist.is_main and config.eval.every else []
    train_log = None
    if dist.is_main:
        (output / "config.yaml").write_text(config.to_yaml())
        train_log = TrainLogger(output / "logs", start_step, config.log.csv, config.log.tensorboard)
        logger.info(
            "Training %d motion-module tensors (%.1f M parameters) on %d videos, %d classes; global batch %d "
            "(%d per process x %d accumulation x %d processes), steps %d -> %d.",
            len(trainer.params), sum(p.numel() for p in trainer.params) / 1e6, len(dataset), len(classes),
            stream.global_batch, config.train.batch_size, config.train.gradient_accumulation, dist.world_size,
            start_step, config.train.max_steps,
        )

    loader = DataLoader(
        StreamClips(dataset), batch_sampler=StreamBatchSampler(stream, start_step), num_workers=config.data.num_workers,
        collate_fn=collate_clips, pin_memory=dist.device.type == "cuda",
    )
    batches = iter(loader)
    progress = tqdm(
        total=config.train.max_steps, initial=start_step, desc="AVSync training", unit="step",
        disable=not (dist.is_main and config.log.progress), dynamic_ncols=True,
    )
    result = StepResult(math.nan, math.nan, math.nan)
    last_log, window = time.perf_counter(), 0
    try:
        for step in range(start_step, config.train.max_steps):
            micro = [_next_batch(batches) for _ in range(config.train.gradient_accumulation)]
            result = trainer.train_step(micro, step)
            done, window = step + 1, window + 1
            progress.update(1)
            progress.set_postfix(loss=f"{result.loss:.4f}", lr=f"{result.lr:.2e}")
            if train_log is not None and (done % config.log.every == 0 or done == config.train.max_steps):
                now = time.perf_counter()
                per_step = (now - last_log) / window
                train_log.log({
                    "step": done, "epoch": stream.epoch_of(done), "loss": result.loss, "lr": result.lr,
                    "grad_norm": result.grad_norm, "seconds_per_step": per_step,
                    "samples_per_second": stream.global_batch / per_step, "wall_time": time.time(),
                })
                last_log, window = now, 0
            if done % config.checkpoint.every == 0 or done == config.train.max_steps:
                _save(config, trainer, stream, dist, ckpt_root, done, result.loss)
            if config.eval.every and done % config.eval.every == 0:
                if dist.is_main:
                    render_validation(
                        models, validation, trainer.text_table, trainer.null_text, trainer.null_tokens, config.eval,
                        frames=config.data.frames, fps=config.data.fps, folder=output / "samples" / f"step-{done:08d}",
                        autocast_dtype=amp_dtype,
                    )
                dist.barrier()
    finally:
        progress.close()
        if train_log is not None:
            train_log.close()
        del batches

    final = None
    if dist.is_main:
        final = output / "motion_module.safetensors"
        save_motion_module(final, models.unet.motion, frames=config.data.frames, fps=config.data.fps,
                           extra_metadata=_motion_metadata(config, config.train.max_steps))
        logger.info("Motion module written to %s", final)
    dist.barrier()
    return RunResult(
        config.train.max_steps, final, [p for _, p in checkpointing.list_checkpoints(ckpt_root)],
        None if math.isnan(result.loss) else result.loss,
    )


def _next_batch(batches) -> dict:
    try:
        return next(batches)
    except AVSyncError as exc:
        # An error raised in a DataLoader worker comes back with the worker's traceback in its text.
        message = str(exc).rsplit(f"{type(exc).__name__}: ", 1)[-1].strip()
        raise type(exc)(message) from None


def _check_writable(output: Path) -> None:
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InvalidInputError(
            f"The output folder {output} is not writable ({exc.strerror or exc}). Choose another output_dir."
        ) from None


def _seed_everything(config: TrainConfig, dist: DistContext) -> None:
    if config.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=dist.device.type != "cpu")
        torch.backends.cudnn.benchmark = False
    seed = config.seed + dist.rank
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _motion_metadata(config: TrainConfig, step: int) -> dict[str, str]:
    base = "tiny random model (smoke test)" if config.model.tiny else Path(config.model.sd15 or "").name
    return {"training_step": str(step), "base_model": base, "dataset": Path(config.data.root or "").name}


def _save(config: TrainConfig, trainer: Trainer, stream: GlobalBatchStream, dist: DistContext, root: Path, step: int, loss: float) -> None:
    rng = dist.gather(rng_state(dist.device))  # a collective: every process takes part
    if dist.is_main:
        state = {
            **trainer.state_dict(),
            "step": step,
            "samples_seen": step * stream.global_batch,
            "rng": rng,
            "world_size": dist.world_size,
            "global_batch": stream.global_batch,
            "dataset_size": stream.size,
            "seed": config.seed,
            "config": config.to_dict(),
        }
        meta = {
            "epoch": stream.epoch_of(step),
            "loss": loss,
            "global_batch": stream.global_batch,
            "world_size": dist.world_size,
            "written": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        path = checkpointing.save_checkpoint(
            root, step, trainer.models.unet.motion, state, meta, frames=config.data.frames, fps=config.data.fps,
            motion_metadata=_motion_metadata(config, step), keep_last=config.checkpoint.keep_last,
            keep_every=config.checkpoint.keep_every,
        )
        logger.info("Saved %s", path)
    dist.barrier()


def _resume(path: Path, state: dict[str, Any], trainer: Trainer, stream: GlobalBatchStream, dist: DistContext) -> int:
    """Optimizer, schedules and RNG from a checkpoint whose weights are already in the model."""
    trainer.load_state_dict(state)
    if state["world_size"] == dist.world_size:
        set_rng_state(state["rng"][dist.rank], dist.device)
    changed = [
        f"{name} {state[key]} -> {now}"
        for name, key, now in (("global batch", "global_batch", stream.global_batch), ("dataset size", "dataset_size", stream.size), ("seed", "seed", stream.seed))
        if state[key] != now
    ]
    if changed and dist.is_main:
        logger.warning("Resuming with a different %s: training continues, but not as the original run would have.", "; ".join(changed))
    if dist.is_main:
        logger.info("Resumed from %s (step %d).", path, state["step"])
    return int(state["step"])


def _validation_items(config: TrainConfig, classes: list[str], prompts: dict[str, str]) -> list[dict]:
    records, _ = scan_dataset(config.data.root, config.data.val_split)
    known = [r for r in records if r.class_name in prompts]
    if not known:
        logger.warning("No validation video of a training class in %s: validation renders are off.", config.data.val_split)
        return []
    clips = AVClipDataset(
        known, classes, prompts, frames=config.data.frames, fps=config.data.fps, size=config.data.size,
        random_flip=False, seed=config.seed, validate=config.data.validate_files, deterministic_clip=True,
    )
    return pick_validation_items(clips, config.eval.num_clips)
