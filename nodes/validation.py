"""VALIDATE_INPUTS helpers: the pack's cheap checks (avsync_core.inputs) turned into ComfyUI's answer.

ComfyUI runs VALIDATE_INPUTS when a prompt is queued, before anything executes, so what is refused here never
loads a model. For every input a VALIDATE_INPUTS names, ComfyUI skips its own min/max check, so those inputs are
checked here against the node's own INPUT_TYPES bounds (plus NaN, which ComfyUI's range check lets through).
"""

from __future__ import annotations

from collections.abc import Callable

from ..avsync_core.errors import AVSyncError
from ..avsync_core.inputs import check_number


def check_widgets(node: type, **values: object) -> None:
    """Each named value against its input's min/max in ``node.INPUT_TYPES()``, finite."""
    spec = node.INPUT_TYPES()
    inputs = {**spec.get("required", {}), **spec.get("optional", {})}
    for name, value in values.items():
        options = inputs[name][1] if len(inputs[name]) > 1 else {}
        check_number(name, value, options.get("min"), options.get("max"))


def verdict(*checks: Callable[[], object]) -> bool | str:
    """True when every check passes, else the first problem's message (what ComfyUI shows next to the input)."""
    try:
        for check in checks:
            check()
    except AVSyncError as err:
        return str(err)
    return True
