"""Which clips each process trains on at each step: one global sample stream, cut into global batches.

The stream is the concatenation of per-epoch permutations of the dataset (seeded by run seed and epoch).
Optimizer step ``s`` uses stream positions ``[s·G, (s+1)·G)`` with ``G = batch × accumulation × processes``;
accumulation micro-step ``m`` of process ``r`` takes the ``batch`` positions starting at
``s·G + (m·processes + r)·batch``. So the samples of a step do not depend on how ``G`` is split across
processes and micro-steps, a step is found from its number alone (exact resume needs no iterator state),
and an epoch boundary may fall inside a batch (datasets smaller than ``G`` work).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Dataset

from .config import SEED_MODULUS
from .data import AVClipDataset


class GlobalBatchStream:
    def __init__(
        self, dataset_size: int, seed: int, batch_size: int, accumulation: int, world_size: int, rank: int
    ) -> None:
        self.size, self.seed = int(dataset_size), int(seed)
        self.batch_size, self.accumulation = int(batch_size), int(accumulation)
        self.world_size, self.rank = int(world_size), int(rank)
        self._permutations: dict[int, list[int]] = {}

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.accumulation * self.world_size

    def positions(self, step: int, micro: int) -> list[int]:
        start = step * self.global_batch + (micro * self.world_size + self.rank) * self.batch_size
        return list(range(start, start + self.batch_size))

    def item(self, position: int) -> tuple[int, int]:
        """(epoch, dataset index) of a stream position."""
        epoch, offset = divmod(position, self.size)
        if epoch not in self._permutations:
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % SEED_MODULUS)
            self._permutations = {epoch: torch.randperm(self.size, generator=generator).tolist()}
        return epoch, self._permutations[epoch][offset]

    def epoch_of(self, step: int) -> float:
        return step * self.global_batch / self.size

    def micro_batches(self, start_step: int) -> Iterator[list[tuple[int, int, int]]]:
        """Endless (epoch, index, position) lists for this process, micro-step by micro-step from ``start_step``."""
        step = start_step
        while True:
            for micro in range(self.accumulation):
                yield [(*self.item(p), p) for p in self.positions(step, micro)]
            step += 1


class StreamBatchSampler:
    """Adapts the stream to DataLoader's ``batch_sampler`` (it has no length: training is counted in steps)."""

    def __init__(self, stream: GlobalBatchStream, start_step: int) -> None:
        self.stream, self.start_step = stream, start_step

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        return self.stream.micro_batches(self.start_step)


class StreamClips(Dataset):
    """Clips addressed by (epoch, index, position): the epoch sets the clip start and flip, the position
    travels with the sample so the loss can draw that sample's noise."""

    def __init__(self, clips: AVClipDataset) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        epoch, index, position = key
        self.clips.set_epoch(epoch)
        item = self.clips[index]
        item["position"] = position
        return item
