"""The training loop: one process or many (torchrun / accelerate launch), mixed precision, accumulation,
clipping, logging, atomic checkpoints with exact resume, and validation renders.

Gradients are averaged with DDP over the processes ``processes`` sets up. Which samples a step sees and every
random draw of the loss are functions of the step number and the sample's position in the global sample stream,
so one process with batch G trains exactly like N processes with batch G/N, and a resumed run continues exactly
like one that never stopped.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..errors import AVSyncError, InvalidInputError
from ..model.motion_files import save_motion_module
from . import checkpointing
from .batches import GlobalBatchStream, StreamBatchSampler, StreamClips
from .config import SEED_MODULUS, TrainConfig
from .data import AVClipDataset, collate_clips, load_prompts, scan_dataset
from .evaluate import pick_validation_items, render_validation
from .logs import TrainLogger
from .models import build_models, load_motion_weights
from .processes import DistContext, init_distributed, rng_state, set_rng_state
from .trainer import AMP_DTYPES, StepResult, Trainer

logger = logging.getLogger(__name__)

OOM_HELP = (
    "Out of memory during training{where}. Lower train.batch_size (and raise train.gradient_accumulation to keep "
    "the global batch), lower data.size or data.frames, keep train.gradient_checkpointing=true, and use "
    "train.mixed_precision=fp16 or bf16. No checkpoint was written by the failed step; the last complete one is "
    "intact."
)


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
        records,
        classes,
        prompts,
        frames=config.data.frames,
        fps=config.data.fps,
        size=config.data.size,
        random_flip=config.data.random_flip,
        seed=config.seed,
        validate=config.data.validate_files,
    )

    amp_dtype = AMP_DTYPES[config.train.mixed_precision]
    models = build_models(
        config.model, dist.device, amp_dtype or torch.float32, config.train.gradient_checkpointing, config.seed
    )
    if config.data.size % models.vae_factor:
        raise InvalidInputError(
            f"data.size {config.data.size} is not a multiple of the VAE's factor {models.vae_factor}."
        )
    resume_state = None
    if resume_from is not None:
        resume_state = checkpointing.load_state(resume_from)
        load_motion_weights(models, resume_from / checkpointing.MOTION_FILE, dist.device)
    trainer = Trainer(config, models, dist, [prompts[c] for c in classes])

    stream = GlobalBatchStream(
        len(dataset),
        config.seed,
        config.train.batch_size,
        config.train.gradient_accumulation,
        dist.world_size,
        dist.rank,
    )
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
            len(trainer.params),
            sum(p.numel() for p in trainer.params) / 1e6,
            len(dataset),
            len(classes),
            stream.global_batch,
            config.train.batch_size,
            config.train.gradient_accumulation,
            dist.world_size,
            start_step,
            config.train.max_steps,
        )

    loader = DataLoader(
        StreamClips(dataset),
        batch_sampler=StreamBatchSampler(stream, start_step),
        num_workers=config.data.num_workers,
        collate_fn=collate_clips,
        pin_memory=dist.device.type == "cuda",
    )
    batches = iter(loader)
    progress = tqdm(
        total=config.train.max_steps,
        initial=start_step,
        desc="AVSync training",
        unit="step",
        disable=not (dist.is_main and config.log.progress),
        dynamic_ncols=True,
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
                train_log.log(
                    {
                        "step": done,
                        "epoch": stream.epoch_of(done),
                        "loss": result.loss,
                        "lr": result.lr,
                        "grad_norm": result.grad_norm,
                        "seconds_per_step": per_step,
                        "samples_per_second": stream.global_batch / per_step,
                        "wall_time": time.time(),
                    }
                )
                last_log, window = now, 0
            if done % config.checkpoint.every == 0 or done == config.train.max_steps:
                _save(config, trainer, stream, dist, ckpt_root, done, result.loss)
            if config.eval.every and done % config.eval.every == 0:
                if dist.is_main:
                    render_validation(
                        models,
                        validation,
                        trainer.text_table,
                        trainer.null_text,
                        trainer.null_tokens,
                        config.eval,
                        frames=config.data.frames,
                        fps=config.data.fps,
                        folder=output / "samples" / f"step-{done:08d}",
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
        save_motion_module(
            final,
            models.unet.motion,
            frames=config.data.frames,
            fps=config.data.fps,
            extra_metadata=_motion_metadata(config, config.train.max_steps),
        )
        logger.info("Motion module written to %s", final)
    dist.barrier()
    return RunResult(
        config.train.max_steps,
        final,
        [p for _, p in checkpointing.list_checkpoints(ckpt_root)],
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
    seed = (config.seed + dist.rank) % SEED_MODULUS
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _motion_metadata(config: TrainConfig, step: int) -> dict[str, str]:
    base = "tiny random model (smoke test)" if config.model.tiny else Path(config.model.sd15 or "").name
    return {"training_step": str(step), "base_model": base, "dataset": Path(config.data.root or "").name}


def _save(
    config: TrainConfig,
    trainer: Trainer,
    stream: GlobalBatchStream,
    dist: DistContext,
    root: Path,
    step: int,
    loss: float,
) -> None:
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
            root,
            step,
            trainer.models.unet.motion,
            state,
            meta,
            frames=config.data.frames,
            fps=config.data.fps,
            motion_metadata=_motion_metadata(config, step),
            keep_last=config.checkpoint.keep_last,
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
        for name, key, now in (
            ("global batch", "global_batch", stream.global_batch),
            ("dataset size", "dataset_size", stream.size),
            ("seed", "seed", stream.seed),
        )
        if state[key] != now
    ]
    if changed and dist.is_main:
        logger.warning(
            "Resuming with a different %s: training continues, but not as the original run would have.",
            "; ".join(changed),
        )
    if dist.is_main:
        logger.info("Resumed from %s (step %d).", path, state["step"])
    return int(state["step"])


def _validation_items(config: TrainConfig, classes: list[str], prompts: dict[str, str]) -> list[dict]:
    records, _ = scan_dataset(config.data.root, config.data.val_split)
    known = [r for r in records if r.class_name in prompts]
    if not known:
        logger.warning(
            "No validation video of a training class in %s: validation renders are off.", config.data.val_split
        )
        return []
    clips = AVClipDataset(
        known,
        classes,
        prompts,
        frames=config.data.frames,
        fps=config.data.fps,
        size=config.data.size,
        random_flip=False,
        seed=config.seed,
        validate=config.data.validate_files,
        deterministic_clip=True,
    )
    return pick_validation_items(clips, config.eval.num_clips)
