"""ComfyUI entry point of the AVSync pack (AVSyncD: animate a still image in time with a sound).

ComfyUI imports this folder as a package and reads ``NODE_CLASS_MAPPINGS``. Imported anywhere else (a test, a
training script, a plain ``import``), it exports empty mappings instead of failing: the library itself lives in
``avsync_core`` and never needs ComfyUI.
"""

import importlib.util

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
WEB_DIRECTORY = "./web"  # the page's part: upload button and player on AVSync Load Audio

if __package__ and importlib.util.find_spec("comfy") is not None:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
