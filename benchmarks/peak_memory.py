"""The memory benchmarks' runner: each mode in a fresh process, since peak resident memory is per process.

A benchmark script takes :func:`parser`'s arguments. ``SCRIPT --write --workdir DIR`` writes its files (run by
:func:`files_in`, once); ``SCRIPT --measure MODE --workdir DIR`` prints one JSON line holding at least
``peak_mb`` (from :func:`peak_mb`) and ``seconds``. :func:`measure_modes` runs it once per mode and
:func:`print_peaks` prints each peak above the first mode, the baseline.

The ImageBind benchmarks read branches out of an ``imagebind_huge.pth``-shaped file; :func:`checkpoint_benchmark`
is their whole command, with the same modes (``CHECKPOINT_MODES``) measured by :func:`measure_checkpoint_load`.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

HUGE_PTH = "imagebind_huge_shaped.pth"
CHECKPOINT_MODES = ("baseline", "alone", "pth", "compact", "naive")


def parser(doc: str) -> argparse.ArgumentParser:
    """The arguments every memory benchmark takes; a script adds its own."""
    out = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    out.add_argument("--workdir", type=Path, default=None, help="where to write the files (kept there)")
    out.add_argument("--keep", action="store_true", help="keep the files written to a temporary folder")
    out.add_argument("--measure", help=argparse.SUPPRESS)
    out.add_argument("--write", action="store_true", help=argparse.SUPPRESS)
    return out


@contextmanager
def files_in(script: str, args: argparse.Namespace, first_file: str, *write_args: str) -> Iterator[Path]:
    """The folder of the benchmark's files: ``--workdir`` or a temporary one, removed afterwards unless
    ``--keep``. Missing files (``first_file`` absent) are written by ``script --write`` in a subprocess, since a
    child's peak resident memory starts at its parent's."""
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="avsync_bench_"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if not (folder / first_file).exists():
            print(f"writing the benchmark's files to {folder} ...", flush=True)
            subprocess.run([sys.executable, script, "--write", "--workdir", str(folder), *write_args], check=True)
        yield folder
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def peak_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_modes(
    script_path: str, workdir: Path, modes: tuple[str, ...], extra: tuple[str, ...] | list[str] = ()
) -> dict[str, dict]:
    """``script_path --measure MODE --workdir DIR [extra]`` for each mode, each in a fresh process; their JSON rows."""
    rows = {}
    for mode in modes:
        out = subprocess.run(
            [sys.executable, script_path, "--measure", mode, "--workdir", str(workdir), *extra],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows[mode] = json.loads(out.strip().splitlines()[-1])
    return rows


def print_peaks(rows: dict[str, dict]) -> None:
    """A table of each mode's peak and its excess over the first mode (the baseline)."""
    base = next(iter(rows.values()))["peak_mb"]
    print(f"{'mode':10s} {'peak RSS MiB':>13s} {'above baseline':>15s} {'seconds':>8s}")
    for mode, row in rows.items():
        print(f"{mode:10s} {row['peak_mb']:13.0f} {row['peak_mb'] - base:15.0f} {row['seconds']:8.2f}")


def stand_ins(modality: str, gigabytes: float) -> dict[str, Any]:
    """64 MiB zero tensors under another ImageBind branch's names: the branches a loader must leave unread."""
    import torch

    return {
        f"modality_trunks.{modality}.blocks.{i}.mlp.fc1.weight": torch.zeros(16 * 1024, 1024)
        for i in range(max(0, round(gigabytes * 1024 / 64)))
    }


def measure_checkpoint_load(
    mode: str, workdir: Path, loaders: Mapping[str, Callable[[], Any]], use: Callable[[Any], None]
) -> None:
    """One mode of a checkpoint benchmark as the runner's JSON row. ``baseline`` loads nothing, ``naive`` loads the
    whole huge-shaped file with torch.load; the other modes build a model with ``loaders[mode]`` and ``use`` it once,
    so every weight has really been read."""
    import torch

    before = peak_mb()
    t0 = time.perf_counter()
    if mode == "naive":
        assert len(torch.load(workdir / HUGE_PTH, map_location="cpu", weights_only=True)) > 0
    elif mode != "baseline":
        if mode not in loaders:
            raise SystemExit(f"unknown mode {mode}")
        with torch.no_grad():
            use(loaders[mode]())
    print(
        json.dumps({"mode": mode, "import_peak_mb": before, "peak_mb": peak_mb(), "seconds": time.perf_counter() - t0})
    )


def checkpoint_benchmark(
    script: str,
    doc: str,
    default_other_gb: float,
    write: Callable[[Path, float], None],
    measure: Callable[[str, Path], None],
    describe: Callable[[Path], str],
) -> None:
    """The command of an ImageBind checkpoint benchmark: write the files once, measure every mode, print the table."""
    cli = parser(doc)
    cli.add_argument("--other-gb", type=float, default=default_other_gb, help="size of the other branches' stand-ins")
    args = cli.parse_args()
    if args.write:
        write(args.workdir, args.other_gb)
    elif args.measure:
        measure(args.measure, args.workdir)
    else:
        with files_in(script, args, HUGE_PTH, "--other-gb", str(args.other_gb)) as workdir:
            print(describe(workdir))
            print_peaks(measure_modes(script, workdir, CHECKPOINT_MODES))
