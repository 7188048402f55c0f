"""User-facing errors.

Every problem a user can cause (a wrong file, a bad value, a shape that does not fit) is raised as an
``AVSyncError`` whose message says what was wrong and what would fit, so that ComfyUI and the CLI can show it
as it is instead of a stack trace from deep inside torch.
"""

from __future__ import annotations


class AVSyncError(Exception):
    """Base class: the message is meant for the person who caused it."""


class InvalidInputError(AVSyncError, ValueError):
    """A value, tensor or option that does not fit."""


class CheckpointError(AVSyncError):
    """A model file that is missing, unreadable or not the kind that was expected."""


class AudioError(AVSyncError):
    """Audio that cannot be decoded or used."""


def preview(items: list[str], limit: int = 5) -> str:
    """The first few items of a list for a message: ``a, b, c (+4 more)``."""
    if not items:
        return "none"
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
