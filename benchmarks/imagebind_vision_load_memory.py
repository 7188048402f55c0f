"""Peak memory of loading ImageBind's vision + audio branches (AlignSync) from an imagebind_huge.pth-shaped file.

Writes (once, into --workdir) a .pth with random vision (ViT-H/14, 632 M params) and audio (86 M) branches at
the real imagebind_huge sizes under ImageBind's key names, plus dummy tensors standing in for the text, depth,
thermal and IMU branches, and the compact vision+audio safetensors file. Each measurement runs in a fresh
subprocess and reports its peak resident memory (ru_maxrss) after one image and one mel went through, so every
weight has really been read:

  baseline   import torch + avsync_core.evaluation, nothing else
  alone      both branches built in memory with random weights (the floor: their own size)
  pth        ImageBindImageAudio.from_file(huge-shaped .pth): only the vision and audio tensors are read
  compact    ImageBindImageAudio.from_file(compact vision+audio .safetensors)
  naive      torch.load of the whole huge-shaped .pth (what loading every branch pays)

Usage: python benchmarks/imagebind_vision_load_memory.py [--workdir DIR] [--other-gb 1.6] [--keep]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peak_memory import HUGE_PTH, checkpoint_benchmark, measure_checkpoint_load, stand_ins  # noqa: E402

COMPACT = "imagebind_vision_audio.safetensors"


def _huge_model():
    from avsync_core.audio import ImageBindAudioConfig, ImageBindAudioEncoder
    from avsync_core.evaluation import ImageBindImageAudio, ImageBindVisionConfig, ImageBindVisionEncoder

    return ImageBindImageAudio(
        ImageBindVisionEncoder(ImageBindVisionConfig()), ImageBindAudioEncoder(ImageBindAudioConfig())
    )


def _measure(mode: str, workdir: Path) -> None:
    import torch

    from avsync_core.audio import null_melspectrogram
    from avsync_core.evaluation import ImageBindImageAudio

    torch.set_num_threads(2)

    def use(model: ImageBindImageAudio) -> None:
        assert torch.isfinite(model.image_audio_similarity(torch.zeros(1, 3, 224, 224), null_melspectrogram(1))).all()

    loaders = {
        "alone": lambda: _huge_model().requires_grad_(False),
        "pth": lambda: ImageBindImageAudio.from_file(workdir / HUGE_PTH),
        "compact": lambda: ImageBindImageAudio.from_file(workdir / COMPACT),
    }
    measure_checkpoint_load(mode, workdir, loaders, use)


def _write_checkpoints(workdir: Path, other_gb: float) -> None:
    import torch

    torch.manual_seed(0)
    model = _huge_model()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.02)
    branches = {**model.vision.imagebind_state_dict(), **model.audio.state_dict_in_layout("imagebind")}
    # The text/depth/thermal/imu stand-ins are written before the others, as in the real file.
    torch.save({**stand_ins("text", other_gb), **branches}, workdir / HUGE_PTH)
    model.save_safetensors(workdir / COMPACT)


def _describe(workdir: Path) -> str:
    return (
        f"checkpoint: {(workdir / HUGE_PTH).stat().st_size / 2**30:.2f} GiB, compact vision+audio file: "
        f"{(workdir / COMPACT).stat().st_size / 2**30:.2f} GiB"
    )


if __name__ == "__main__":
    checkpoint_benchmark(__file__, __doc__, 1.6, _write_checkpoints, _measure, _describe)
