"""FVD features: a TorchScript video detector called the way the official evaluation calls I3D.

The official code loads ``pretrained/i3d_torchscript.pt`` (the StyleGAN-V / DIGAN export of the Kinetics-400
I3D) with ``torch.jit.load`` and calls it as ``net(videos, rescale=False, resize=False, return_features=True)``
on clips (b, 3, t, 224, 224) in [-1, 1]: every frame is resized to 224x224 with antialiased bicubic (the aspect
ratio is not kept), then ``x * 2 - 1`` without clamping. All 12 frames are used (unlike FID, frame 0 is kept).
Any TorchScript module with that signature loads the same way; nothing is downloaded.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import torch
from torchvision import transforms

from ..errors import CheckpointError, InvalidInputError

FVD_IMAGE_SIZE = 224
I3D_NAME = "i3d_torchscript.pt"
I3D_SOURCE = f"the I3D TorchScript file {I3D_NAME} that the official ASVA README links for FVD"


def load_detector(path: str | os.PathLike, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    """``torch.jit.load`` of the detector file, in eval mode, as the official ``load_i3d_pretrained``."""
    p = Path(os.fspath(path))
    if not p.is_file():
        raise CheckpointError(f"FVD detector not found: {p}. FVD needs {I3D_SOURCE}.")
    if not zipfile.is_zipfile(p):
        raise CheckpointError(f"{p} is not a TorchScript file; FVD needs {I3D_SOURCE} (a torch.jit.save archive).")
    try:
        with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript, but the I3D file is TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            detector = torch.jit.load(str(p), map_location=device)
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{p} is not a TorchScript module ({reason}); FVD needs {I3D_SOURCE} (a torch.jit.save archive)."
        ) from None
    return detector.eval()


def preprocess_fvd(videos: torch.Tensor) -> torch.Tensor:
    """(b, 3, t, h, w) in [0, 1] -> (b, 3, t, 224, 224) in about [-1, 1], the official transform."""
    if not isinstance(videos, torch.Tensor) or videos.ndim != 5 or videos.shape[1] != 3:
        shape = tuple(videos.shape) if isinstance(videos, torch.Tensor) else type(videos).__name__
        raise InvalidInputError(f"FVD takes RGB clips shaped (batch, 3, frames, height, width), got {shape}.")
    b, c, t, h, w = videos.shape
    resize = transforms.Compose(
        [
            transforms.Resize(
                (FVD_IMAGE_SIZE, FVD_IMAGE_SIZE), interpolation=transforms.InterpolationMode.BICUBIC, antialias=True
            ),
            transforms.CenterCrop(FVD_IMAGE_SIZE),
        ]
    )
    frames = resize(videos.float().permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)) * 2 - 1
    return frames.reshape(b, t, c, FVD_IMAGE_SIZE, FVD_IMAGE_SIZE).permute(0, 2, 1, 3, 4).contiguous()


@torch.no_grad()
def fvd_features(detector: torch.nn.Module, videos: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Clips (b, 3, t, h, w) in [0, 1] -> the detector's features (b, d), with the official keyword arguments."""
    x = preprocess_fvd(videos).to(device)
    try:
        features = detector(x, rescale=False, resize=False, return_features=True)
    except (RuntimeError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            "The FVD detector does not take the official call detector(videos (b, 3, t, 224, 224), rescale=False, "
            f"resize=False, return_features=True) ({reason}); use {I3D_SOURCE}."
        ) from None
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] != x.shape[0]:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise CheckpointError(f"The FVD detector returned {shape}, not features (batch, dim); use {I3D_SOURCE}.")
    return features.float().cpu()
