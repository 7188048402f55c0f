"""The paper's table for a folder pair: FID, FVD, IA and IT next to the synchronisation metrics.

What the official ``animation_eval.py`` (ASVA ``avgen/evaluations/eval.py``) computes, over the same clips: for
every ground-truth video, its ``--clips-per-video`` 2 s clips at the official positions and the generated clips
``<name>_clip-<i>.mp4``, all as 12 frames at 6 fps resized to ``--image-size``.

* FID: Inception features of frames 1..11 of every clip (frame 0 is the conditioning image, so the official
  evaluation leaves it out), ground truth against generated.
* FVD: detector features of whole clips (all 12 frames).
* IA / IT: per-frame ImageBind cosines of frames 1..11 with the clip's sound / its class name (the ground
  truth's first folder, or ``--text``), averaged per clip; mean and unbiased std over clips.

Two bugs of the official script are not reproduced: it stores IA in the per-clip "IT" field, and it sorts the
ground-truth names in place without sorting the class names with them (unsorted lists pair clips with the wrong
texts). Here each clip's IT is its own, and each clip's text comes from its own ground-truth path.

Features are accumulated into running statistics, one ground-truth video at a time; no set of videos is held.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..checkpoints import write_text_atomic
from ..errors import InvalidInputError
from .clip_similarity import FrameSimilarities, frame_similarities
from .clips import load_generated_clip, load_reference_clip
from .fid import FID_WEIGHTS_SOURCE, FIDInception
from .frechet import FeatureStats, frechet_distance
from .fvd import I3D_SOURCE, fvd_features, load_detector
from .imagebind import ImageBindImageAudio
from .imagebind_text import ImageBindTextEncoder

PAPER_METRICS = ("fid", "fvd", "ia", "it")
ALL_METRICS = ("fid", "fvd", "ia", "it", "relsync", "alignsync", "av-align")
# Per-clip columns of the synchronisation metrics -> the official result names.
SYNC_KEYS = {"avsync_score": "AVSync", "relsync": "RelSync", "alignsync": "AlignSync", "av_align": "AVAlign"}


@dataclass
class PaperModels:
    inception: FIDInception | None = None
    detector: torch.nn.Module | None = None
    image_audio: ImageBindImageAudio | None = None
    text: ImageBindTextEncoder | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the paper's table (folder mode: --metric fid fvd ia it, or all)")
    group.add_argument("--inception", type=Path, help=f"FID: {FID_WEIGHTS_SOURCE}")
    group.add_argument("--detector", type=Path, help=f"FVD: {I3D_SOURCE}")
    group.add_argument("--text", help="IT: one class name for every clip (default: each ground truth's folder name)")


def expand(metrics: Sequence[str]) -> list[str]:
    """``all`` -> the paper's metrics; duplicates dropped, order kept."""
    out: list[str] = []
    for metric in metrics:
        out += list(ALL_METRICS) if metric == "all" else [metric]
    return list(dict.fromkeys(out))


def load_models(
    args: argparse.Namespace, metrics: Sequence[str], device: torch.device, image_audio: ImageBindImageAudio | None
) -> PaperModels:
    models = PaperModels(image_audio=image_audio)
    if "fid" in metrics:
        if args.inception is None:
            raise InvalidInputError(f"--inception is needed for fid: {FID_WEIGHTS_SOURCE}.")
        models.inception = FIDInception.from_file(args.inception).to(device)
    if "fvd" in metrics:
        if args.detector is None:
            raise InvalidInputError(f"--detector is needed for fvd: {I3D_SOURCE}.")
        models.detector = load_detector(args.detector, device)
    if {"ia", "it"} & set(metrics):
        if args.imagebind is None:
            raise InvalidInputError("--imagebind is needed for ia/it: imagebind_huge.pth (vision, audio, text).")
        if models.image_audio is None:
            models.image_audio = ImageBindImageAudio.from_file(args.imagebind).to(device)
    if "it" in metrics:
        models.text = ImageBindTextEncoder.from_file(args.imagebind).to(device)
    return models


def clip_text(reference: Path, reference_dir: Path, text: str | None) -> str:
    """A clip's class name: ``--text``, else the first folder of its ground truth (the official datasets' class)."""
    if text is not None:
        return text
    parts = reference.relative_to(reference_dir).parts
    if len(parts) < 2:
        raise InvalidInputError(
            f"IT needs a class name for {reference}: put ground truths in <class>/<name>.mp4 folders, or give --text."
        )
    return parts[0]


def _groups(jobs: Sequence) -> list[tuple[Path, list]]:
    groups: dict[Path, list] = {}
    for job in jobs:
        groups.setdefault(job.ref_video, []).append(job)
    return list(groups.items())


@torch.no_grad()
def compute(
    jobs: Sequence, metrics: Sequence[str], models: PaperModels, args: argparse.Namespace, device: torch.device
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Official result keys (FID, FVD, IA_mean, ...) and per-clip IA/IT, one ground-truth video at a time."""
    fid = (FeatureStats(), FeatureStats()) if "fid" in metrics else None
    fvd = (FeatureStats(), FeatureStats()) if "fvd" in metrics else None
    per_clip: dict[str, dict[str, float]] = {}
    groups = _groups(jobs)
    texts = {ref: clip_text(ref, args.reference_dir, args.text) if "it" in metrics else None for ref, _ in groups}
    for reference, group in tqdm(groups, desc="Paper metrics", unit="video", file=sys.stderr):
        if fid or fvd:
            truth = torch.stack([load_reference_clip(reference, job.ref_start, args.image_size).video for job in group])
            _add_features(truth, models, fid and fid[0], fvd and fvd[0], device)
        text = texts[reference]
        for job in group:
            clip = load_generated_clip(job.video, image_size=args.image_size)
            _add_features(clip.video[None], models, fid and fid[1], fvd and fvd[1], device)
            per_clip[job.name] = _similarities(clip, text, metrics, models)
    result: dict[str, float] = {}
    if fid:
        result["FID"] = frechet_distance(*fid)
    if fvd:
        result["FVD"] = frechet_distance(*fvd)
    for key in ("IA", "IT"):
        if key.lower() in metrics:
            result.update(mean_std(key, [row[key] for row in per_clip.values()]))
    return result, per_clip


def _add_features(videos: torch.Tensor, models: PaperModels, fid, fvd, device: torch.device) -> None:
    """videos (b, 3, 12, s, s) in [0, 1]: FID features of frames 1..11, FVD features of the whole clips."""
    if fid is not None:
        frames = videos[:, :, 1:].permute(0, 2, 1, 3, 4).flatten(0, 1)
        fid.add(models.inception.features(frames))
    if fvd is not None:
        fvd.add(fvd_features(models.detector, videos, device))


def _similarities(clip, text: str | None, metrics: Sequence[str], models: PaperModels) -> dict[str, float]:
    if not {"ia", "it"} & set(metrics):
        return {}
    mel = clip.mel[None] if "ia" in metrics else None
    sims = frame_similarities(models.image_audio, clip.video[None], mel, None if text is None else [text], models.text)
    out = {}
    if sims.ia is not None:
        out["IA"] = float(FrameSimilarities.per_clip(sims.ia)[0])
    if sims.it is not None:
        out["IT"] = float(FrameSimilarities.per_clip(sims.it)[0])
    return out


def mean_std(name: str, values: Sequence[float]) -> dict[str, float | None]:
    """``<name>_mean`` and the unbiased ``<name>_std`` over clips, as the official evaluation (no std for one clip)."""
    v = torch.tensor(values, dtype=torch.float64)
    return {f"{name}_mean": float(v.mean()), f"{name}_std": float(v.std()) if len(v) > 1 else None}


def write_table(
    args: argparse.Namespace,
    paper: dict[str, float],
    per_clip: dict[str, dict[str, float]],
    sync_rows: Sequence[dict],
    sync_columns: Sequence[str],
    device: torch.device,
) -> Path:
    """The official result file: roots, clip count, metric keys, and ``instance_metrics`` per generated clip."""
    instances = {name: dict(values) for name, values in per_clip.items()}
    table = dict(paper)
    for column in sync_columns:
        table.update(mean_std(SYNC_KEYS[column], [row[column] for row in sync_rows]))
        for row in sync_rows:
            instances.setdefault(row["clip"], {})[SYNC_KEYS[column]] = row[column]
    output = args.output or args.generated_dir / "paper_metrics.json"
    report = {
        "groundtruth_video_root": str(args.reference_dir),
        "generated_video_root": str(args.generated_dir),
        "num_clips_per_video": args.clips_per_video,
        **table,
        "instance_metrics": instances,
        "settings": {"device": str(device), "image_size": args.image_size, "text": args.text},
    }
    write_text_atomic(output, json.dumps(report, indent=2) + "\n")
    for key, value in table.items():
        print(f"{key}: {'n/a' if value is None else f'{value:.6f}'}")
    return output
