"""AVSyncD: audio-synchronised image animation (Zhang et al., ECCV 2024), host-independent library.

Nothing in this package imports ComfyUI; the ComfyUI nodes in ``nodes/`` are thin adapters over it.
"""

from .errors import AudioError, AVSyncError, CheckpointError, InvalidInputError

__version__ = "0.1.0"

__all__ = ["AVSyncError", "AudioError", "CheckpointError", "InvalidInputError", "__version__"]
