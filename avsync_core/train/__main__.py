"""``python -m avsync_core.train --config cfg.yaml [key=value ...] [--resume latest|PATH]``

Runs the same way under ``torchrun --nproc_per_node N -m avsync_core.train ...`` and
``accelerate launch -m avsync_core.train ...``. Problems the user can fix are printed as one message (exit
code 2); a traceback is printed only for a bug.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import AVSyncError
from .config import load_config, valid_keys
from .processes import process_environment

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (also read by the docs test)."""
    parser = argparse.ArgumentParser(
        prog="python -m avsync_core.train",
        description="Train AVSyncD's audio-synchronisation layers (the motion module) on your own videos with sound.",
        epilog="Overrides are dotted config keys, e.g. train.batch_size=2 optim.lr=5e-5 data.root=/data/my_sounds. "
        "Valid keys: " + ", ".join(valid_keys()),
    )
    parser.add_argument("--config", help="YAML config file (see configs/train/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.add_argument(
        "--resume",
        metavar="latest|PATH",
        help="continue from the newest checkpoint of output_dir, or from a checkpoint folder",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    world, rank = 1, 0
    try:
        world, rank, _ = process_environment()
        logging.basicConfig(
            level=logging.INFO if rank == 0 else logging.WARNING,
            format=("%(asctime)s " + (f"[rank {rank}] " if world > 1 else "") + "%(levelname)s %(message)s"),
            datefmt="%H:%M:%S",
        )
        config = load_config(args.config, args.overrides)
        if args.print_config:
            print(config.to_yaml(), end="")
            return 0
        from .loop import run  # the models and data pipeline load only once the config is known to be good

        result = run(config, resume=args.resume)
    except AVSyncError as exc:
        prefix = f"[rank {rank}] " if world > 1 else ""
        print(f"{prefix}avsync train: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("avsync train: interrupted; resume with --resume latest from the last checkpoint.", file=sys.stderr)
        return 130
    if rank == 0 and result.motion_module is not None:
        print(f"avsync train: done at step {result.final_step}; motion module: {result.motion_module}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
