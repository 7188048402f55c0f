"""Pictures nodes show in the page (audio windows, context windows, sync plot): saved to the temp folder like core
Preview Image."""

from __future__ import annotations

import numpy as np
import torch

from ..avsync_core.audio import AudioCondition, Waveform
from ..avsync_core.audio.preview import render_frame_preview
from ..avsync_core.sampling.context_preview import render_context_preview


def frame_preview_image(waveform: Waveform, condition: AudioCondition) -> torch.Tensor:
    """(1, H, W, 3) float IMAGE of what each frame hears (avsync_core.audio.preview)."""
    return _image(
        render_frame_preview(
            waveform, condition.windows, condition.frames, condition.fps, condition.start_tokens is not None
        )
    )


def context_preview_image(
    audio: AudioCondition, windows: list[list[int]], fuse: str, overlap: int, note: str = ""
) -> torch.Tensor:
    """(1, H, W, 3) float IMAGE of a context-window schedule (avsync_core.sampling.context_preview)."""
    return _image(render_context_preview(audio, windows, fuse, overlap, note))


def _image(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 pixels as a (1, H, W, 3) float IMAGE."""
    return torch.from_numpy(pixels.copy()).float().div(255.0).unsqueeze(0)


def save_preview(images: torch.Tensor, prefix: str = "AVSyncAudioPreview") -> dict:
    """The node's ``ui`` value: the images written to the temp folder by core Preview Image's own saver."""
    import nodes as comfy_nodes  # ComfyUI's nodes.py (this package is not top-level, so no clash)

    return comfy_nodes.PreviewImage().save_images(images, filename_prefix=prefix)["ui"]
