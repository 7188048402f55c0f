"""Peak memory of loading an SD1.5-size AVSyncD motion module (309.8 M parameters) as fp16 from an fp32 file.

Writes (once, into --workdir) the motion module with random fp32 weights at SD1.5 size (about 1.24 GB) twice:
as a safetensors file (ours; diffusers' ``save_pretrained`` writes the same format, so official folders load
the same way) and as a torch ``.bin`` (``diffusion_pytorch_model.bin`` of older diffusers versions). Then
measures in fresh subprocesses the peak resident memory (``ru_maxrss``, which counts the pages of a
memory-mapped file that were read) above the process's baseline:

  baseline   import torch + avsync_core, nothing else
  fp16       load_motion_module(safetensors, dtype=float16): what the ComfyUI loader does for an fp16 UNet
  fp32       load_motion_module(safetensors): the file's own dtype, for comparison
  fp16-bin   load_motion_module(.bin, dtype=float16): a torch .bin file

Goal: the fp16 load costs at most the fp16 module plus 10 %.
Usage: python benchmarks/motion_load_memory.py [--workdir DIR] [--keep]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peak_memory import files_in, measure_modes, peak_mb, print_peaks  # noqa: E402
from peak_memory import parser as benchmark_parser  # noqa: E402

SAFETENSORS = "motion_sd15_fp32.safetensors"
BIN = "motion_sd15_fp32.bin"
MODES = {"fp16": (SAFETENSORS, "float16"), "fp32": (SAFETENSORS, "float32"), "fp16-bin": (BIN, "float16")}


def _measure(mode: str, workdir: Path) -> None:
    import torch

    from avsync_core.model.motion_files import load_motion_module

    result = {"mode": mode, "module_mb": 0.0}
    t0 = time.perf_counter()
    if mode != "baseline":
        name, dtype = MODES[mode]
        motion, _ = load_motion_module(workdir / name, dtype=getattr(torch, dtype))
        result["module_mb"] = sum(t.numel() * t.element_size() for t in motion.state_dict().values()) / 2**20
    print(json.dumps({**result, "peak_mb": peak_mb(), "seconds": time.perf_counter() - t0}))


def _write(workdir: Path) -> None:
    import torch

    from avsync_core.model.motion_files import save_motion_module
    from avsync_core.model.motion_module import MotionModule

    torch.manual_seed(0)
    motion = MotionModule(zero_init=False)
    save_motion_module(workdir / SAFETENSORS, motion)
    torch.save(motion.state_dict(), workdir / BIN)


def main() -> None:
    args = benchmark_parser(__doc__).parse_args()
    if args.write:
        _write(args.workdir)
    elif args.measure:
        _measure(args.measure, args.workdir)
    else:
        with files_in(__file__, args, BIN) as workdir:
            print(f"files: {(workdir / SAFETENSORS).stat().st_size / 2**20:.0f} MiB each (fp32)")
            rows = measure_modes(__file__, workdir, ("baseline", *MODES))
        print_peaks(rows)
        base = rows["baseline"]["peak_mb"]
        for mode in MODES:
            module = rows[mode]["module_mb"]
            print(f"{mode}: module {module:.0f} MiB, {(rows[mode]['peak_mb'] - base) / module:.2f} x the module")
        ratio = (rows["fp16"]["peak_mb"] - base) / rows["fp16"]["module_mb"]
        print(f"goal (fp16 load <= 1.10 x the fp16 module): {'met' if ratio <= 1.10 else 'NOT met'} ({ratio:.2f})")


if __name__ == "__main__":
    main()
