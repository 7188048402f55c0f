"""A studio day on one real ComfyUI server: >= 40 prompts switching models, sounds, guidance, samplers, some stopped
mid-sampling, plus hostile prompts; one line per prompt (seconds, server RSS, VRAM on a GPU) and a summary.

    python benchmarks/soak.py --rounds 3 --models /tmp/avsync-soak-models

The server runs the main.py of a test host (docs/test-hosts.md: the newest by default, --host to pick another) on
the CPU with this pack. Models are
random full-size SD1.5 files (written once into --models, about 5.5 GB); sounds are made with espeak-ng and sox.
The shorter version with assertions is tests/test_soak.py; docs/soak.md explains the numbers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests"), str(Path(__file__).resolve().parents[1])]

import soak_session  # noqa: E402

import comfy_host  # noqa: E402
import host_matrix  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags (also read by tests/test_docs.py)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the 13 variations (3 -> 44 good prompts)")
    parser.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "avsync-soak-models",
                        help="folder for the random models; kept and reused between runs")  # fmt: skip
    parser.add_argument("--host", help="the test host to run, e.g. comfyui-0.3.52 (default: the newest)")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.rounds < 1:
        print("soak: --rounds must be 1 or more", file=sys.stderr)
        return 2
    found = {h.name: h for h in host_matrix.hosts()}
    if not found or (args.host and args.host not in found):
        print(f"soak: no test host {args.host or ''} (found: {sorted(found) or 'none'}); run scripts/setup_env.sh",
              file=sys.stderr)  # fmt: skip
        return 2
    host = found[args.host] if args.host else host_matrix.hosts()[0]
    comfy_host.select_host(host.root)
    print(f"host {host.name} ({host.root})", flush=True)
    models = soak_session.write_models(args.models)
    shots = soak_session.studio_day(args.rounds)
    with (
        tempfile.TemporaryDirectory(prefix="avsync-soak-") as work,
        comfy_host.ComfyServer(plugin=True, env=soak_session.SERVER_ENV) as server,
    ):
        work = Path(work)
        sounds = soak_session.write_sounds(work / "sounds")
        session = soak_session.Session(server, models, sounds, comfy_host.write_image(work / "first_frame.png"))
        soak_session.plant_hostile_files(server, sounds)
        try:
            day = soak_session.run_day(
                session, shots, warm_prompts=4 + 13, hostile_after=4, say=lambda line: print(line, flush=True)
            )
        finally:
            session.close()
    print("\n".join(["", "summary", *soak_session.summary(day), "", "hostile prompts"]))
    for label, _name, named, outcome, message in day.hostile:
        print(f"- {label}: {outcome.status}{'' if named else ' (input not named)'}; {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
