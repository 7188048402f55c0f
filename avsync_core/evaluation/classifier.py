"""The AVSync classifier of the AVSyncD paper: does this sound belong to this motion at this moment?

The official evaluation (ASVA ``avsync/models``) scores a 2 s clip with a logit from three parts, kept here
with the official sizes and parameter names so the released weights load as they are:

* ``audio_encoder`` (``AudioConv2DNet``): a ResNet-style 2D conv net over the (1, 128, 204) ImageBind log-mel,
  global mean pooled to 512 features.
* ``video_encoder`` (``VideoR2Plus1DNet``): an R(2+1)D-18 (VMZ layout with a full 3D stem, not torchvision's
  ``r2plus1d_18``) over the (3, 12, 224, 224) CLIP-normalised frames, mean pooled to 512 features.
* ``head`` (``FCHead``): an MLP 1024 -> 512 -> 256 -> 1 on the concatenated embeddings.

The release is a folder ``.../modules/`` holding ``audio_encoder/``, ``video_encoder/`` and ``head/``, each a
diffusers ``config.json`` + ``diffusion_pytorch_model.bin``. Those pickles are read with ``weights_only``; the
same weights can be written once into a single safetensors file (``python -m avsync_core.evaluation.classifier
SRC DST``), which then loads without any pickle.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import (
    find_weights,
    load_strict,
    read_json,
    read_safetensors_metadata,
    read_state_dict,
    write_safetensors_atomic,
)
from ..errors import CheckpointError, preview

FORMAT_NAME = "avsync.sync_classifier"
FORMAT_VERSION = "1"
PARTS = ("audio_encoder", "video_encoder", "head")
_CLASS_NAMES = {"audio_encoder": "AudioConv2DNet", "video_encoder": "VideoR2Plus1DNet", "head": "FCHead"}


class Basic2DBlock(nn.Module):
    """Two 3x3 conv-BN-ReLU layers, no residual (the official audio block)."""

    def __init__(self, in_planes: int, out_planes: int, stride: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, padding=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))


class AudioConv2DNet(nn.Module):
    """(b, 1, 128, 204) log-mel -> (b, 512)."""

    out_dim = 512

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(1, 64, kernel_size=7, padding=3, stride=2, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        self.block1 = Basic2DBlock(64, 64, stride=(2, 2))
        self.block2 = Basic2DBlock(64, 128, stride=(2, 2))
        self.block3 = Basic2DBlock(128, 256, stride=(2, 2))
        self.block4 = Basic2DBlock(256, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(self.block2(self.block1(self.conv1(x)))))
        return x.mean(dim=(2, 3))


class BasicR2P1DBlock(nn.Module):
    """(2+1)D residual block: 1x3x3 spatial then 3x1x1 temporal convs, twice; 1x1x1 projection when shapes change."""

    def __init__(self, in_planes: int, out_planes: int, stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__()
        spatial_stride = (1, stride[1], stride[2])
        temporal_stride = (stride[0], 1, 1)
        self.spt_conv1 = nn.Conv3d(
            in_planes, out_planes, (1, 3, 3), stride=spatial_stride, padding=(0, 1, 1), bias=False
        )
        self.spt_bn1 = nn.BatchNorm3d(out_planes)
        self.tmp_conv1 = nn.Conv3d(
            out_planes, out_planes, (3, 1, 1), stride=temporal_stride, padding=(1, 0, 0), bias=False
        )
        self.tmp_bn1 = nn.BatchNorm3d(out_planes)
        self.spt_conv2 = nn.Conv3d(out_planes, out_planes, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.spt_bn2 = nn.BatchNorm3d(out_planes)
        self.tmp_conv2 = nn.Conv3d(out_planes, out_planes, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.out_bn = nn.BatchNorm3d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.res = in_planes != out_planes or any(s != 1 for s in stride)
        if self.res:
            self.res_conv = nn.Conv3d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.tmp_conv1(self.relu(self.spt_bn1(self.spt_conv1(x))))
        main = self.relu(self.tmp_bn1(main))
        main = self.tmp_conv2(self.relu(self.spt_bn2(self.spt_conv2(main))))
        residual = self.res_conv(x) if self.res else x
        return self.relu(self.out_bn(main + residual))


class VideoR2Plus1DNet(nn.Module):
    """(b, 3, 12, 224, 224) CLIP-normalised frames -> (b, 512)."""

    out_dim = 512

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv3d(3, 64, kernel_size=(3, 7, 7), padding=(1, 3, 3), stride=(1, 2, 2), bias=False),
            nn.BatchNorm3d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.conv2x = nn.Sequential(BasicR2P1DBlock(64, 64), BasicR2P1DBlock(64, 64))
        self.conv3x = nn.Sequential(BasicR2P1DBlock(64, 128, stride=(2, 2, 2)), BasicR2P1DBlock(128, 128))
        self.conv4x = nn.Sequential(BasicR2P1DBlock(128, 256, stride=(2, 2, 2)), BasicR2P1DBlock(256, 256))
        self.conv5x = nn.Sequential(BasicR2P1DBlock(256, 512, stride=(2, 2, 2)), BasicR2P1DBlock(512, 512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv5x(self.conv4x(self.conv3x(self.conv2x(self.conv1(x)))))
        return x.mean(dim=(2, 3, 4))


class FCHead(nn.Module):
    """MLP on [audio, video] embeddings -> logits (b, out_dim); dropout is inactive in evaluation."""

    def __init__(self, dim: int = 512, out_dim: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.config = {"dim": dim, "out_dim": out_dim, "dropout": dropout}
        self.fc = nn.Sequential(
            nn.Linear(dim * 2, dim),
            nn.Dropout(dropout),
            nn.ReLU(inplace=True),
            nn.Linear(dim, dim // 2),
            nn.Dropout(dropout),
            nn.ReLU(inplace=True),
            nn.Linear(dim // 2, out_dim),
        )

    def forward(self, audio_embeddings: torch.Tensor, video_embeddings: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([audio_embeddings, video_embeddings], dim=1))


class AVSyncClassifier(nn.Module):
    """mel (b, 1, 128, 204) + preprocessed video (b, 3, 12, 224, 224) -> synchronisation logit (b,)."""

    def __init__(self, audio_encoder: AudioConv2DNet, video_encoder: VideoR2Plus1DNet, head: FCHead) -> None:
        super().__init__()
        self.audio_encoder = audio_encoder
        self.video_encoder = video_encoder
        self.head = head

    @classmethod
    def build(cls, head_config: Mapping | None = None) -> AVSyncClassifier:
        """The official architecture with PyTorch's default (random) initialisation."""
        return cls(AudioConv2DNet(), VideoR2Plus1DNet(), FCHead(**(head_config or {}))).eval()

    @property
    def device(self) -> torch.device:
        return self.head.fc[0].weight.device

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        return self.score_embeddings(self.audio_encoder(audio), self.video_encoder(video))

    def score_embeddings(self, audio_embeddings: torch.Tensor, video_embeddings: torch.Tensor) -> torch.Tensor:
        """The logit from already computed embeddings, so one clip's embedding can be paired with several others."""
        return self.head(audio_embeddings, video_embeddings)[:, 0]

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def from_state_dicts(
        cls, parts: Mapping[str, Mapping[str, torch.Tensor]], head_config: Mapping | None, source: str
    ) -> AVSyncClassifier:
        """Build from one state dict per part (official names, without the part prefix)."""
        try:
            head = {k: head_config[k] for k in ("dim", "out_dim", "dropout") if k in head_config} if head_config else {}
            with torch.device("meta"):
                model = cls.build(head)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{source}: the head config {dict(head_config or {})} does not fit ({exc})."
            ) from None
        for name in PARTS:
            state = {k: _owned(v) for k, v in parts[name].items()}
            load_strict(getattr(model, name), state, source, f"the AVSync classifier's {name} ({_CLASS_NAMES[name]})")
        return model.requires_grad_(False).eval()

    @classmethod
    def from_official_folder(cls, path: str | os.PathLike) -> AVSyncClassifier:
        """The released ``.../modules/`` folder (or a folder that contains ``modules/``)."""
        root = Path(os.fspath(path))
        if not root.is_dir():
            raise CheckpointError(f"Classifier folder not found: {root}")
        if not (root / "audio_encoder").is_dir() and (root / "modules").is_dir():
            root = root / "modules"
        parts: dict[str, dict[str, torch.Tensor]] = {}
        configs: dict[str, dict] = {}
        for name in PARTS:
            folder = root / name
            config_file = folder / "config.json"
            if not config_file.is_file():
                raise CheckpointError(
                    f"{root} is not an AVSync classifier folder: {name}/config.json is missing (the release has "
                    "audio_encoder/, video_encoder/ and head/, each with config.json and diffusion_pytorch_model.bin)."
                )
            configs[name] = read_json(config_file)
            class_name = configs[name].get("_class_name")
            if class_name not in (None, _CLASS_NAMES[name]):
                raise CheckpointError(
                    f"{folder} holds a {class_name}, not the AVSync classifier's {_CLASS_NAMES[name]}."
                )
            parts[name] = read_state_dict(find_weights(folder))
        return cls.from_state_dicts(parts, configs["head"], str(root))

    @classmethod
    def from_safetensors(cls, path: str | os.PathLike) -> AVSyncClassifier:
        """The single file written by :meth:`save_safetensors`."""
        p = Path(os.fspath(path))
        if not p.is_file():
            raise CheckpointError(f"Classifier file not found: {p}")
        metadata = read_safetensors_metadata(p)
        if metadata.get("format") != FORMAT_NAME:
            raise CheckpointError(
                f"{p} is not an AVSync classifier file (its metadata format is {metadata.get('format')!r}). "
                "Convert the released modules/ folder with: python -m avsync_core.evaluation.classifier "
                "path/to/modules avsync_classifier.safetensors"
            )
        if metadata.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{p} has classifier format version {metadata.get('format_version')!r}; this version reads "
                f"{FORMAT_VERSION}."
            )
        try:
            head_config = json.loads(metadata["head_config"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{p}: its head_config metadata is missing or broken ({exc}).") from None
        tensors = read_state_dict(p)
        parts = {
            name: {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")} for name in PARTS
        }
        stray = sorted(k for k in tensors if k.split(".", 1)[0] not in PARTS)
        if stray:
            raise CheckpointError(f"{p}: unexpected tensors outside the classifier's parts: {preview(stray)}.")
        return cls.from_state_dicts(parts, head_config, str(p))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> AVSyncClassifier:
        """Either source: the released folder or our safetensors file."""
        p = Path(os.fspath(path))
        if p.is_dir():
            return cls.from_official_folder(p)
        if not p.exists():
            raise CheckpointError(
                f"Classifier not found: {p}. Give the released modules/ folder (audio_encoder/, video_encoder/, "
                "head/) or a converted avsync_classifier.safetensors."
            )
        if p.suffix != ".safetensors":
            raise CheckpointError(f"{p} is neither the classifier's modules/ folder nor a converted .safetensors file.")
        return cls.from_safetensors(p)

    def save_safetensors(self, path: str | os.PathLike) -> None:
        """One file with every part (official names under the part prefix) and the head config; atomic."""
        tensors = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}
        metadata = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "head_config": json.dumps(self.head.config),
        }
        write_safetensors_atomic(Path(os.fspath(path)), tensors, metadata)


def _owned(tensor: torch.Tensor) -> torch.Tensor:
    """float32 in 64-byte aligned memory. safetensors hands tensors out at unaligned file offsets, where CPU
    kernels take another code path: the same weights would score differently in the last bit than from the
    released folder. The classifier is small, so the copy is cheap (for multi-GB files it would double the
    peak memory, which is why the shared reader does not copy)."""
    if tensor.dtype != torch.float32:
        return tensor.float()
    return tensor if tensor.data_ptr() % 64 == 0 else tensor.clone()


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (also read by the docs test)."""
    parser = argparse.ArgumentParser(prog="python -m avsync_core.evaluation.classifier", description=main.__doc__)
    parser.add_argument("source", help="the released modules/ folder (audio_encoder/, video_encoder/, head/)")
    parser.add_argument("output", help="where to write avsync_classifier.safetensors")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Convert the released classifier folder (modules/) into one safetensors file."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        AVSyncClassifier.from_file(args.source).save_safetensors(args.output)
    except CheckpointError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
