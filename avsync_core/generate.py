"""``python -m avsync_core.generate``: animate a whole dataset the way the paper's evaluation does.

    python -m avsync_core.generate --data AVSync15 --sd15 SD15 --avsyncd AVSYNCD -o OUT [--clips-per-video 3]
    torchrun --nproc_per_node 8 -m avsync_core.generate ...        (or accelerate launch -m ...)

Inputs: a dataset in the official layout (``DATA/videos/<class>/<name>.mp4`` and ``DATA/test.txt`` listing
``<class>/<name>.mp4`` per line; prompts from ``DATA/class_mapping.json`` when present, else the class folder's
name) or a CSV file with ``image,audio,prompt`` columns (and an optional ``name``).

Clips follow lzhangbj/ASVA's ``animation_gen.py``: N 2 s clips per video, spread uniformly over the part where
picture and sound both exist (the centre one when N is 1); clip k starts from the video's frame at its start and
hears its 2 s of sound; every clip is sampled with the same ``--seed``, as the official script does. Output, the
layout of the official ``animation_eval.py``:

    OUT/videos/<class>/<name>_clip-<kk>.mp4        generated (12 frames at 6 fps with the clip's sound)
    OUT/groundtruth/<class>/<name>_clip-<kk>.mp4   the real clip at the same place (dataset input only)

so ``python -m avsync_core.evaluate --generated-dir OUT/videos --reference-dir DATA/videos --list DATA/test.txt``
scores them, and each ground-truth clip can serve as ``--ref-video`` on its own.

Several processes (``RANK``/``WORLD_SIZE`` from torchrun or accelerate, on any number of machines sharing OUT)
take every WORLD_SIZE-th clip. A clip is written under a temporary name and renamed when complete, so a run can
be killed and started again: finished clips are skipped, half-written ones never look finished.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from .cli import dtype_argument, resolve_dtype, run_command, writable_output
from .errors import AVSyncError, InvalidInputError
from .evaluation.clips import clip_starts

PROG = "python -m avsync_core.generate"


@dataclass(frozen=True)
class Item:
    """One source: a video (dataset input: picture and sound), or an image and a sound (CSV input)."""

    name: str  # output stem relative to OUT/videos, e.g. "dog/barking_01"
    prompt: str
    video: Path | None = None
    image: Path | None = None
    audio: Path | None = None


@dataclass(frozen=True)
class Job:
    item: Item
    clip: int  # which of the item's clips
    clips: int  # how many clips the item gets

    def path(self, out: Path, kind: str = "videos") -> Path:
        return out / kind / f"{self.item.name}_clip-{self.clip:02d}.mp4"


@dataclass
class Tally:
    written: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)


def read_dataset(root: Path) -> tuple[list[Item], list[str]]:
    """The videos ``test.txt`` lists (and the listed paths that do not exist)."""
    from .train.data import load_prompts

    listing, videos = root / "test.txt", root / "videos"
    if not listing.is_file() or not videos.is_dir():
        raise InvalidInputError(
            f"{root} is not a dataset in the official layout: expected {videos}/<class>/<name>.mp4 and {listing} "
            "listing <class>/<name>.mp4 per line. For other data, give a CSV file with --csv."
        )
    entries = []
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        relative = PurePosixPath(entry)
        if len(relative.parts) < 2 or relative.is_absolute() or ".." in relative.parts:
            raise InvalidInputError(f"Line {number} of {listing} is {entry!r}; expected '<class>/<name>.mp4'.")
        entries.append(relative)
    classes = sorted({e.parts[0] for e in entries})
    mapping = root / "class_mapping.json"
    prompts = load_prompts(classes, mapping if mapping.is_file() else None)
    items, missing = [], []
    for relative in entries:
        path = videos.joinpath(*relative.parts)
        if not path.is_file():
            missing.append(str(path))
            continue
        items.append(Item(str(relative.with_suffix("")), prompts[relative.parts[0]], video=path))
    return items, missing


def read_csv_items(path: Path) -> tuple[list[Item], list[str]]:
    """Rows of ``image,audio,prompt[,name]``; relative paths are taken from the CSV file's folder."""
    if not path.is_file():
        raise InvalidInputError(f"CSV file {path} does not exist.")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0]) if rows else set()
    if not {"image", "audio"} <= columns:
        raise InvalidInputError(
            f"{path} needs a header with image and audio columns (and prompt, name); got {columns}."
        )
    items, missing, names = [], [], set()
    for number, row in enumerate(rows, start=2):
        image, audio = (path.parent / row[key].strip() for key in ("image", "audio"))
        name = (row.get("name") or "").strip() or Path(row["audio"].strip()).stem
        if name in names:
            raise InvalidInputError(f"Line {number} of {path}: the name {name!r} is used twice; add a name column.")
        names.add(name)
        absent = [str(p) for p in (image, audio) if not p.is_file()]
        if absent:
            missing.extend(absent)
            continue
        items.append(Item(name, (row.get("prompt") or "").strip(), image=image, audio=audio))
    return items, missing


def clip_inputs(job: Job, frames: int, fps: float, size: int):
    """The first frame (1, 3, size, size), the clip's sound, and its real frames (dataset input; else None)."""
    from .audio import decode_audio, probe_audio_duration
    from .pipeline import load_image
    from .video import center_crop_resize, probe_video, read_frames

    item, seconds = job.item, frames / fps
    if item.video is not None:
        info = probe_video(item.video)
        if not info.has_audio:
            raise InvalidInputError(f"{item.video} has no sound track; the clips need the video's own sound.")
        start = clip_starts(info.duration, job.clips, seconds)[job.clip]
        pictures = read_frames(item.video, start + np.arange(frames) / fps)
        real = center_crop_resize(torch.from_numpy(pictures).permute(0, 3, 1, 2), size)
        return real[:1], decode_audio(item.video, start, seconds, sample_rate=None, mono=False), real
    start = clip_starts(probe_audio_duration(item.audio), job.clips, seconds)[job.clip]
    sound = decode_audio(item.audio, start, seconds, sample_rate=None, mono=False)
    return load_image(item.image, size), sound, None


def write_atomic(path: Path, frames: torch.Tensor, fps: float, sound, rank: int) -> None:
    """Write beside ``path`` under a hidden temporary name, then rename: ``path`` exists only when complete."""
    from .video import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.part-{rank}.mp4")
    try:
        write_video(temporary, frames, fps, sound)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def build_parser() -> argparse.ArgumentParser:
    from .sampling.schedulers import SCHEDULERS

    p = argparse.ArgumentParser(prog=PROG, description="Animate a dataset at the official clip positions (AVSyncD).")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="dataset folder with videos/ and test.txt (official layout)")
    source.add_argument("--csv", type=Path, help="CSV file with image,audio,prompt[,name] columns")
    p.add_argument("--sd15", required=True, help="SD1.5 checkpoint: a .safetensors/.ckpt file or a diffusers folder")
    p.add_argument("--avsyncd", required=True, help="official AVSyncD folder, or a motion module .safetensors")
    p.add_argument("--imagebind", help="ImageBind file (default: the official folder's audio_encoder/)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (videos/ and groundtruth/)")
    p.add_argument("--clips-per-video", type=int, default=3, help="clips per item (paper: 3)")
    p.add_argument("--missing", choices=["skip", "fatal"], default="skip", help="listed files that do not exist")
    p.add_argument("--audio-guidance", type=float, default=4.0, help="audio CFG scale (paper: 4; 1 = off)")
    p.add_argument("--text-guidance", type=float, default=1.0, help="text CFG scale (paper: 1 = off)")
    p.add_argument("--negative", default="", help="negative prompt, used only with --text-guidance above 1")
    p.add_argument("--steps", type=int, default=50, help="denoising steps (paper: 50)")
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="pndm", help="sampler (paper: pndm)")
    p.add_argument("--frames", type=int, default=12, help="frames per 2 s clip (paper: 12)")
    p.add_argument("--fps", type=float, default=6.0, help="frame rate; frames / fps must be 2 s (paper: 6)")
    p.add_argument("--size", type=int, default=256, help="square frame size in pixels (paper: 256)")
    p.add_argument("--seed", type=int, default=0, help="noise seed of every clip, as the official script")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="cuda: one GPU per process")
    dtype_argument(p, "auto", "model precision (default: fp16 on a GPU, fp32 on the CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .pipeline import SamplingOptions, animate, check_frame_layout, check_size, load_models, sound_for_video
    from .train.processes import init_distributed

    check_frame_layout(args.frames, args.fps)
    if args.clips_per_video < 1 or args.steps < 1:
        raise InvalidInputError("--clips-per-video and --steps must be at least 1.")
    writable_output(str(args.output / "videos" / "probe.mp4"), "output folder")
    items, missing = read_dataset(args.data) if args.data else read_csv_items(args.csv)
    if missing and args.missing == "fatal":
        raise InvalidInputError(f"{len(missing)} listed file(s) do not exist: {', '.join(missing[:5])}.")
    options = SamplingOptions(
        args.frames, args.fps, args.steps, args.scheduler, args.audio_guidance, args.text_guidance
    )
    dist = init_distributed(args.device)
    try:
        jobs = [Job(item, k, args.clips_per_video) for item in items for k in range(args.clips_per_video)]
        mine = jobs[dist.rank :: dist.world_size]
        kinds = ("videos", "groundtruth") if args.data else ("videos",)
        tally = Tally()
        todo = [job for job in mine if not all(job.path(args.output, kind).is_file() for kind in kinds)]
        tally.skipped = len(mine) - len(todo)
        if todo:
            dtype = resolve_dtype(args.dtype, dist.device)
            models = load_models(args.sd15, args.avsyncd, args.imagebind, dist.device, dtype)
            check_size(models, args.size)
            bar = tqdm(todo, desc=f"rank {dist.rank}", position=dist.rank, disable=args.no_progress, unit="clip")
            for job in bar:
                try:
                    image, sound, real = clip_inputs(job, args.frames, args.fps, args.size)
                    sound = sound_for_video(sound, args.frames, args.fps)
                    if real is not None:
                        write_atomic(job.path(args.output, "groundtruth"), real, args.fps, sound, dist.rank)
                    frames, _ = animate(
                        models, image, sound, job.item.prompt, args.negative, options, args.seed, progress=False
                    )
                    write_atomic(job.path(args.output), frames, args.fps, sound, dist.rank)
                    tally.written += 1
                except AVSyncError as exc:
                    tally.failed.append(f"{job.path(args.output).name}: {exc}")
        tallies = dist.gather(tally)
    finally:
        dist.close()
    if dist.rank == 0:
        _print_summary(args.output, len(jobs), tallies, missing)
    return 1 if any(t.failed for t in tallies) else 0


def _print_summary(out: Path, total: int, tallies: list[Tally], missing: list[str]) -> None:
    written, skipped = sum(t.written for t in tallies), sum(t.skipped for t in tallies)
    failed = [f for t in tallies for f in t.failed]
    print(
        f"{PROG}: {total} clips in {out / 'videos'}: {written} written, {skipped} already done, {len(failed)} failed; "
        f"{len(missing)} listed file(s) missing (skipped)"
    )
    for path in missing:
        print(f"  missing: {path}")
    for line in failed:
        print(f"  failed: {line}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
