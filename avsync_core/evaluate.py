"""``python -m avsync_core.evaluate``: the synchronisation metrics on files (see ``evaluation/command.py``)."""

from .evaluation.command import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
