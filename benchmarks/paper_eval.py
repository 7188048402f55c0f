"""Peak memory and speed of the paper's table (``python -m avsync_core.evaluate --metric fid fvd ia it``) on CPU.

Writes (once, into --workdir) a folder pair in the official layout: --videos ground-truth videos of 4 s in two
class folders and --clips-per-video generated 12-frame clips for each (30 by default), plus the weight files:
pytorch-fid's FID Inception at its real size (procedural weights), the golden FVD stand-in (the real I3D is
larger) and the golden tiny ImageBind with its text branch (imagebind_huge is 4.5 GB). Each mode runs in a fresh
process and prints the peak resident memory and the clips per second:

  baseline   import avsync_core's evaluation command, nothing else
  table      the whole command over the folder pair: decoding, FID, FVD, IA, IT (--metric fid fvd ia it)

Usage: python benchmarks/paper_eval.py [--workdir DIR] [--videos 10] [--clips-per-video 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from peak_memory import files_in, measure_modes, parser, peak_mb, print_peaks  # noqa: E402

INCEPTION = "fid_inception.pth"
IMAGEBIND = "imagebind_tiny_text.safetensors"
CLASSES = ("birds", "drums")
METRICS = ("fid", "fvd", "ia", "it")


def _write(workdir: Path, videos: int, clips: int) -> None:
    import torch

    from avsync_core.audio import Waveform
    from avsync_core.evaluation.clips import clip_starts
    from avsync_core.video import write_video
    from eval_models import write_fid_inception, write_tiny_imagebind_with_text

    g = torch.Generator().manual_seed(0)
    names = [f"{CLASSES[i % 2]}/video_{i:02d}.mp4" for i in range(videos)]
    for name in names:
        frames = torch.rand(24, 3, 256, 256, generator=g)
        write_video(workdir / "gt" / name, frames, 6.0, Waveform(0.1 * torch.randn(1, 64000, generator=g), 16000))
        for k, start in enumerate(clip_starts(4.0, clips)):
            first = round(start * 6)
            clip = (frames[first : first + 12] + 0.1 * torch.rand(12, 3, 256, 256, generator=g)).clamp(0, 1)
            sound = Waveform(0.1 * torch.randn(1, 32000, generator=g), 16000)
            write_video(workdir / "gen" / name.replace(".mp4", f"_clip-{k:02d}.mp4"), clip, 6.0, sound)
    (workdir / "list.txt").write_text("\n".join(names) + "\n")
    write_fid_inception(workdir / INCEPTION)
    write_tiny_imagebind_with_text(workdir / IMAGEBIND)


def _measure(mode: str, workdir: Path) -> None:
    from avsync_core.evaluation.command import main
    from conftest import golden_dir

    t0 = time.perf_counter()
    count = 0
    if mode == "table":
        count = sum(1 for _ in (workdir / "gen").rglob("*_clip-*.mp4"))
        clips = count // len((workdir / "list.txt").read_text().split())
        argv = ["--generated-dir", workdir / "gen", "--reference-dir", workdir / "gt", "--list", workdir / "list.txt"]
        argv += ["--clips-per-video", clips, "--device", "cpu", "--metric", *METRICS, "--output", workdir / "t.json"]
        argv += ["--inception", workdir / INCEPTION, "--imagebind", workdir / IMAGEBIND]
        argv += ["--detector", golden_dir() / "paper_eval" / "i3d_stand_in.pt"]
        assert main([str(a) for a in argv]) == 0
    seconds = time.perf_counter() - t0
    row = {"mode": mode, "peak_mb": peak_mb(), "seconds": seconds, "clips": count}
    print(json.dumps({**row, "clips_per_second": count / seconds if count else None}))


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags (also read by tests/test_docs.py)."""
    p = parser(__doc__)
    p.add_argument("--videos", type=int, default=10, help="ground-truth videos (default 10)")
    p.add_argument("--clips-per-video", type=int, default=3, help="generated clips per video (default 3)")
    return p


def main() -> None:
    args = build_parser().parse_args()
    if args.write:
        _write(args.workdir, args.videos, args.clips_per_video)
        return
    if args.measure:
        _measure(args.measure, args.workdir)
        return
    extra = ["--videos", str(args.videos), "--clips-per-video", str(args.clips_per_video)]
    with files_in(__file__, args, "list.txt", *extra) as folder:
        rows = measure_modes(__file__, folder, ("baseline", "table"))
    print_peaks(rows)
    table = rows["table"]
    print(f"{table['clips']} generated clips (and as many ground-truth clips) in {table['seconds']:.1f} s: ")
    print(f"{table['clips_per_second']:.4f} generated clips/s on CPU, metrics {' '.join(METRICS)}")


if __name__ == "__main__":
    main()
