"""Which methods and class attributes of ComfyUI's objects the pack's nodes read while they run.

The host inventory (``nodes/compat.py``) must list every piece of ComfyUI the pack relies on. A static scan sees
module-level names (``comfy.samplers.KSampler``) but not calls on objects (``patched.add_object_patch``,
``model_sampling.timestep``); this recorder sees those: during a run, every ComfyUI class records the attribute
reads made from ``nodes/`` on its instances, and each read is named after the class that defines the attribute.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

from comfy_host import _COMFY_TOP_LEVEL

NODES_DIR = str(Path(__file__).resolve().parents[1] / "nodes") + "/"


def _is_host(module_name: str) -> bool:
    return module_name.split(".")[0] in _COMFY_TOP_LEVEL


# torch modules the nodes reach into (the model and its noise schedule); the network's layers are left alone,
# since recording every read inside a forward pass would make sampling a hundred times slower.
MODULE_HOSTS = ("comfy.model_base", "comfy.model_sampling")


def _host_classes() -> list[type]:
    import torch

    classes = []
    for name, module in list(sys.modules.items()):
        if module is None or not _is_host(name):
            continue
        for obj in list(vars(module).values()):
            if not inspect.isclass(obj) or obj.__module__ != name or obj in classes:
                continue
            if issubclass(obj, torch.nn.Module) and name not in MODULE_HOSTS:
                continue
            classes.append(obj)
    return classes


def defining_path(cls: type, name: str) -> str | None:
    """``module.Class.name`` of the host class whose body defines ``name`` (None: an instance attribute, or not
    defined by the host)."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return f"{klass.__module__}.{klass.__qualname__}.{name}" if _is_host(klass.__module__) else None
    return None


@contextlib.contextmanager
def host_reads_from_nodes() -> Iterator[set[tuple[type, str]]]:
    """Yields the set that fills with (instance's class, attribute name) for every read made in ``nodes/``."""
    seen: set[tuple[type, str]] = set()
    patched = []
    for cls in _host_classes():
        own = cls.__dict__.get("__getattribute__")
        original = cls.__getattribute__

        def getattribute(self, name, _original=original):
            if not name.startswith("__") and sys._getframe(1).f_code.co_filename.startswith(NODES_DIR):
                if name not in getattr(self, "__dict__", {}):  # an instance's own data is not the host's API
                    seen.add((type(self), name))
            return _original(self, name)

        try:
            cls.__getattribute__ = getattribute
        except TypeError:  # a class that takes no new attributes (an extension type): nothing to record
            continue
        patched.append((cls, own))
    try:
        yield seen
    finally:
        for cls, own in reversed(patched):
            if own is None:
                del cls.__getattribute__
            else:
                cls.__getattribute__ = own
