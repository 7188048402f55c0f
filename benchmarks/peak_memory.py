"""The memory benchmarks' runner: each mode in a fresh process, since peak resident memory is per process.

A benchmark script answers ``SCRIPT --measure MODE --workdir DIR`` with one JSON line holding at least
``peak_mb`` (from :func:`peak_mb`) and ``seconds``; :func:`measure_modes` runs it once per mode and
:func:`print_peaks` prints each peak above the first mode, the baseline.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path


def peak_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_modes(script_path: str, workdir: Path, modes: tuple[str, ...]) -> dict[str, dict]:
    """``script_path --measure MODE --workdir DIR`` for each mode, each in a fresh process; their JSON rows."""
    rows = {}
    for mode in modes:
        out = subprocess.run(
            [sys.executable, script_path, "--measure", mode, "--workdir", str(workdir)],
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
