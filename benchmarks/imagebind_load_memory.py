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

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from peak_memory import files_in, measure_modes, peak_mb, print_peaks  # noqa: E402
from peak_memory import parser as benchmark_parser  # noqa: E402

PTH = "imagebind_huge_shaped.pth"
COMPACT = "imagebind_audio.safetensors"


def _measure(mode: str, workdir: Path) -> None:
    import torch

    from avsync_core.audio import ImageBindAudioConfig, ImageBindAudioEncoder, null_melspectrogram

    torch.set_num_threads(1)
    before = peak_mb()
    t0 = time.perf_counter()
    if mode == "baseline":
        pass
    elif mode == "naive":
        state = torch.load(workdir / PTH, map_location="cpu", weights_only=True)
        assert len(state) > 0
    else:
        if mode == "alone":
            encoder = ImageBindAudioEncoder(ImageBindAudioConfig())
        elif mode == "pth":
            encoder = ImageBindAudioEncoder.from_imagebind_checkpoint(workdir / PTH)
        elif mode == "compact":
            encoder = ImageBindAudioEncoder.from_safetensors(workdir / COMPACT)
        else:
            raise SystemExit(f"unknown mode {mode}")
        with torch.no_grad():
            tokens = encoder.encode_tokens(null_melspectrogram(1))
        assert torch.isfinite(tokens).all()
    print(
        json.dumps({"mode": mode, "import_peak_mb": before, "peak_mb": peak_mb(), "seconds": time.perf_counter() - t0})
    )


def _write_checkpoints(workdir: Path, other_gb: float) -> None:
    import torch

    from avsync_core.audio import ImageBindAudioConfig, ImageBindAudioEncoder

    torch.manual_seed(0)
    encoder = ImageBindAudioEncoder(ImageBindAudioConfig())
    for p in encoder.parameters():
        torch.nn.init.normal_(p, std=0.02)
    state = {k: v.clone() for k, v in encoder.state_dict_in_layout("imagebind").items()}
    # Stand-ins for the vision/text/depth/thermal/imu branches: 64 MiB tensors, written before the audio keys
    # as in the real file's modality order.
    others = {}
    chunk = 16 * 1024 * 1024  # float32 elements = 64 MiB
    for i in range(max(0, round(other_gb * 1024 / 64))):
        others[f"modality_trunks.vision.blocks.{i}.mlp.fc1.weight"] = torch.zeros(chunk // 1024, 1024)
    torch.save({**others, **state}, workdir / PTH)
    encoder.save_safetensors(workdir / COMPACT)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--other-gb", type=float, default=4.1, help="size of the dummy non-audio tensors")
    args = parser.parse_args()
    if args.write:
        _write_checkpoints(args.workdir, args.other_gb)
    elif args.measure:
        _measure(args.measure, args.workdir)
    else:
        with files_in(__file__, args, PTH, "--other-gb", str(args.other_gb)) as workdir:
            print(
                f"checkpoint: {(workdir / PTH).stat().st_size / 2**30:.2f} GiB, compact audio file: "
                f"{(workdir / COMPACT).stat().st_size / 2**20:.0f} MiB"
            )
            print_peaks(measure_modes(__file__, workdir, ("baseline", "alone", "pth", "compact", "naive")))


if __name__ == "__main__":
    main()
