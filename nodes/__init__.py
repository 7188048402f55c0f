"""The pack's ComfyUI nodes (classic V1 API), thin adapters over ``avsync_core``.

The host is checked first (``compat``): on a ComfyUI that lacks a piece the pack needs, one line goes to the log
and no node is registered, rather than nodes that fail halfway through a graph.
"""

import logging

from .compat import host_problem

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

HOST_PROBLEM = host_problem()
if HOST_PROBLEM is None:
    from .mappings import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811
else:
    logging.getLogger(__name__).error(HOST_PROBLEM)

__all__ = ["HOST_PROBLEM", "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
