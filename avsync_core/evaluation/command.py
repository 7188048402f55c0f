"""``python -m avsync_core.evaluate``: score generated clips with the paper's synchronisation metrics.

One clip::

    python -m avsync_core.evaluate --video gen.mp4 [--audio a.wav] [--ref-video gt.mp4 | --ref-audio b.wav] \\
        --metric avsync relsync alignsync av-align --classifier avsync_classifier.safetensors \\
        --imagebind imagebind_huge.pth [--output scores.json]

A folder, in the layout of the official ``animation_eval.py``: for every ground-truth video ``REF/x/name.mp4``
there are ``--clips-per-video`` generated clips ``GEN/x/name_clip-<i>.mp4``, clip i animated from the i-th of
that many 2 s clips spread uniformly over the ground truth (the centre one when there is one)::

    python -m avsync_core.evaluate --generated-dir GEN --reference-dir REF --clips-per-video 3 \\
        --metric relsync alignsync --classifier ... --imagebind ... [--output GEN/sync_metrics.csv]

In a folder, RelSync compares each generated clip (its own sound) with its ground-truth clip (the ground
truth's sound), and AlignSync uses the ground-truth clip's first frame and sound, as the official evaluation.
Scores per clip, their means and standard deviations go to a CSV or JSON file (by the suffix of ``--output``);
bad input ends the command with one line on stderr and exit status 2. In folder mode, ``--metric fid fvd ia it``
(or ``all``) computes the paper's table with the official result keys (``paper_table.py``)::

    python -m avsync_core.evaluate --generated-dir GEN --reference-dir REF --list test.txt --metric all \
        --inception pt_inception-2015-12-05-6726825d.pth --detector i3d_torchscript.pt \
        --imagebind imagebind_huge.pth --classifier ... [--output GEN/paper_metrics.json]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..audio import decode_audio
from ..checkpoints import write_text_atomic
from ..errors import AVSyncError, InvalidInputError
from . import paper_table
from .av_align import av_align_file
from .classifier import AVSyncClassifier
from .clips import (
    check_generated_clip,
    load_generated_clip,
    load_reference_clip,
    load_reference_video,
    reference_clip_starts,
)
from .imagebind import ImageBindImageAudio
from .metrics import align_probability, image_audio_similarities, relative_probability
from .preprocess import audio_to_mel, preprocess_video

METRICS = {"avsync": "avsync_score", "relsync": "relsync", "alignsync": "alignsync", "av-align": "av_align"}
_CLASSIFIER_METRICS = {"avsync", "relsync", "alignsync"}
ALL = paper_table.ALL_METRICS
_CLIP_INDEX = re.compile(r"_clip-(\d+)\.mp4$")


@dataclass
class Job:
    """One generated clip and what it is compared with."""

    name: str
    video: Path
    audio: Path | None = None
    ref_video: Path | None = None
    ref_start: float | None = None  # folder mode: a clip of a ground-truth video, scored with its own sound
    ref_audio: Path | None = None

    @property
    def reference(self) -> str:
        if self.ref_video is None:
            return "" if self.ref_audio is None else str(self.ref_audio)
        return str(self.ref_video) if self.ref_start is None else f"{self.ref_video}@{self.ref_start:.3f}s"


@dataclass
class Models:
    classifier: AVSyncClassifier | None
    imagebind: ImageBindImageAudio | None


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (also read by the docs test)."""
    parser = argparse.ArgumentParser(
        prog="python -m avsync_core.evaluate",
        description="Score generated clips with AVSync score, RelSync, AlignSync (AVSyncD paper) and AV-Align.",
    )
    one = parser.add_argument_group("one clip")
    one.add_argument("--video", type=Path, help="generated clip: 12 frames at 6 fps, with its sound unless --audio")
    one.add_argument("--audio", type=Path, help="the clip's audio (default: the video's own sound track)")
    ref = one.add_mutually_exclusive_group()
    ref.add_argument("--ref-video", type=Path, help="reference clip with the same sound (RelSync, AlignSync)")
    ref.add_argument("--ref-audio", type=Path, help="reference sound for the same video (RelSync)")
    folder = parser.add_argument_group("a folder (official animation_eval layout)")
    folder.add_argument("--generated-dir", type=Path, help="generated clips <name>_clip-<i>.mp4")
    folder.add_argument("--reference-dir", type=Path, help="ground-truth videos <name>.mp4 (subfolders allowed)")
    folder.add_argument("--list", type=Path, help="text file of ground-truth paths relative to --reference-dir")
    folder.add_argument("--clips-per-video", type=int, default=3, help="generated clips per ground truth (default 3)")
    parser.add_argument(
        "--metric",
        nargs="+",
        choices=[*METRICS, *paper_table.PAPER_METRICS, "all"],
        default=["avsync"],
        help="metrics to compute; fid fvd ia it (folders only) give the paper's table, all = " + " ".join(ALL),
    )
    parser.add_argument("--classifier", type=Path, help="AVSync classifier: released modules/ folder or .safetensors")
    parser.add_argument("--imagebind", type=Path, help="imagebind_huge.pth or its vision+audio .safetensors")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per model batch (default 8)")
    parser.add_argument("--image-size", type=int, default=256, help="frame size before the metrics' 224 resize")
    parser.add_argument("--output", type=Path, help="write per-clip scores and means here (.csv or .json)")
    paper_table.add_arguments(parser)
    return parser


# ------------------------------------------------------------------------------------------------ jobs


def _single_jobs(args: argparse.Namespace) -> list[Job]:
    for flag in ("generated_dir", "reference_dir", "list"):
        if getattr(args, flag) is not None:
            raise InvalidInputError(f"--{flag.replace('_', '-')} belongs to folder mode; it cannot go with --video.")
    _existing(args.video, "--video")
    for flag in ("audio", "ref_video", "ref_audio"):
        if getattr(args, flag) is not None:
            _existing(getattr(args, flag), f"--{flag.replace('_', '-')}")
    if "relsync" in args.metric and args.ref_video is None and args.ref_audio is None:
        raise InvalidInputError("RelSync needs a reference: give --ref-video (same sound) or --ref-audio (same video).")
    if "alignsync" in args.metric and args.ref_video is None:
        raise InvalidInputError(
            "AlignSync needs --ref-video: the real clip whose first frame the animation starts from."
        )
    check_generated_clip(args.video, needs_sound=args.audio is None)
    if args.ref_video is not None:
        check_generated_clip(args.ref_video)
    return [Job(args.video.name, args.video, args.audio, args.ref_video, None, args.ref_audio)]


def _clip_order(path: Path) -> tuple[int, str]:
    match = _CLIP_INDEX.search(path.name)
    return (int(match.group(1)) if match else -1, path.name)


def _folder_jobs(args: argparse.Namespace) -> list[Job]:
    for flag in ("audio", "ref_video", "ref_audio"):
        if getattr(args, flag) is not None:
            raise InvalidInputError(f"--{flag.replace('_', '-')} belongs to one-clip mode; it cannot go with folders.")
    if args.generated_dir is None or args.reference_dir is None:
        raise InvalidInputError("Folder mode needs both --generated-dir and --reference-dir.")
    for folder, flag in ((args.generated_dir, "--generated-dir"), (args.reference_dir, "--reference-dir")):
        if not folder.is_dir():
            raise InvalidInputError(f"{flag} {folder} is not a folder.")
    if args.clips_per_video < 1:
        raise InvalidInputError(f"--clips-per-video must be at least 1, got {args.clips_per_video}.")
    if args.list is not None:
        _existing(args.list, "--list")
        names = [line.strip() for line in args.list.read_text().splitlines() if line.strip()]
    else:
        names = sorted(p.relative_to(args.reference_dir).as_posix() for p in args.reference_dir.rglob("*.mp4"))
    if not names:
        raise InvalidInputError(f"No ground-truth .mp4 videos found in {args.reference_dir}.")
    jobs = []
    for name in sorted(names):
        reference = args.reference_dir / name
        _existing(reference, "ground-truth video")
        rel = Path(name)
        generated = sorted((args.generated_dir / rel.parent).glob(f"{rel.stem}_clip-*.mp4"), key=_clip_order)
        if len(generated) != args.clips_per_video:
            raise InvalidInputError(
                f"{len(generated)} generated clip(s) {rel.parent / (rel.stem + '_clip-*.mp4')} found in "
                f"{args.generated_dir} for ground truth {name}; expected --clips-per-video {args.clips_per_video}."
            )
        needs_reference = bool(set(args.metric) & {"relsync", "alignsync", *paper_table.PAPER_METRICS})
        starts = reference_clip_starts(reference, args.clips_per_video) if needs_reference else [None] * len(generated)
        for path, start in zip(generated, starts):
            check_generated_clip(path, needs_sound=True)
            jobs.append(
                Job(
                    path.relative_to(args.generated_dir).as_posix(),
                    path,
                    ref_video=reference if needs_reference else None,
                    ref_start=start,
                )
            )
    return jobs


def _existing(path: Path, what: str) -> None:
    if not path.exists():
        raise InvalidInputError(f"{what} {path} does not exist.")


# ------------------------------------------------------------------------------------------------ models


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InvalidInputError(f"--device {name!r} is not a torch device (try cpu or cuda).") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("--device cuda was asked for, but torch sees no CUDA GPU here; use --device cpu.")
    return device


def _load_models(args: argparse.Namespace, device: torch.device) -> Models:
    classifier = imagebind = None
    if set(args.metric) & _CLASSIFIER_METRICS:
        if args.classifier is None:
            raise InvalidInputError(
                "--classifier is needed for avsync/relsync/alignsync: the released AVSync classifier's modules/ "
                "folder or its converted .safetensors."
            )
        classifier = AVSyncClassifier.from_file(args.classifier).to(device)
    if "alignsync" in args.metric:
        if args.imagebind is None:
            raise InvalidInputError(
                "--imagebind is needed for alignsync: imagebind_huge.pth (vision + audio are read)."
            )
        imagebind = ImageBindImageAudio.from_file(args.imagebind).to(device)
    return Models(classifier, imagebind)


# ------------------------------------------------------------------------------------------------ scoring


@torch.no_grad()
def _score_batch(jobs: list[Job], metrics: list[str], models: Models, image_size: int) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = [{} for _ in jobs]
    if set(metrics) & _CLASSIFIER_METRICS:
        classifier = models.classifier
        clips = [load_generated_clip(job.video, job.audio, image_size) for job in jobs]
        mel = torch.stack([clip.mel for clip in clips])
        frames = preprocess_video(torch.stack([clip.video for clip in clips]))
        device = classifier.device
        audio = classifier.audio_encoder(mel.to(device))
        video = classifier.video_encoder(frames.to(device))
        score = classifier.score_embeddings(audio, video).float().cpu()
        columns = {"avsync_score": score}
        if "relsync" in metrics or "alignsync" in metrics:
            if jobs[0].ref_audio is not None:
                ref_mel = torch.stack([_audio_file_mel(job.ref_audio) for job in jobs])
                ref_audio = classifier.audio_encoder(ref_mel.to(device))
                reference_score = classifier.score_embeddings(ref_audio, video)
                ref_frames = None
            else:
                if jobs[0].ref_start is None:  # one clip: the reference video shares the generated clip's sound
                    ref_video = torch.stack([load_reference_video(job.ref_video, image_size) for job in jobs])
                    ref_mel, ref_audio = mel, audio
                else:
                    refs = [load_reference_clip(job.ref_video, job.ref_start, image_size) for job in jobs]
                    ref_video = torch.stack([clip.video for clip in refs])
                    ref_mel = torch.stack([clip.mel for clip in refs])
                    ref_audio = classifier.audio_encoder(ref_mel.to(device))
                ref_frames = preprocess_video(ref_video)
                reference_score = classifier.score_embeddings(
                    ref_audio, classifier.video_encoder(ref_frames.to(device))
                )
            columns["relsync"] = relative_probability(score, reference_score.float().cpu())
            if "alignsync" in metrics:
                first = image_audio_similarities(models.imagebind, ref_mel, ref_frames[:, :, :1])
                generated = image_audio_similarities(models.imagebind, mel, frames[:, :, 1:])
                columns["alignsync"] = align_probability(first, generated) * columns["relsync"]
        for name in metrics:
            if name in _CLASSIFIER_METRICS:
                for row, value in zip(rows, columns[METRICS[name]].tolist()):
                    row[METRICS[name]] = value
    if "av-align" in metrics:
        for row, job in zip(rows, jobs):
            row["av_align"] = av_align_file(job.video, job.audio).score
    return rows


def _audio_file_mel(path: Path) -> torch.Tensor:
    sound = decode_audio(path, sample_rate=None, mono=True)
    return audio_to_mel(sound.samples, sound.sample_rate)


def score_jobs(jobs: list[Job], metrics: list[str], models: Models, batch_size: int, image_size: int) -> list[dict]:
    """Per-clip rows ``{"clip", "reference", <metric>: value}`` in job order, batch by batch."""
    rows = []
    with tqdm(total=len(jobs), desc="Scoring clips", unit="clip", file=sys.stderr) as progress:
        for first in range(0, len(jobs), batch_size):
            batch = jobs[first : first + batch_size]
            for job, scores in zip(batch, _score_batch(batch, metrics, models, image_size)):
                rows.append({"clip": job.name, "reference": job.reference, **scores})
            progress.update(len(batch))
    return rows


def summarize(rows: list[dict], columns: list[str]) -> dict[str, dict[str, float | None]]:
    """Mean and (unbiased, as the official evaluation) standard deviation of each metric over the clips."""
    out: dict[str, dict[str, float | None]] = {"mean": {}, "std": {}}
    for column in columns:
        values = torch.tensor([row[column] for row in rows], dtype=torch.float64)
        out["mean"][column] = float(values.mean())
        out["std"][column] = float(values.std()) if len(values) > 1 else None
    return out


# ------------------------------------------------------------------------------------------------ output


def write_report(path: Path, rows: list[dict], columns: list[str], summary: dict, settings: dict) -> None:
    """CSV (per-clip rows, then mean and std rows) or JSON, written to a temporary file and renamed."""
    if path.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["clip", "reference", *columns], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        for stat in ("mean", "std"):
            writer.writerow({"clip": stat, "reference": "", **{k: _blank(v) for k, v in summary[stat].items()}})
        text = buffer.getvalue()
    else:
        text = json.dumps({"metrics": columns, "clips": rows, **summary, "settings": settings}, indent=2) + "\n"
    write_text_atomic(path, text)


def _blank(value: float | None) -> float | str:
    return "" if value is None or math.isnan(value) else value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.metric = paper_table.expand(args.metric)
    metrics = [m for m in args.metric if m in METRICS]
    paper = [m for m in args.metric if m in paper_table.PAPER_METRICS]
    try:
        if args.batch_size < 1 or args.image_size < 16:
            raise InvalidInputError("--batch-size must be at least 1 and --image-size at least 16.")
        if args.output is not None and args.output.suffix.lower() not in ((".json",) if paper else (".csv", ".json")):
            ending = ".json (the paper's table is a JSON file)" if paper else ".csv or .json"
            raise InvalidInputError(f"--output {args.output} must end in {ending}.")
        if paper and args.video is not None:
            raise InvalidInputError(
                f"{' '.join(paper)} score a set of clips against their ground truth: use --generated-dir and "
                "--reference-dir (the official layout), not --video."
            )
        if args.video is not None:
            jobs = _single_jobs(args)
        elif args.generated_dir is not None or args.reference_dir is not None:
            jobs = _folder_jobs(args)
        else:
            raise InvalidInputError("Give a clip (--video) or folders (--generated-dir and --reference-dir).")
        device = _device(args.device)
        models = _load_models(args, device)
        if paper:
            paper_models = paper_table.load_models(args, paper, device, models.imagebind)
            table, per_clip = paper_table.compute(jobs, paper, paper_models, args, device)
        rows = score_jobs(jobs, metrics, models, args.batch_size, args.image_size) if metrics else []
        if paper:
            output = paper_table.write_table(args, table, per_clip, rows, [METRICS[m] for m in metrics], device)
            print(f"wrote {output}", file=sys.stderr)
            return 0
    except AVSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    columns = [METRICS[m] for m in metrics]
    summary = summarize(rows, columns)
    output = args.output
    if output is None and args.generated_dir is not None:
        output = args.generated_dir / "sync_metrics.json"
    if output is not None:
        settings = {"device": str(device), "image_size": args.image_size}
        if args.generated_dir is not None:
            settings["clips_per_video"] = args.clips_per_video
        write_report(output, rows, columns, summary, settings)
        print(f"wrote {output}", file=sys.stderr)
    for column in columns:
        std = summary["std"][column]
        spread = "" if std is None else f" (std {std:.4f})"
        print(f"{column}: {summary['mean'][column]:.6f}{spread}")
    return 0
