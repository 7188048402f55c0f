"""Several processes: two CPU processes (gloo, launched by torchrun) train to the same parameters as one process
with the same global batch, and as one process reaching that batch by gradient accumulation; plus the global
sample stream that makes this hold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from avsync_core.train.__main__ import main
from avsync_core.train.batches import GlobalBatchStream
from avsync_core.train.config import load_config
from avsync_core.train.logs import read_log
from avsync_core.train.models import build_models
from conftest import assert_close_rel
from tests.synthetic_av import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "train" / "tiny_cpu.yaml")
REL = 1e-5  # all-reduce and batch splits change only float summation order


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    # Adam divides each gradient by its own magnitude, so for gradients that are zero up to rounding (biases
    # before a GroupNorm) it turns float noise into full-size steps. With eps = 1 the update is linear in the
    # gradient (momentum SGD), and a difference in the parameters is a difference in the gradients.
    return [
        f"data.root={data}",
        f"output_dir={out}",
        "log.progress=false",
        "eval.every=0",
        "train.max_steps=3",
        "train.gradient_checkpointing=false",
        "checkpoint.every=3",
        "log.every=1",
        "optim.eps=1.0",
        "optim.lr=0.1",
        "optim.weight_decay=0",
        *extra,
    ]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, per_class=4)  # 6 training videos: the global batch of 4 crosses an epoch
    return root


def _parameters(out: Path) -> torch.Tensor:
    trained = load_file(str(out / "motion_module.safetensors"))
    return torch.cat([trained[k].flatten() for k in sorted(trained)])


def _assert_same_training(reference: torch.Tensor, other: torch.Tensor, start: torch.Tensor, what: str) -> None:
    """Parameters equal within REL of their scale (fp32 keeps ~1e-7 of it), after updates far larger than that."""
    assert (reference - start).abs().max() > 100 * REL * reference.abs().max()
    assert_close_rel(other, reference, REL, what)


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(dataset, tmp_path):
    single, accumulated, two = tmp_path / "single", tmp_path / "accumulated", tmp_path / "torchrun"
    assert main(["--config", CONFIG, *_args(dataset, single, "train.batch_size=4")]) == 0
    assert (
        main(["--config", CONFIG, *_args(dataset, accumulated, "train.batch_size=2", "train.gradient_accumulation=2")])
        == 0
    )

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "avsync_core.train",
        "--config",
        CONFIG,
        *_args(dataset, two, "train.batch_size=2"),
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    fresh = build_models(load_config(CONFIG).model, torch.device("cpu"), seed=0).unet.motion.state_dict()
    start = torch.cat([fresh[k].flatten() for k in sorted(fresh)])
    reference = _parameters(single)
    _assert_same_training(reference, _parameters(two), start, "motion module, torchrun 2 x 2 vs 1 x 4")
    _assert_same_training(reference, _parameters(accumulated), start, "motion module, 1 x 2 x accumulation 2 vs 1 x 4")
    losses = {
        name: [r["loss"] for r in read_log(path / "logs" / "train_log.csv")]
        for name, path in (("single", single), ("two", two))
    }
    assert len(losses["two"]) == 3
    for a, b in zip(losses["single"], losses["two"]):
        assert abs(a - b) <= REL * abs(a)


def test_the_global_batch_does_not_depend_on_how_it_is_split():
    one = GlobalBatchStream(6, seed=3, batch_size=4, accumulation=1, world_size=1, rank=0)
    split = [GlobalBatchStream(6, seed=3, batch_size=1, accumulation=2, world_size=2, rank=r) for r in range(2)]
    for step in range(5):
        whole = one.positions(step, 0)
        parts = sorted(p for stream in split for micro in range(2) for p in stream.positions(step, micro))
        assert parts == whole
    # Positions map to every video once per epoch, in a new order each epoch.
    epoch0 = [one.item(p) for p in range(6)]
    epoch1 = [one.item(p) for p in range(6, 12)]
    assert sorted(i for _, i in epoch0) == sorted(i for _, i in epoch1) == list(range(6))
    assert {e for e, _ in epoch0} == {0} and {e for e, _ in epoch1} == {1}
    assert [i for _, i in epoch0] != [i for _, i in epoch1]
