"""A scoped mutation run in one command: the windows, the clip chain, AV-Align, the batched sync metrics and the
clip positions, each with the fast tests that exercise it, on one core.

    .venv/bin/python scripts/scoped_mutation.py [--rev HEAD] [--dest DIR] [--fresh] [--max-children 1]

``--rev``'s tree is unpacked into ``--dest`` (``git archive``; a folder that exists is reused, so an interrupted run
resumes where it stopped, unless ``--fresh``), its ``[tool.mutmut]`` is replaced by the scope below, and this
checkout's mutmut runs there (``mutmut run`` then ``mutmut results --all true``) with one thread and one child.
The goldens come from ../shared/golden of this checkout (AVSYNC_GOLDEN_DIR). It prints one row per module: mutants,
killed, timeout, survived, equivalent (survivors named in scripts/mutation_equivalent.txt, each with the reason)
and no tests, then every survivor not judged equivalent. The full configuration of pyproject.toml is
``mutmut run`` from the repository root (docs/test-strength.md); this is the part that fits an hour of one core.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EQUIVALENT = REPO / "scripts" / "mutation_equivalent.txt"
# Mutated module -> the tests that exercise it (all of them run in one selection; mutmut runs, for each mutant,
# only the selected tests that reached the mutated function, fastest first, stopping at the first failure).
SCOPE = {
    "avsync_core/audio/windows.py": [
        "tests/test_audio_windows.py",
        "tests/test_audio_window_starts.py",
        "tests/test_window_properties.py",
    ],
    "avsync_core/sampling/chain.py": ["tests/test_sampling_chain.py"],
    "avsync_core/evaluation/av_align.py": ["tests/test_eval_av_align.py"],
    "avsync_core/evaluation/metrics.py": [
        "tests/test_eval_inputs.py",
        "tests/test_eval_sync_golden.py",
        "tests/test_eval_batches.py",
    ],
    "avsync_core/evaluation/clips.py": ["tests/test_window_properties.py"],
}
STATUSES = ("killed", "timeout", "survived", "no tests")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scoped_mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD", help="the commit whose tree is mutated (default HEAD)")
    parser.add_argument("--dest", type=Path, help="the scratch copy (default /tmp/avsync-mutation-<rev>)")
    parser.add_argument("--fresh", action="store_true", help="delete --dest first instead of resuming in it")
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default 1: one core)")
    return parser


def scoped_config(pyproject: str, tests: list[str]) -> str:
    """``pyproject`` with its ``[tool.mutmut]`` table (if any) replaced by the scope's."""
    body = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", pyproject).rstrip("\n")
    table = {
        "source_paths": list(SCOPE),
        "also_copy": ["__init__.py", "avsync_core", "configs", "assets", "web", "workflows"],
        "pytest_add_cli_args_test_selection": [*tests, "-m", "not sweep and not browser and not host"],
        "use_git_change_detection": False,
        # mutmut's timeout is CPU time, 15 x the tests' measured durations + this; the measured durations leave out
        # module fixtures (the procedural classifier takes ~16 s to build), so a killed-by-timeout would be a guess.
        "timeout_constant": 120.0,
    }
    lines = [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    return body + "\n\n[tool.mutmut]\n" + "\n".join(lines) + "\n"


def unpack(rev: str, dest: Path) -> list[str]:
    """Unpack ``rev`` into ``dest`` with the scoped configuration; the scope's tests that exist there."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    tests = sorted({t for selection in SCOPE.values() for t in selection if (dest / t).is_file()})
    pyproject = dest / "pyproject.toml"
    pyproject.write_text(scoped_config(pyproject.read_text(), tests))
    return tests


def read_equivalent(path: Path) -> dict[str, str]:
    """``mutant name  reason`` per line (``#`` comments): the survivors judged equivalent."""
    judged = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, reason = line.split(maxsplit=1)
            judged[name] = reason
    return judged


def tally(results: str, equivalent: dict[str, str]) -> tuple[dict[str, Counter], list[str]]:
    """Counts per module from ``mutmut results --all true``, and the survivors not judged equivalent."""
    rows: dict[str, Counter] = {path: Counter() for path in SCOPE}
    open_survivors = []
    for line in results.splitlines():
        match = re.fullmatch(r"\s*([\w.]+)__mutmut_\d+: (.+)", line)
        if not match:
            continue
        name, status = line.split(": ")[0].strip(), match.group(2).strip()
        module = match.group(1).rsplit(".", 1)[0]
        path = next(p for p in SCOPE if p[:-3].replace("/", ".") == module)
        rows[path]["mutants"] += 1
        rows[path][status if status in STATUSES else "other"] += 1
        if status == "survived" and name in equivalent:
            rows[path]["equivalent"] += 1
        elif status == "survived":
            open_survivors.append(name)
    return rows, open_survivors


def table(rows: dict[str, Counter]) -> str:
    columns = ("mutants", "killed", "timeout", "survived", "equivalent", "no tests")
    lines = ["| module | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    total = sum(rows.values(), Counter())
    for path, counts in [*rows.items(), ("total", total)]:
        lines.append(f"| {path} | " + " | ".join(str(counts[c]) for c in columns) + " |")
    if total["other"]:
        lines.append(f"({total['other']} mutants in another state: see mutmut results)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rev = subprocess.run(["git", "rev-parse", "--short", args.rev], cwd=REPO, check=True, capture_output=True)
    rev = rev.stdout.decode().strip()
    dest = (args.dest or Path(f"/tmp/avsync-mutation-{rev}")).resolve()
    if args.fresh and dest.exists():
        shutil.rmtree(dest)
    if not dest.exists():
        tests = unpack(rev, dest)
        print(f"{rev} unpacked into {dest}; tests: {' '.join(tests)}", flush=True)
    mutmut = str(Path(sys.executable).parent / "mutmut")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["AVSYNC_GOLDEN_DIR"] = str(REPO.parent / "shared" / "golden")
    with open(dest / "mutmut-run.log", "a") as log:
        run = [mutmut, "run", "--max-children", str(args.max_children)]
        if subprocess.run(run, cwd=dest, env=env, stdout=log, stderr=subprocess.STDOUT).returncode:
            print(f"mutmut run failed; see {dest / 'mutmut-run.log'}")
            return 1
    results = subprocess.run([mutmut, "results", "--all", "true"], cwd=dest, env=env, capture_output=True, text=True)
    (dest / "mutmut-results.txt").write_text(results.stdout)
    rows, open_survivors = tally(results.stdout, read_equivalent(EQUIVALENT))
    print(table(rows))
    print(f"survivors not judged equivalent ({len(open_survivors)}):", *open_survivors, sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
