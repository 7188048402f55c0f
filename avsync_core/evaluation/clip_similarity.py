"""IA and IT: the paper's image-audio and image-text similarities, ImageBind cosines per frame.

As the official ``compute_clip_consistency`` + ``CLIPModel``: every frame goes through the metrics' 224 transform
(CLIP normalisation) and ImageBind's vision branch (unit length); the clip's mel through the audio branch and its
class name (the raw name, no prompt template) through the text branch, each divided by its own logit scale, so
both similarities are cosines. A clip's IA / IT is the mean over frames 1..f-1: frame 0 is the conditioning image,
not generated, so the official evaluation leaves it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError
from .imagebind import ImageBindImageAudio
from .imagebind_text import ImageBindTextEncoder
from .preprocess import IMAGE_SIZE, check_mel, preprocess_video


@dataclass
class FrameSimilarities:
    """Per-frame cosines (b, f); None where that modality was not asked for."""

    ia: torch.Tensor | None
    it: torch.Tensor | None

    @staticmethod
    def per_clip(sims: torch.Tensor) -> torch.Tensor:
        """(b, f) -> (b,): the mean over the generated frames 1..f-1, as the official evaluation."""
        return sims[:, 1:].mean(dim=1)


@torch.no_grad()
def frame_similarities(
    image_audio: ImageBindImageAudio,
    video: torch.Tensor,
    mel: torch.Tensor | None = None,
    texts: Sequence[str] | None = None,
    text_encoder: ImageBindTextEncoder | None = None,
) -> FrameSimilarities:
    """Clips (b, 3, f, h, w) in [0, 1] against their mels (b, 1, 128, 204) and/or class names (b strings)."""
    b, _, f = video.shape[:3]
    frames = preprocess_video(video).permute(0, 2, 1, 3, 4).reshape(b * f, 3, IMAGE_SIZE, IMAGE_SIZE)
    images = image_audio.encode_image(frames).reshape(b, f, -1)
    ia = it = None
    if mel is not None:
        check_mel(mel)
        if mel.shape[0] != b:
            raise InvalidInputError(f"{mel.shape[0]} mels for {b} clips; IA needs one mel per clip.")
        audio = image_audio.encode_audio(mel.to(image_audio.device)).float()
        ia = (images * audio[:, None]).sum(dim=-1).cpu()
    if texts is not None:
        if text_encoder is None:
            raise InvalidInputError("IT needs ImageBind's text branch (imagebind_huge.pth).")
        if len(texts) != b:
            raise InvalidInputError(f"{len(texts)} texts for {b} clips; IT needs one class name per clip.")
        text = text_encoder.encode(texts).to(images.device).float()
        it = (images * text[:, None]).sum(dim=-1).cpu()
    return FrameSimilarities(ia, it)
