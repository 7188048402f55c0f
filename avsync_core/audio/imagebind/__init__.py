"""ImageBind's audio branch: the frozen encoder that turns a log-mel into AVSyncD's audio tokens.

``config`` holds its sizes, ``layouts`` the checkpoint layouts it loads from, ``model`` the network and its
loaders; ``python -m avsync_core.audio.imagebind SRC DST`` writes the compact audio-only file.
"""

from .config import AudioEncoderOutput, ImageBindAudioConfig
from .model import ImageBindAudioEncoder

__all__ = ["AudioEncoderOutput", "ImageBindAudioConfig", "ImageBindAudioEncoder"]
