"""The motion-module file command (the functions live in ``model/motion_files.py``).

python -m avsync_core.motion_io extract OFFICIAL_FOLDER motion.safetensors --dtype fp16
python -m avsync_core.motion_io convert imagebind_huge.pth imagebind_audio.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import CheckpointError
from .model.motion_files import extract_motion_module


def build_parser() -> argparse.ArgumentParser:
    """The command's subcommands and flags (also read by the docs test)."""
    from .cli import dtype_argument

    parser = argparse.ArgumentParser(prog="python -m avsync_core.motion_io", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    extract = commands.add_parser("extract", help="official checkpoint folder (or single file) -> motion module")
    extract.add_argument("source", help="official AVSyncD folder (holding unet/), its unet/, or a motion module")
    extract.add_argument("output", help="the .safetensors motion module to write")
    dtype_argument(extract, "fp32", "precision of the written tensors; fp16 halves the file (default fp32)")
    convert = commands.add_parser("convert", help="ImageBind checkpoint -> compact audio-only .safetensors")
    convert.add_argument("source", help="imagebind_huge.pth, an AVSyncD checkpoint folder, or a .safetensors file")
    convert.add_argument("output", help="where to write the compact .safetensors file")
    convert.add_argument("--num-heads", type=int, default=None, help="attention heads (default: embed dim / 64)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Shrink an official AVSyncD checkpoint to a motion module, or write the compact ImageBind audio file."""
    from .cli import DTYPES, run_command, writable_output

    args = build_parser().parse_args(argv)
    prog = f"avsync motion_io {args.command}"

    def body() -> None:
        if not args.output.endswith(".safetensors"):
            raise CheckpointError(f"The output must be a .safetensors file, got {args.output}.")
        writable_output(args.output)
        if args.command == "extract":
            info = extract_motion_module(args.source, args.output, DTYPES[args.dtype])
            size = Path(args.output).stat().st_size / 2**20
            print(f"wrote {args.output} ({size:.1f} MiB, {args.dtype}; {info.frames} frames at {info.fps:g} fps)")
        else:  # the same as python -m avsync_core.audio.imagebind
            from .audio.imagebind import ImageBindAudioEncoder

            ImageBindAudioEncoder.from_file(args.source, num_heads=args.num_heads).save_safetensors(args.output)
            print(f"wrote {args.output}")

    return run_command(prog, body)


if __name__ == "__main__":
    sys.exit(main())
