"""Seconds per training step and peak memory, for the tiny smoke-test models and for full-size SD1.5 shapes.

Every case builds random-weight models on the fly (nothing is downloaded) and times ``Trainer.train_step`` on a
synthetic batch (random frames, the mel of 2 s of noise): VAE encoding, ImageBind, the UNet forward/backward
with its gradient-checkpointing setting, clipping and the AdamW step. Data loading is not included. Each case
runs in a fresh subprocess, so its peak resident memory (``ru_maxrss``) is its own; on CUDA the peak of
``torch.cuda.max_memory_allocated`` is reported too.

  tiny        tiny models (configs/train/tiny_cpu.yaml's shapes): 4 frames, 64x64 px, batch 2
  sd15        SD1.5 UNet/VAE/CLIP + ImageBind-huge + the 310 M AVSyncD additions: 12 frames, 64x64 px, batch 1

Usage: python benchmarks/train_step.py [--cases tiny,tiny-nockpt,sd15] [--steps 3] [--device auto]
                                       [--precision no|bf16|fp16] [--size 64]
Full size on a CPU needs about 12 GB of memory and takes minutes per case.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASES = {
    # name: (model size, frames, batch, gradient checkpointing)
    "tiny": ("tiny", 4, 2, True),
    "tiny-nockpt": ("tiny", 4, 2, False),
    "sd15": ("sd15", 12, 1, True),
    "sd15-nockpt": ("sd15", 12, 1, False),
}


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0**2  # Linux reports KiB


def _measure(case: str, steps: int, device_name: str, precision: str, size: int) -> dict:
    import torch

    from avsync_core.audio import melspectrogram
    from avsync_core.train.config import load_config
    from avsync_core.train.models import assemble, byte_level_tokenizer, random_parts
    from avsync_core.train.processes import DistContext, select_device
    from avsync_core.train.trainer import Trainer

    model_size, frames, batch, checkpointing = CASES[case]
    device = select_device(device_name)
    config = load_config(
        None,
        [
            "model.tiny=true",
            f"data.frames={frames}",
            f"data.fps={frames / 2}",  # the encoder's 2 s window
            f"data.size={size}",
            f"train.batch_size={batch}",
            f"train.mixed_precision={precision}",
            f"train.gradient_checkpointing={checkpointing}",
            "eval.text_scale=1",
        ],
    )
    frozen = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    t0 = time.perf_counter()
    base, vae, text_encoder, audio = random_parts(model_size)
    models = assemble(base, vae, text_encoder, byte_level_tokenizer(), audio, None, device, frozen, checkpointing)
    del base, vae, text_encoder, audio
    trainer = Trainer(config, models, DistContext(device=device), ["a dog barking"])
    build_s = time.perf_counter() - t0

    g = torch.Generator().manual_seed(0)
    noise = [torch.randn(1, 32000, generator=g) * 0.1 for _ in range(batch)]
    data = {
        "video": torch.rand(batch, 3, frames, size, size, generator=g),
        "mel": torch.stack([melspectrogram(n) for n in noise]),
        "class_index": torch.zeros(batch, dtype=torch.long),
        "position": torch.arange(batch),
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(steps + 1):  # the first step warms up (allocator, kernels) and is not timed
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = trainer.train_step([data], step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:
            times.append(time.perf_counter() - start)
    return {
        "case": case,
        "device": str(device),
        "precision": precision,
        "frames": frames,
        "size": size,
        "batch": batch,
        "checkpointing": checkpointing,
        "trained_params_m": sum(p.numel() for p in trainer.params) / 1e6,
        "build_s": build_s,
        "s_per_step": sum(times) / len(times),
        "min_s_per_step": min(times),
        "peak_rss_gb": _peak_rss_gb(),
        "peak_cuda_gb": torch.cuda.max_memory_allocated(device) / 1024.0**3 if device.type == "cuda" else None,
        "loss": result.loss,
        "threads": torch.get_num_threads(),
    }


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags (also read by the docs test)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="tiny,tiny-nockpt,sd15")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (after one warm-up step)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one case in this process
    return parser


def main() -> None:
    args = build_parser().parse_args()

    if args.one:
        print(json.dumps(_measure(args.one, args.steps, args.device, args.precision, args.size)))
        return

    rows = []
    for case in args.cases.split(","):
        if case not in CASES:
            sys.exit(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        command = [
            sys.executable,
            __file__,
            "--one",
            case,
            "--steps",
            str(args.steps),
            "--device",
            args.device,
            "--precision",
            args.precision,
            "--size",
            str(args.size),
        ]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        if done.returncode != 0:
            print(f"{case}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)

    header = (
        f"{'case':<12} {'device':<7} {'prec':<5} {'frames':>6} {'px':>4} {'batch':>5} {'ckpt':>5} "
        f"{'trained M':>9} {'s/step':>8} {'min s':>8} {'peak RSS GB':>11} {'peak CUDA GB':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        cuda = f"{r['peak_cuda_gb']:.2f}" if r["peak_cuda_gb"] is not None else "-"
        print(
            f"{r['case']:<12} {r['device']:<7} {r['precision']:<5} {r['frames']:>6} {r['size']:>4} {r['batch']:>5} "
            f"{str(r['checkpointing']):>5} {r['trained_params_m']:>9.1f} {r['s_per_step']:>8.3f} "
            f"{r['min_s_per_step']:>8.3f} {r['peak_rss_gb']:>11.2f} {cuda:>12}"
        )


if __name__ == "__main__":
    main()
