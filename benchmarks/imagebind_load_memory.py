"""Peak memory of loading ImageBind's audio branch from a checkpoint shaped like imagebind_huge.pth.

Writes (once, into --workdir) a .pth with random audio weights at the real imagebind_huge sizes (86 M params)
plus large dummy tensors standing in for the other modalities, and the compact audio-only safetensors file.
Each measurement then runs in a fresh subprocess and reports the process's peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after one forward pass, so every weight has really been read:

  baseline   import torch + avsync_core.audio, nothing else
  alone      the audio branch built in memory with random weights (the floor: its own size)
  pth        ImageBindAudioEncoder.from_imagebind_checkpoint(huge-shaped .pth)
  compact    ImageBindAudioEncoder.from_safetensors(compact file)
  naive      torch.load of the whole huge-shaped .pth (what a loader that reads everything pays)

Usage: python benchmarks/imagebind_load_memory.py [--workdir DIR] [--other-gb 4.1] [--keep]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peak_memory import HUGE_PTH, checkpoint_benchmark, measure_checkpoint_load, stand_ins  # noqa: E402

COMPACT = "imagebind_audio.safetensors"


def _measure(mode: str, workdir: Path) -> None:
    import torch

    from avsync_core.audio import ImageBindAudioConfig, ImageBindAudioEncoder, null_melspectrogram

    torch.set_num_threads(1)

    def use(encoder: ImageBindAudioEncoder) -> None:
        assert torch.isfinite(encoder.encode_tokens(null_melspectrogram(1))).all()

    loaders = {
        "alone": lambda: ImageBindAudioEncoder(ImageBindAudioConfig()),
        "pth": lambda: ImageBindAudioEncoder.from_imagebind_checkpoint(workdir / HUGE_PTH),
        "compact": lambda: ImageBindAudioEncoder.from_safetensors(workdir / COMPACT),
    }
    measure_checkpoint_load(mode, workdir, loaders, use)


def _write_checkpoints(workdir: Path, other_gb: float) -> None:
    import torch

    from avsync_core.audio import ImageBindAudioConfig, ImageBindAudioEncoder

    torch.manual_seed(0)
    encoder = ImageBindAudioEncoder(ImageBindAudioConfig())
    for p in encoder.parameters():
        torch.nn.init.normal_(p, std=0.02)
    state = {k: v.clone() for k, v in encoder.state_dict_in_layout("imagebind").items()}
    # The vision/text/depth/thermal/imu stand-ins are written before the audio keys, as in the real file.
    torch.save({**stand_ins("vision", other_gb), **state}, workdir / HUGE_PTH)
    encoder.save_safetensors(workdir / COMPACT)


def _describe(workdir: Path) -> str:
    return (
        f"checkpoint: {(workdir / HUGE_PTH).stat().st_size / 2**30:.2f} GiB, compact audio file: "
        f"{(workdir / COMPACT).stat().st_size / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    checkpoint_benchmark(__file__, __doc__, 4.1, _write_checkpoints, _measure, _describe)
