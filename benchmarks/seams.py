"""How visible are the seams of long audio? Mean |difference| between consecutive frames at clip seams vs inside clips.

Long audio is animated clip by clip (``avsync_core.sampling.chain``): clip k starts at clip k-1's last frame, so
the frame pair across a seam is (shared frame, clip k's frame 1). This samples a chain with SD1.5's real sizes and
random weights (random SD1.5 UNet, random non-zero motion module, random ImageBind audio branch, random VAE) and
prints the mean absolute difference between consecutive frames, in latents and in decoded pixels, for the pairs
that cross a seam and for the pairs inside a clip. Random weights say nothing about a trained model's motion; the
benchmark shows the chaining adds no jump of its own and gives the command to run on real weights' sizes.

    python benchmarks/seams.py                   # CPU: 64 px, 4 steps, 3 clips of 12 frames
    python benchmarks/seams.py --size 256 --steps 50 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avsync_core.audio import Waveform, encode_audio_condition  # noqa: E402
from avsync_core.model.unet import AVSyncUNet  # noqa: E402
from avsync_core.pipeline import decode_latents  # noqa: E402
from avsync_core.sampling import make_scheduler, sample_long_video_latents  # noqa: E402
from avsync_core.train.models import random_parts  # noqa: E402


def consecutive_differences(frames: torch.Tensor, per_clip: int) -> tuple[float, float]:
    """(seams, inside): mean |frame t+1 - frame t| over pairs crossing a seam / inside a clip; ``frames`` is
    (T, ...) with T = 1 + W * per_clip, seam pairs are (k * per_clip, k * per_clip + 1) for k >= 1."""
    steps = (frames[1:] - frames[:-1]).abs().flatten(1).mean(1)
    seam = torch.zeros(len(steps), dtype=torch.bool)
    seam[per_clip::per_clip] = True
    return steps[seam].mean().item(), steps[~seam].mean().item()


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags (also read by the docs test)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image size in pixels (latent = size / 8)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--scheduler", default="ddim")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    device = torch.device(args.device)
    fps = args.frames / 2.0

    base, vae, _, audio_encoder = random_parts("sd15", seed=args.seed)
    torch.manual_seed(args.seed)
    unet = AVSyncUNet.from_base(base, audio_dim=audio_encoder.token_dim).to(device).eval()
    for p in unet.motion.parameters():  # a fresh motion module is zero-initialised (an identity): make it act
        p.data.normal_(0, 0.02)
    vae, audio_encoder = vae.to(device).eval(), audio_encoder.to(device).eval()
    seconds = (args.clips * (args.frames - 1) + 1) / fps
    g = torch.Generator().manual_seed(args.seed)
    sound = Waveform(0.3 * torch.randn(1, round(seconds * 16000), generator=g), 16000)
    audio = encode_audio_condition(audio_encoder, sound, args.frames, fps)
    audio = audio.to(device)
    latent = args.size // 8
    first = torch.randn(1, 4, latent, latent, generator=g).to(device)
    text = torch.randn(1, 77, base.config.cross_attention_dim, generator=g).to(device)

    start = time.perf_counter()
    latents = sample_long_video_latents(
        unet, make_scheduler(args.scheduler), first, text, audio, seed=args.seed, steps=args.steps, progress=True
    )
    sampled = time.perf_counter() - start
    per_clip = args.frames - 1
    frames = latents[0].transpose(0, 1)  # (T, c, h, w)
    pixels = decode_latents(vae, latents)
    print(
        f"{audio.num_windows} clips x {args.frames} frames -> {frames.shape[0]} frames at {args.size} px, "
        f"{args.steps} {args.scheduler} steps, {args.device}, sampled in {sampled:.0f} s (random SD1.5-size weights)"
    )
    for name, values in (("latents", frames.float().cpu()), ("pixels [0, 1]", pixels)):
        seam, inside = consecutive_differences(values, per_clip)
        print(
            f"  {name:14s} mean |x[t+1] - x[t]|: at seams {seam:.4f}, inside clips {inside:.4f} ({seam / inside:.2f}x)"
        )


if __name__ == "__main__":
    main()
