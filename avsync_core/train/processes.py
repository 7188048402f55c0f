"""The processes of a training run: one, or many under torchrun / accelerate launch, and their RNG states.

Several processes are recognised from the environment torchrun and accelerate both set (``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); collectives run over gloo (CPU) or NCCL (GPU).
"""

from __future__ import annotations

import datetime
import os
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist

from ..errors import InvalidInputError


@dataclass
class DistContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.initialized:
            torch_dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if not self.initialized:
            return value
        value = value.clone()
        torch_dist.all_reduce(value)
        return value / self.world_size

    def gather(self, obj: Any) -> list[Any]:
        if not self.initialized:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.initialized and torch_dist.is_initialized():
            torch_dist.destroy_process_group()
        self.initialized = False


def select_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device=cuda, but PyTorch sees no CUDA GPU. Use device=cpu or auto.")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def process_environment() -> tuple[int, int, int]:
    """``(world_size, rank, local_rank)`` from the variables torchrun / accelerate set, checked: a launcher
    misconfigured by hand gets one clear message instead of a ValueError from ``int()``."""
    values = {}
    for name, default in (("WORLD_SIZE", "1"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        raw = os.environ.get(name, default).strip() or default
        try:
            values[name] = int(raw)
        except ValueError:
            raise InvalidInputError(
                f"The environment variable {name}={raw!r} is not a whole number. It is set by torchrun or "
                "accelerate launch; unset it for a single-process run."
            ) from None
    world, rank, local_rank = values["WORLD_SIZE"], values["RANK"], values["LOCAL_RANK"]
    if world < 1 or not 0 <= rank < world or local_rank < 0:
        raise InvalidInputError(
            f"WORLD_SIZE={world}, RANK={rank}, LOCAL_RANK={local_rank} do not describe a process group (it needs "
            "WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0). Launch with torchrun or accelerate "
            "launch, or unset them for a single-process run."
        )
    return world, rank, local_rank


def init_distributed(preference: str = "auto") -> DistContext:
    """One process, or the process group described by torchrun's / accelerate's environment variables."""
    world, rank, local_rank = process_environment()
    device = select_device(preference, local_rank)
    if world <= 1:
        return DistContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch_dist.init_process_group(backend, timeout=datetime.timedelta(minutes=60))
    return DistContext(world, rank, local_rank, device, True)


# -- one optimisation step -----------------------------------------------------------------------------


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG states, as plain tensors and numbers (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
