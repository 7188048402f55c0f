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

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peak_memory import files_in, measure_modes, peak_mb, print_peaks  # noqa: E402
from peak_memory import parser as benchmark_parser  # noqa: E402

PTH = "imagebind_huge_shaped.pth"
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
    before = peak_mb()
    t0 = time.perf_counter()
    if mode == "baseline":
        pass
    elif mode == "naive":
        state = torch.load(workdir / PTH, map_location="cpu", weights_only=True)
        assert len(state) > 0
    else:
        if mode == "alone":
            model = _huge_model().requires_grad_(False)
        elif mode == "pth":
            model = ImageBindImageAudio.from_file(workdir / PTH)
        elif mode == "compact":
            model = ImageBindImageAudio.from_file(workdir / COMPACT)
        else:
            raise SystemExit(f"unknown mode {mode}")
        with torch.no_grad():
            sim = model.image_audio_similarity(torch.zeros(1, 3, 224, 224), null_melspectrogram(1))
        assert torch.isfinite(sim).all()
    print(
        json.dumps({"mode": mode, "import_peak_mb": before, "peak_mb": peak_mb(), "seconds": time.perf_counter() - t0})
    )


def _write_checkpoints(workdir: Path, other_gb: float) -> None:
    import torch

    torch.manual_seed(0)
    model = _huge_model()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.02)
    branches = {**model.vision.imagebind_state_dict(), **model.audio.state_dict_in_layout("imagebind")}
    # Stand-ins for the text/depth/thermal/imu branches (64 MiB tensors), before the others as in the real file.
    chunk = 16 * 1024 * 1024  # float32 elements = 64 MiB
    others = {
        f"modality_trunks.text.blocks.{i}.mlp.fc1.weight": torch.zeros(chunk // 1024, 1024)
        for i in range(max(0, round(other_gb * 1024 / 64)))
    }
    torch.save({**others, **branches}, workdir / PTH)
    model.save_safetensors(workdir / COMPACT)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--other-gb", type=float, default=1.6, help="size of the dummy tensors of the other branches")
    args = parser.parse_args()
    if args.write:
        _write_checkpoints(args.workdir, args.other_gb)
    elif args.measure:
        _measure(args.measure, args.workdir)
    else:
        with files_in(__file__, args, PTH, "--other-gb", str(args.other_gb)) as workdir:
            print(
                f"checkpoint: {(workdir / PTH).stat().st_size / 2**30:.2f} GiB, compact vision+audio file: "
                f"{(workdir / COMPACT).stat().st_size / 2**30:.2f} GiB"
            )
            print_peaks(measure_modes(__file__, workdir, ("baseline", "alone", "pth", "compact", "naive")))


if __name__ == "__main__":
    main()
