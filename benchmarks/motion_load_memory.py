"""Peak memory of loading an SD1.5-size AVSyncD motion module (309.8 M parameters) as fp16 from an fp32 file.

Writes (once, into --workdir) a motion-module file with random fp32 weights at SD1.5 size (about 1.24 GB), then
measures in fresh subprocesses the peak resident memory (``ru_maxrss``) above the process's baseline:

  baseline   import torch + avsync_core, nothing else
  fp16       load_motion_module(file, dtype=float16): what the ComfyUI loader does for an fp16 UNet
  fp32       load_motion_module(file): the file's own dtype, for comparison

Goal: the fp16 load costs at most the fp16 module plus 10 %.
Usage: python benchmarks/motion_load_memory.py [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _measure(mode: str, path: Path) -> None:
    import torch

    from avsync_core.motion_io import load_motion_module

    result = {"mode": mode, "baseline_mb": _peak_mb()}
    if mode != "baseline":
        motion, _ = load_motion_module(path, dtype={"fp16": torch.float16, "fp32": torch.float32}[mode])
        result["module_mb"] = sum(t.numel() * t.element_size() for t in motion.state_dict().values()) / 2**20
    result["peak_mb"] = _peak_mb()
    print(json.dumps(result))


def _write(path: Path) -> None:
    import torch

    from avsync_core.motion_io import save_motion_module
    from avsync_core.motion_module import MotionModule

    torch.manual_seed(0)
    save_motion_module(path, MotionModule(zero_init=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the written file in --workdir")
    parser.add_argument("--measure", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        _write(args.write)
        return
    if args.measure:
        _measure(args.measure[0], Path(args.measure[1]))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="avsync_motion_mem_"))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "motion_sd15_fp32.safetensors"
    try:
        if not path.is_file():  # in a subprocess: a child's peak RSS starts at its parent's, so this one stays small
            subprocess.run([sys.executable, __file__, "--write", str(path)], check=True)
        rows = {}
        for mode in ("baseline", "fp16", "fp32"):
            out = subprocess.run(
                [sys.executable, __file__, "--measure", mode, str(path)], check=True, capture_output=True, text=True
            )
            rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        base = rows["baseline"]["peak_mb"]
        print(f"file: {path.stat().st_size / 2**20:.0f} MiB (fp32)")
        for mode in ("fp16", "fp32"):
            row = rows[mode]
            extra = row["peak_mb"] - base
            print(
                f"{mode}: module {row['module_mb']:.0f} MiB, peak RSS above baseline {extra:.0f} MiB "
                f"({extra / row['module_mb']:.2f} x the module)"
            )
        ratio = (rows["fp16"]["peak_mb"] - base) / rows["fp16"]["module_mb"]
        print(f"goal (fp16 load <= 1.10 x the fp16 module): {'met' if ratio <= 1.10 else 'NOT met'} ({ratio:.2f})")
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
