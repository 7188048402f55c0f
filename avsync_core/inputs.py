"""Checks on values a user types or picks: numbers that must be finite and in range, files that must stay inside the
folder they were picked from. All are cheap (no decoding, no model), so a host runs them before it loads anything:
a refused prompt then costs nothing, and a server stays responsive under prompts pasted from strangers."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .errors import InvalidInputError


def check_number(name: str, value: Any, minimum: float | None = None, maximum: float | None = None) -> float:
    """``value`` as a float, or an error naming the input: NaN and infinities are refused like out-of-range numbers
    (a NaN guidance scale compares false with every bound and would silently turn the video into noise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{name} must be a number, got {value!r}.")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}.")
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        low = "-inf" if minimum is None else f"{minimum:g}"
        high = "inf" if maximum is None else f"{maximum:g}"
        raise InvalidInputError(f"{name} must be between {low} and {high}, got {value!r}.")
    return number


def file_inside(name: str, relative: str, folder: str | os.PathLike) -> Path:
    """The real path of ``folder/relative``, refused unless it lies inside ``folder`` once ``..`` and links are
    resolved, so a widget value like ``../../secrets.wav`` or a link planted in the input folder cannot read other
    files. The message shows the value as given, not the server's folders."""
    root = Path(os.path.realpath(folder))
    real = Path(os.path.realpath(os.path.join(folder, relative)))
    if not real.is_relative_to(root):
        raise InvalidInputError(
            f"{name}: {relative!r} leads outside the folder it was picked from; only files inside that folder can be "
            "used. Pick a file from the list, or upload it."
        )
    return real
