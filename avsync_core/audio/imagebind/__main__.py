"""``python -m avsync_core.audio.imagebind SRC DST``: write the compact audio-only ImageBind file once."""

from __future__ import annotations

import argparse
from typing import Sequence

from .model import ImageBindAudioEncoder


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (also read by the docs test)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("source", help="imagebind_huge.pth, an AVSyncD checkpoint folder, or a .safetensors file")
    parser.add_argument("output", help="where to write the compact .safetensors file")
    parser.add_argument("--num-heads", type=int, default=None, help="attention heads (default: embed dim / 64)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Write the compact audio-only file once from imagebind_huge.pth or an AVSyncD checkpoint."""
    args = build_parser().parse_args(argv)
    ImageBindAudioEncoder.from_file(args.source, num_heads=args.num_heads).save_safetensors(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
