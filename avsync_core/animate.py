"""``python -m avsync_core.animate --image IMG --audio SOUND --sd15 CKPT --avsyncd AVSYNCD -o out.mp4``

Animates one image in time with a sound, without ComfyUI. Sound longer than one 2 s clip is made either of chained
clips (``--long-sound chain``: each clip starts at the previous clip's last frame; least memory and compute) or of
context windows (``--long-sound context``: all frames denoised together, every window anchored on the picture,
``--overlap`` frames shared by neighbours, fused by ``--fuse``). The mp4 carries the sound (AAC, as ComfyUI's
Save Video writes it), exactly as long as the video. Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .cli import dtype_argument, resolve_dtype, run_command, writable_output
from .errors import InvalidInputError

PROG = "python -m avsync_core.animate"


def parse_seconds(text: str | None) -> tuple[float, float | None]:
    """``START:END`` (either side may be left out) -> (start, duration or None)."""
    if text is None:
        return 0.0, None
    start_text, sep, end_text = text.partition(":")
    try:
        start = float(start_text) if start_text.strip() else 0.0
        end = float(end_text) if sep and end_text.strip() else None
    except ValueError:
        raise InvalidInputError(f"--seconds must be START:END in seconds (e.g. 3:9.5), got {text!r}.") from None
    if not sep or start < 0 or (end is not None and end <= start):
        raise InvalidInputError(f"--seconds must be START:END with 0 <= START < END (e.g. 3:9.5), got {text!r}.")
    return start, None if end is None else end - start


def build_parser() -> argparse.ArgumentParser:
    from .sampling.context import DEFAULT_OVERLAP, FUSE_METHODS, LONG_SOUND_MODES
    from .sampling.schedulers import SCHEDULERS

    p = argparse.ArgumentParser(prog=PROG, description="Animate an image in time with a sound (AVSyncD).")
    p.add_argument("--image", required=True, help="the first frame (any image Pillow reads)")
    p.add_argument("--audio", required=True, help="the sound: any audio or video file FFmpeg (PyAV) reads")
    p.add_argument("--sd15", required=True, help="SD1.5 checkpoint: a .safetensors/.ckpt file or a diffusers folder")
    p.add_argument("--avsyncd", required=True, help="official AVSyncD folder, or a motion module .safetensors")
    p.add_argument("--imagebind", help="ImageBind file (default: the official folder's audio_encoder/)")
    p.add_argument("--prompt", default="", help="what the video shows, e.g. the sound's class ('a lion roaring')")
    p.add_argument("--negative", default="", help="negative prompt, used only with --text-guidance above 1")
    p.add_argument("--audio-guidance", type=float, default=4.0, help="audio CFG scale (paper: 4; 1 = off)")
    p.add_argument("--text-guidance", type=float, default=1.0, help="text CFG scale (paper: 1 = off)")
    p.add_argument("--steps", type=int, default=50, help="denoising steps per clip (paper: 50)")
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="pndm", help="sampler (paper: pndm)")
    p.add_argument("--frames", type=int, default=12, help="frames per 2 s clip (paper: 12)")
    p.add_argument("--fps", type=float, default=6.0, help="frame rate; frames / fps must be 2 s (paper: 6)")
    p.add_argument("--seconds", metavar="START:END", help="the part of the sound to animate (default: all of it)")
    p.add_argument(
        "--long-sound",
        choices=LONG_SOUND_MODES,
        default="chain",
        help="sound past one clip: chain clips (least memory/compute) or context windows anchored on the image",
    )
    p.add_argument(
        "--overlap",
        type=int,
        default=DEFAULT_OVERLAP,
        help="context windows: new frames neighbouring windows share, 0 .. frames - 2; costs "
        "(frames - 1) / (frames - 1 - overlap) x the UNet work of chaining",
    )
    p.add_argument("--fuse", choices=FUSE_METHODS, default="pyramid", help="context windows: how overlaps are fused")
    p.add_argument("--seed", type=int, default=0, help="noise seed; chained clip k uses seed + k (mod 2**64)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    dtype_argument(p, "auto", "model precision (default: fp16 on a GPU, fp32 on the CPU)")
    p.add_argument("--size", type=int, default=256, help="square output size in pixels (paper: 256)")
    p.add_argument("-o", "--output", required=True, help="the .mp4 to write")
    return p


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidInputError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("--device cuda, but PyTorch sees no CUDA GPU; use --device cpu.")
    return device


def run(args: argparse.Namespace) -> Path:
    """Check every input that can be checked cheaply, then load, animate and write; returns the mp4's path."""
    from .audio import decode_audio
    from .pipeline import (
        SamplingOptions,
        animate,
        check_frame_layout,
        check_size,
        load_image,
        load_models,
        sound_for_video,
    )
    from .video import write_video

    output = Path(args.output).expanduser()
    if output.suffix.lower() != ".mp4":
        raise InvalidInputError(f"-o must name an .mp4 file, got {output}.")
    writable_output(str(output))
    check_frame_layout(args.frames, args.fps)
    if args.steps < 1:
        raise InvalidInputError(f"--steps must be at least 1, got {args.steps}.")
    guidance = (args.audio_guidance, args.text_guidance)
    options = SamplingOptions(
        args.frames, args.fps, args.steps, args.scheduler, *guidance, args.long_sound, args.overlap, args.fuse
    )
    options.check()
    start, duration = parse_seconds(args.seconds)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    image = load_image(args.image, args.size)
    sound = decode_audio(args.audio, start, duration, sample_rate=None, mono=False)
    models = load_models(args.sd15, args.avsyncd, args.imagebind, device, dtype)
    check_size(models, args.size)
    frames, _ = animate(models, image, sound, args.prompt, args.negative, options, args.seed)
    return write_video(output, frames, args.fps, sound_for_video(sound, len(frames), args.fps))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        path = run(args)
        print(f"wrote {path}")

    return run_command(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
