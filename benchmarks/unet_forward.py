"""Seconds per AVSyncUNet forward pass and peak memory, at SD1.5's real sizes with random weights.

One guided sampling step of the paper's setting is one forward of batch 2 (audio guidance: null audio and
audio) with 12 frames at 256x256 (32x32 latents). Also times the temporal convolution in the official
concatenate-then-project form against the decomposed form the model uses, on the same input.

    python benchmarks/unet_forward.py                       # CPU, a smaller size
    python benchmarks/unet_forward.py --size 256 --frames 12 --device cuda --dtype float16
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avsync_core.model.additions import TemporalConvMix  # noqa: E402
from avsync_core.model.unet import AVSyncUNet  # noqa: E402
from avsync_core.sd15 import move_module  # noqa: E402
from avsync_core.sd15.unet import SD15_UNET_CONFIG  # noqa: E402


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


def official_conv_temp(mix: TemporalConvMix, x: torch.Tensor, frames: int) -> torch.Tensor:
    """The official form: concatenate [frame 0, previous, current] to 3C channels, then one Linear."""
    n, c, h, w = x.shape
    v = x.view(n // frames, frames, c, h, w).permute(0, 3, 4, 1, 2)
    prev = torch.cat([v[..., :1, :], v[..., :-1, :]], dim=-2)
    cat = torch.cat([v[..., :1, :].expand_as(v), prev, v], dim=-1)
    return (v + mix.conv_temp(cat)).permute(0, 3, 4, 1, 2).reshape(n, c, h, w)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags (also read by the docs test)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="image size in pixels (latent = size / 8)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--batch", type=int, default=2, help="2 = one audio-guided step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=2)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)

    from diffusers import UNet2DConditionModel

    with torch.device(device):
        base = move_module(UNet2DConditionModel.from_config(SD15_UNET_CONFIG), device, dtype)
        unet = AVSyncUNet.from_base(base).eval()
    for p in unet.motion.parameters():
        p.data.normal_(0, 0.02)
    latent = args.size // 8
    b, f = args.batch, args.frames
    sample = torch.randn(b, 4, f, latent, latent, device=device, dtype=dtype)
    text = torch.randn(b, 77, 768, device=device, dtype=dtype)
    audio = torch.randn(b, 229, 768, device=device, dtype=dtype)
    from avsync_core.audio import segment_masks

    masks = segment_masks(f)[None].expand(b, -1, -1).to(device)
    with torch.no_grad():
        seconds = timed(lambda: unet(sample, 500, text, audio, masks), device, args.repeats)
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    print(
        f"AVSyncUNet forward: {params:.0f} M params, batch {b} x {f} frames at {args.size}x{args.size}, "
        f"{args.device} {args.dtype}"
    )
    print(f"  {seconds:.3f} s per forward, peak memory {peak_memory_mib(device):.0f} MiB")

    mix = TemporalConvMix(320, zero_init=False).to(device, dtype)
    x = torch.randn(b * f, 320, latent, latent, device=device, dtype=dtype)
    with torch.no_grad():
        ours = timed(lambda: mix(x, f), device, 5)
        official = timed(lambda: official_conv_temp(mix, x, f), device, 5)
        diff = (mix(x, f) - official_conv_temp(mix, x, f)).abs().max().item()
    print(
        f"conv_temp at 320 channels: decomposed {ours * 1e3:.2f} ms, official concat {official * 1e3:.2f} ms "
        f"(max |diff| {diff:.2e})"
    )


if __name__ == "__main__":
    main()
