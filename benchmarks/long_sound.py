"""Long sound: chained clips against context windows at two overlaps. Seconds, peak memory and seams.

A 60 s sound (364 frames at 12 frames / 6 fps) sampled by the standalone loop with SD1.5's real sizes and random
weights (random SD1.5 UNet, random non-zero motion module; ``--tiny`` for the test models) at a small image size and
few steps, each mode in a fresh process (peak resident memory is per process, and includes the model's weights).
The audio tokens are random with the real shapes: encoding is measured on its own (mode ``encode``: seconds per
2 s window of the full-size ImageBind audio branch, times the windows each mode needs: one per clip for chaining,
one per start frame for context windows with overlap).

Seams: mean |x[t+1] - x[t]| of the latents over frame pairs at window borders (chaining: the clip seams; context:
where a window begins or ends) against pairs inside windows. Random weights say nothing about a trained model's
motion; the numbers show the cost of each mode and whether its borders add a jump of their own.

    python benchmarks/long_sound.py                       # 60 s, 64 px, 2 DDIM steps, overlaps 2 and 4
    python benchmarks/long_sound.py --tiny --seconds 8    # quick check with the tiny test models
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peak_memory import measure_modes, peak_mb  # noqa: E402

from avsync_core.audio import AudioCondition, clip_windows, segment_masks  # noqa: E402
from avsync_core.audio.mel import null_melspectrogram  # noqa: E402
from avsync_core.sampling.context import context_schedule  # noqa: E402

FRAMES, FPS = 12, 6.0


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags (also read by tests/test_docs.py)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="length of the sound")
    p.add_argument("--size", type=int, default=64, help="image size in pixels (latent = size / 8)")
    p.add_argument("--steps", type=int, default=2, help="DDIM steps")
    p.add_argument("--overlaps", type=int, nargs=2, default=[2, 4], help="the context windows' two overlaps")
    p.add_argument("--fuse", default="pyramid")
    p.add_argument("--tiny", action="store_true", help="the tiny test models instead of SD1.5's sizes")
    p.add_argument("--measure", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    return p


def unet(tiny: bool):
    """Only the UNet (the VAE, text encoder and audio encoder are not needed to sample), to keep the peak low."""
    from diffusers import UNet2DConditionModel

    from avsync_core.audio import ImageBindAudioConfig
    from avsync_core.model.unet import AVSyncUNet
    from avsync_core.sd15.unet import SD15_UNET_CONFIG
    from avsync_core.train.models import TINY_IMAGEBIND_CONFIG, TINY_UNET_CONFIG

    torch.manual_seed(0)
    base = UNet2DConditionModel.from_config(TINY_UNET_CONFIG if tiny else SD15_UNET_CONFIG)
    width = (TINY_IMAGEBIND_CONFIG if tiny else ImageBindAudioConfig()).embed_dim  # the token width
    model = AVSyncUNet.from_base(base, audio_dim=width).eval()
    for p in model.motion.parameters():  # a fresh motion module is an identity (zero-initialised): make it act
        p.data.normal_(0, 0.02)
    return model


def random_condition(seconds: float, width: int) -> AudioCondition:
    """Random tokens for every start frame of a ``seconds`` sound; the clips' tokens are rows of them."""
    windows = clip_windows(seconds, FRAMES, FPS)
    g = torch.Generator().manual_seed(1)
    starts = torch.randn(1 + (len(windows) - 1) * (FRAMES - 1), 229, width, generator=g)
    null = torch.randn(1, 229, width, generator=g)
    return AudioCondition(starts[:: FRAMES - 1], null, segment_masks(FRAMES), FRAMES, FPS, windows, starts)


def mode_overlap(mode: str) -> int:
    """The overlap of a mode's windows: ``context-o4`` -> 4; chained clips share one frame and overlap nothing."""
    return 0 if mode == "chain" else int(mode.split("-o")[1])


def border_pairs(mode: str, total: int, overlap: int) -> torch.Tensor:
    """(total - 1,) bool: the frame pairs (t, t + 1) that cross a window border in ``mode``."""
    border = torch.zeros(total - 1, dtype=torch.bool)
    if mode == "chain":
        border[FRAMES - 1 :: FRAMES - 1] = True
        return border
    for window in context_schedule(total, FRAMES, overlap):
        if window[1] > 1:
            border[window[1] - 1] = True  # (first new frame - 1, first new frame)
        if window[-1] < total - 1:
            border[window[-1]] = True  # (last frame, the next one)
    return border


def measure(mode: str, args: argparse.Namespace) -> dict:
    from avsync_core.sampling import make_scheduler, sample_context_video_latents, sample_long_video_latents

    if mode == "encode":
        from avsync_core.audio import ImageBindAudioConfig, ImageBindAudioEncoder
        from avsync_core.train.models import TINY_IMAGEBIND_CONFIG

        audio_encoder = ImageBindAudioEncoder(TINY_IMAGEBIND_CONFIG if args.tiny else ImageBindAudioConfig()).eval()
        mels = null_melspectrogram(8) + 0.1 * torch.randn(8, 1, 128, 204)
        with torch.no_grad():
            audio_encoder.encode_tokens(mels[:1])
            t0 = time.perf_counter()
            audio_encoder.encode_tokens(mels)
        return {"mode": mode, "peak_mb": peak_mb(), "seconds": (time.perf_counter() - t0) / 8}
    model = unet(args.tiny)
    audio = random_condition(args.seconds, model.motion.config.audio_dim)
    g = torch.Generator().manual_seed(2)
    latent = args.size // 8
    first = torch.randn(1, 4, latent, latent, generator=g)
    text = torch.randn(1, 77, model.base.config.cross_attention_dim, generator=g)
    common = dict(seed=0, steps=args.steps, audio_scale=4.0, progress=False)
    overlap = mode_overlap(mode)
    t0, cpu0 = time.perf_counter(), time.process_time()
    if mode == "chain":
        latents = sample_long_video_latents(model, make_scheduler("ddim"), first, text, audio, **common)
    else:
        latents = sample_context_video_latents(
            model, make_scheduler("ddim"), first, text, audio, overlap=overlap, fuse=args.fuse, **common
        )
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    frames = latents[0].transpose(0, 1).float()
    steps = (frames[1:] - frames[:-1]).abs().flatten(1).mean(1)
    border = border_pairs(mode, frames.shape[0], overlap)
    return {
        "mode": mode,
        "peak_mb": peak_mb(),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "frames": frames.shape[0],
        "border": steps[border].mean().item(),
        "inside": steps[~border].mean().item(),
        "first_exact": bool(torch.equal(latents[:, :, 0], first)),
    }


def main() -> None:
    args = build_parser().parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args)))
        return
    script = str(Path(__file__).resolve())
    modes = ("chain", *(f"context-o{o}" for o in args.overlaps))
    extra = ["--seconds", str(args.seconds), "--size", str(args.size), "--steps", str(args.steps), "--fuse", args.fuse]
    extra += ["--overlaps", *map(str, args.overlaps)] + (["--tiny"] if args.tiny else [])
    with tempfile.TemporaryDirectory() as workdir:
        rows = measure_modes(script, Path(workdir), ("encode", *modes), extra)
    clips = len(clip_windows(args.seconds, FRAMES, FPS))
    total = 1 + clips * (FRAMES - 1)
    print(
        f"{args.seconds:g} s sound: {clips} clips, {total} frames at {args.size} px, {args.steps} DDIM steps, audio "
        f"guidance 4, {'tiny' if args.tiny else 'SD1.5-size'} random weights, fuse {args.fuse}, CPU fp32"
    )
    encode = rows.pop("encode")["seconds"]
    print(
        "| mode | UNet windows/step | sampling s | sampling CPU s | peak RSS MiB | border | inside | border/inside "
        "| encode s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, row in rows.items():
        overlap = mode_overlap(mode)
        windows = clips if mode == "chain" else len(context_schedule(total, FRAMES, overlap))
        starts = clips if mode == "chain" or overlap == 0 else total - FRAMES + 1
        print(
            f"| {mode} | {windows} | {row['seconds']:.0f} | {row['cpu_seconds']:.0f} | {row['peak_mb']:.0f} | "
            f"{row['border']:.4f} | {row['inside']:.4f} | {row['border'] / row['inside']:.2f} | {encode * starts:.0f} |"
        )
        assert row["first_exact"], f"{mode}: frame 0 is not the picture's latent"


if __name__ == "__main__":
    main()
