"""Training data: folders of videos with sound -> random 2 s audio-visual clips (the paper's recipe).

A sample is 12 frames at 6 fps from a random start, the centre square resized to 256, flipped at random,
plus the same 2 s of sound as 16 kHz mono and its ImageBind log-mel. The text condition is the class
folder's prompt; the class index lets the trainer encode each prompt once and reuse it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import av
import numpy as np
import torch
from torch.utils.data import Dataset

from ..audio.decode import decode_audio
from ..audio.mel import melspectrogram
from ..audio.waveform import SAMPLE_RATE
from ..errors import AVSyncError, InvalidInputError
from ..video import VideoInfo, center_crop_resize, probe_video, read_frames

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")

_LAYOUT_HELP = (
    "Expected either the AVSync15 layout (<root>/videos/<class>/<file>.mp4, with <root>/train.txt and "
    "<root>/test.txt listing one 'class_folder/file.mp4' per line) or one sub-folder of videos per class "
    f"(<root>/<class>/<file>, any of {', '.join(VIDEO_EXTENSIONS)})."
)


@dataclass(frozen=True)
class VideoRecord:
    path: Path
    class_name: str


def scan_dataset(root: str | Path, split: str | None = "train") -> tuple[list[VideoRecord], list[str]]:
    """Find the videos and their classes.

    Videos live in ``<root>/videos`` when that folder exists (AVSync15), else directly in ``<root>``, one
    sub-folder per class. ``<root>/<split>.txt``, when present, lists which of them to use; without it
    (or with ``split=None``) every video in the class folders is used.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InvalidInputError(f"Dataset folder {root} does not exist or is not a folder. {_LAYOUT_HELP}")
    base = root / "videos" if (root / "videos").is_dir() else root
    list_file = root / f"{split}.txt" if split else None
    if list_file is not None and list_file.is_file():
        records = _records_from_list(list_file, base)
    else:
        if list_file is not None:
            logger.info("No %s in %s: using every video in the class folders of %s.", list_file.name, root, base)
        records = _records_from_folders(base)
    return records, sorted({record.class_name for record in records})


def _records_from_list(list_file: Path, base: Path) -> list[VideoRecord]:
    records, missing = [], []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        relative = PurePosixPath(entry)
        if len(relative.parts) < 2:
            raise InvalidInputError(
                f"Line {number} of {list_file} is {entry!r}; each line must be 'class_folder/file.mp4', "
                f"relative to {base}."
            )
        path = base.joinpath(*relative.parts)
        (records if path.is_file() else missing).append(VideoRecord(path, relative.parts[0]))
    if missing:
        examples = ", ".join(str(record.path) for record in missing[:3])
        logger.warning("%d of the videos listed in %s do not exist (e.g. %s).", len(missing), list_file, examples)
    if not records:
        what = f"none of the {len(missing)} listed files exist under {base}" if missing else "it lists no videos"
        raise InvalidInputError(f"{list_file} gives no usable video: {what}. {_LAYOUT_HELP}")
    return records


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def _records_from_folders(base: Path) -> list[VideoRecord]:
    records = [
        VideoRecord(path, class_dir.name)
        for class_dir in sorted(base.iterdir())
        if class_dir.is_dir() and not class_dir.name.startswith(".")
        for path in sorted(class_dir.iterdir())
        if _is_video(path)
    ]
    if not records:
        loose = [path for path in base.iterdir() if _is_video(path)]
        hint = (
            f" {len(loose)} videos lie directly in {base}: put each class's videos in a sub-folder named after "
            "the class."
            if loose
            else ""
        )
        raise InvalidInputError(f"No videos found in the class folders of {base}.{hint} {_LAYOUT_HELP}")
    return records


def default_prompt(class_name: str) -> str:
    """The folder name as text: 'playing_trumpet' -> 'playing trumpet'."""
    return class_name.replace("_", " ").strip()


def load_prompts(classes: list[str], prompt_file: str | Path | None) -> dict[str, str]:
    """Class -> prompt, from a JSON object ``{"class_folder": "prompt", ...}`` or from the folder names."""
    if prompt_file is None:
        return {name: default_prompt(name) for name in classes}
    path = Path(prompt_file).expanduser()
    expected = 'Expected a JSON object mapping each class folder to its prompt, e.g. {"dog": "dog barking"}.'
    if not path.is_file():
        raise InvalidInputError(f"Prompt file {path} does not exist. {expected}")
    try:
        mapping = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"Prompt file {path} is not valid JSON ({exc}). {expected}") from exc
    if not isinstance(mapping, dict):
        raise InvalidInputError(f"Prompt file {path} holds a {type(mapping).__name__}. {expected}")
    missing = [name for name in classes if name not in mapping]
    if missing:
        raise InvalidInputError(
            f"Prompt file {path} has no prompt for {len(missing)} of the {len(classes)} classes: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}. Add them to the file, or leave the "
            "prompt file out to use the folder names."
        )
    not_text = [name for name in classes if not isinstance(mapping[name], str)]
    if not_text:
        raise InvalidInputError(f"Prompt file {path}: the prompts for {', '.join(not_text[:10])} are not strings.")
    return {name: mapping[name] for name in classes}


class AVClipDataset(Dataset):
    """Random audio-visual clips; broken files are reported and skipped instead of stopping a run."""

    max_retries = 5

    def __init__(
        self,
        records: list[VideoRecord],
        classes: list[str],
        prompts: dict[str, str],
        frames: int = 12,
        fps: float = 6.0,
        size: int = 256,
        random_flip: bool = True,
        seed: int = 0,
        min_seconds: float | None = None,
        validate: bool = True,
        deterministic_clip: bool = False,
    ) -> None:
        if frames < 1 or fps <= 0 or size < 1:
            raise InvalidInputError(f"frames, fps and size must be positive; got {frames}, {fps}, {size}.")
        self.frames, self.fps, self.size = int(frames), float(fps), int(size)
        self.clip_seconds = self.frames / self.fps
        self.min_seconds = self.clip_seconds if min_seconds is None else float(min_seconds)
        self.random_flip, self.deterministic_clip = random_flip, deterministic_clip
        self.seed, self.epoch = int(seed), 0
        self.classes = list(classes)
        self.class_to_index = {name: index for index, name in enumerate(self.classes)}
        unknown = sorted({record.class_name for record in records} - set(self.class_to_index))
        if unknown:
            raise InvalidInputError(f"Videos belong to classes missing from the class list: {', '.join(unknown)}.")
        no_prompt = [name for name in self.classes if name not in prompts]
        if no_prompt:
            raise InvalidInputError(f"No prompt for the classes {', '.join(no_prompt)}.")
        self.prompts = {name: prompts[name] for name in self.classes}

        self.skipped: list[tuple[Path, str]] = []
        self._items: list[tuple[VideoRecord, VideoInfo | None]] = []
        kinds: Counter[str] = Counter()
        for record in records:
            info = None
            if validate:
                try:
                    info = probe_video(record.path)
                    problem = self._problem(info)
                except (AVSyncError, av.FFmpegError, OSError) as exc:
                    problem = ("unreadable", str(exc))
                if problem is not None:
                    kinds[problem[0]] += 1
                    self.skipped.append((record.path, problem[1]))
                    continue
            self._items.append((record, info))
        self._unreadable: set[int] = set()

        if self.skipped:
            summary = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
            logger.warning(
                "Skipped %d of %d videos (%s):\n%s",
                len(self.skipped),
                len(records),
                summary,
                "\n".join(f"  {path}: {reason}" for path, reason in self.skipped),
            )
        if not self._items:
            summary = ", ".join(f"{count} {kind}" for kind, count in kinds.items()) or "the list was empty"
            raise InvalidInputError(
                f"None of the {len(records)} videos can be used for training ({summary}). Every video needs a "
                f"readable video stream, an audio stream and at least {self.min_seconds:.2f} s of both. "
                + "; ".join(f"{path.name}: {reason}" for path, reason in self.skipped[:5])
            )

    def _problem(self, info: VideoInfo) -> tuple[str, str] | None:
        if not info.has_audio:
            return "without audio", "no audio stream"
        if info.duration < self.min_seconds - 1e-3:
            seconds = f"{info.duration:.2f} s"
            return "too short", f"only {seconds} of picture and sound, shorter than {self.min_seconds:.2f} s"
        return None

    @property
    def records(self) -> list[VideoRecord]:
        return [record for record, _ in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def set_epoch(self, epoch: int) -> None:
        """New clip starts and flips each epoch; call it before iterating (workers copy the dataset then)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        # One generator per (seed, epoch, item): reproducible, and independent of worker count and order.
        rng = np.random.default_rng([self.seed % 2**63, self.epoch % 2**63, int(index)])
        candidate, error = int(index), None
        for _ in range(self.max_retries + 1):
            if candidate not in self._unreadable:
                try:
                    return self._load(candidate, rng)
                except (AVSyncError, av.FFmpegError, OSError) as exc:
                    path = self._items[candidate][0].path
                    logger.warning("Could not read %s (%s); using another video instead.", path, exc)
                    self._unreadable.add(candidate)
                    error = f"{path}: {exc}"
            candidate = int(rng.integers(len(self._items)))
        raise AVSyncError(
            f"{self.max_retries + 1} videos in a row could not be read (last: {error}). Check the dataset files."
        )

    def _load(self, index: int, rng: np.random.Generator) -> dict:
        record, info = self._items[index]
        if info is None:
            info = probe_video(record.path)
            problem = self._problem(info)
            if problem is not None:
                raise InvalidInputError(problem[1])
        span = max(info.duration - self.clip_seconds, 0.0)
        start_draw, flip_draw = rng.random(2)
        if self.deterministic_clip:
            start, flip = span / 2.0, False
        else:
            start, flip = float(start_draw * span), bool(self.random_flip and flip_draw < 0.5)

        images = read_frames(record.path, start + np.arange(self.frames) / self.fps)
        video = torch.stack([self._frame(image) for image in images], dim=1)  # (3, F, size, size)
        if flip:
            video = video.flip(-1)
        audio = self._audio(record.path, start)
        return {
            "video": video.contiguous(),
            "audio": audio,
            "mel": melspectrogram(audio),
            "class_index": self.class_to_index[record.class_name],
            "prompt": self.prompts[record.class_name],
            "path": str(record.path),
            "start": start,
        }

    def _frame(self, image: np.ndarray) -> torch.Tensor:
        # One frame at a time keeps the float copy of a large video frame small.
        return center_crop_resize(torch.from_numpy(image).permute(2, 0, 1)[None], self.size)[0]

    def _audio(self, path: Path, start: float) -> torch.Tensor:
        """(1, N) 16 kHz mono of exactly the clip's seconds; the end is zero-padded if the sound stops early."""
        wanted = int(round(self.clip_seconds * SAMPLE_RATE))
        samples = decode_audio(path, start, self.clip_seconds, sample_rate=SAMPLE_RATE, mono=True).samples
        if samples.shape[1] < wanted:
            samples = torch.nn.functional.pad(samples, (0, wanted - samples.shape[1]))
        return samples[:, :wanted].contiguous()


def collate_clips(batch: list[dict]) -> dict:
    """Stack tensors and numbers; keep strings (prompts, paths) as lists."""
    if not batch:
        raise InvalidInputError("Cannot collate an empty batch.")
    out = {}
    for key, first in batch[0].items():
        values = [item[key] for item in batch]
        if isinstance(first, torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(first, int):
            out[key] = torch.tensor(values, dtype=torch.long)
        elif isinstance(first, float):
            out[key] = torch.tensor(values, dtype=torch.float64)
        else:
            out[key] = values
    return out
