"""FID features: pytorch-fid's FID InceptionV3 (the TensorFlow FID network ported to PyTorch), as the official
evaluation runs it.

The network is torchvision's ``Inception3(num_classes=1008, aux_logits=False)`` with pytorch-fid's FID blocks
(``FIDInceptionA/C/E_1/E_2``, from the ``pytorch-fid`` package), cut after Mixed_7c and its global average pool:
2048 features per image. The weights are pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (566 tensors under
torchvision's names), read from a file the user supplies; nothing is downloaded.

Official preprocessing (ASVA ``compute_fid.py``): frames in [0, 1] are resized to **229**x229 (not 299) with
antialiased bicubic, ignoring the aspect ratio, then ``x * 2 - 1`` without clamping the bicubic overshoot. The
official InceptionV3 wrapper has no resize_input / normalize_input step, so the network sees exactly that.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision import transforms

from ..checkpoints import load_strict, read_state_dict
from ..errors import CheckpointError, InvalidInputError

FID_IMAGE_SIZE = 229
FID_FEATURES = 2048
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_SOURCE = (
    f"pytorch-fid's FID Inception weights {FID_WEIGHTS_NAME} (the 'fid_weights' release of github.com/mseitzer/"
    "pytorch-fid)"
)
_BLOCKS = (
    ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1"),
    ("Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2"),
    ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"),
    ("Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"),
)


def preprocess_fid(images: torch.Tensor) -> torch.Tensor:
    """(n, 3, h, w) in [0, 1] -> (n, 3, 229, 229) in about [-1, 1], the official transform."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InvalidInputError(f"FID takes RGB images shaped (n, 3, height, width) in [0, 1], got {shape}.")
    resize = transforms.Compose(
        [
            transforms.Resize(
                (FID_IMAGE_SIZE, FID_IMAGE_SIZE), interpolation=transforms.InterpolationMode.BICUBIC, antialias=True
            ),
            transforms.CenterCrop(FID_IMAGE_SIZE),
        ]
    )
    return resize(images.float().contiguous()) * 2 - 1


def _fid_inception() -> nn.Module:
    """pytorch-fid's ``fid_inception_v3`` architecture, without its weight download."""
    try:
        from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2
    except ImportError:
        raise InvalidInputError(
            "FID needs the pytorch-fid package for its Inception architecture: pip install 'pytorch-fid>=0.3'."
        ) from None
    from torchvision.models.inception import Inception3

    net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


class FIDInception(nn.Module):
    """Preprocessed images (n, 3, 229, 229) -> block outputs; :meth:`features` gives the 2048-d FID features.

    ``net`` holds the whole network (``fc`` included), so its state dict is the weight file's, key for key.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = _fid_inception()  # its maxpool1/maxpool2 (3x3, stride 2) and global avgpool are the FID ones
        self.requires_grad_(False).eval()

    @property
    def device(self) -> torch.device:
        return self.net.Conv2d_1a_3x3.conv.weight.device

    def blocks(self, x: torch.Tensor, last: int = 3) -> list[torch.Tensor]:
        """The outputs of blocks 0..last (64, 192, 768 channels, then the pooled 2048-d features (n, 2048))."""
        out = []
        for index, names in enumerate(_BLOCKS[: last + 1]):
            for name in names:
                x = getattr(self.net, name)(x)
            out.append(x.flatten(1) if index == 3 else x)
        return out

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Frames (n, 3, h, w) in [0, 1] -> (n, 2048) FID features."""
        weight = self.net.Conv2d_1a_3x3.conv.weight
        return self.blocks(preprocess_fid(images).to(weight.device, weight.dtype))[-1].float()

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> FIDInception:
        """pytorch-fid's FID Inception weights (a .pth state dict, or the same tensors in a .safetensors)."""
        p = Path(os.fspath(path))
        if not p.is_file():
            raise CheckpointError(f"FID Inception weights not found: {p}. FID needs {FID_WEIGHTS_SOURCE}.")
        with torch.device("meta"):
            model = cls()
        state = {k: v.float() if v.is_floating_point() else v for k, v in read_state_dict(p).items()}
        load_strict(
            model.net,
            state,
            str(p),
            "pytorch-fid's FID InceptionV3 weights (566 tensors named like Conv2d_1a_3x3.conv.weight, "
            "Mixed_7c.branch_pool.bn.running_var, fc.weight (1008, 2048))",
            hint=f"FID needs {FID_WEIGHTS_SOURCE}.",
        )
        return model.requires_grad_(False).eval()
