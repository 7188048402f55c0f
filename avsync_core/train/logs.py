"""Training logs: a CSV file (always readable, no dependency) and TensorBoard when the package is installed."""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

from ..checkpoints import write_text_atomic

logger = logging.getLogger(__name__)

COLUMNS = ("step", "epoch", "loss", "lr", "grad_norm", "seconds_per_step", "samples_per_second", "wall_time")


class TrainLogger:
    """Rank 0's metrics sink. On resume, rows past the resumed step (logged after that checkpoint by the
    interrupted run) are dropped so the CSV reads as one continuous run."""

    def __init__(
        self, folder: str | os.PathLike, start_step: int, csv_enabled: bool = True, tensorboard: bool = True
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.folder / "train_log.csv" if csv_enabled else None
        if self.csv_path is not None:
            _truncate_csv(self.csv_path, start_step)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.warning(
                    "TensorBoard logging is off: the tensorboard package is not installed (pip install tensorboard)."
                )
            else:
                self.writer = SummaryWriter(str(self.folder / "tensorboard"), purge_step=start_step + 1)

    def log(self, row: dict[str, float]) -> None:
        if self.csv_path is not None:
            new = not self.csv_path.exists()
            with open(self.csv_path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow(row)
        if self.writer is not None:
            step = int(row["step"])
            for key in ("loss", "lr", "grad_norm", "seconds_per_step", "samples_per_second"):
                if key in row:
                    self.writer.add_scalar(f"train/{key}", row[key], step)

    def log_text(self, tag: str, text: str, step: int) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_log(path: str | os.PathLike) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _truncate_csv(path: Path, start_step: int) -> None:
    if not path.exists():
        return
    rows = [row for row in read_log(path) if row["step"] <= start_step]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows({k: (int(v) if k == "step" else v) for k, v in row.items()} for row in rows)
    write_text_atomic(path, text.getvalue())
