"""Exact resume: a run killed with SIGKILL while writing a checkpoint leaves the previous checkpoint intact,
``--resume latest`` never picks the partial one, and the resumed run reaches exactly the parameters (and
optimizer state) of a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from avsync_core.errors import CheckpointError
from avsync_core.model.motion_files import load_motion_module
from avsync_core.train import checkpointing
from avsync_core.train.__main__ import main
from avsync_core.train.logs import read_log
from tests.synthetic_av import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "train" / "tiny_cpu.yaml")

# Runs the CLI with the checkpoint's state file write stalled at step 4, after the motion module and part of
# state.pt are already in the temporary folder; the marker file tells the test when to kill.
_STALLING_DRIVER = """
import sys, time
from pathlib import Path
from avsync_core.train import checkpointing
from avsync_core.train.__main__ import main

marker, args = Path(sys.argv[1]), sys.argv[2:]
real_write = checkpointing._write_state

def stalled_write(path, state):
    if state["step"] == 4:
        path.write_bytes(b"partial state")
        marker.write_text("writing")
        time.sleep(600)
    real_write(path, state)

checkpointing._write_state = stalled_write
sys.exit(main(args))
"""


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config",
        CONFIG,
        f"data.root={data}",
        f"output_dir={out}",
        "log.progress=false",
        "eval.every=0",
        "train.gradient_checkpointing=false",
        "train.deterministic=true",
        "train.max_steps=4",
        "checkpoint.every=2",
        "checkpoint.keep_last=3",
        "log.every=1",
        "optim.lr_schedule=cosine",
        *extra,
    ]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, per_class=3)
    return root


def _kill_while_writing_step_4(data: Path, out: Path, marker: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _STALLING_DRIVER, str(marker), *_args(data, out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the training run never reached the step-4 checkpoint"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_then_resume_matches_an_uninterrupted_run(dataset, tmp_path):
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    assert main(_args(dataset, uninterrupted)) == 0

    _kill_while_writing_step_4(dataset, interrupted, tmp_path / "marker")
    root = interrupted / "checkpoints"
    partial = [p for p in root.iterdir() if p.name.startswith(".tmp-checkpoint-00000004")]
    assert len(partial) == 1 and (partial[0] / checkpointing.MOTION_FILE).is_file()  # killed mid-write
    assert [step for step, _ in checkpointing.list_checkpoints(root)] == [2]
    latest = checkpointing.resolve_resume("latest", root)
    assert latest == root / "checkpoint-00000002"
    assert checkpointing.load_state(latest)["step"] == 2
    load_motion_module(latest / checkpointing.MOTION_FILE)  # the previous checkpoint is whole and loadable
    with pytest.raises(CheckpointError, match="not a complete training checkpoint"):
        checkpointing.resolve_resume(str(partial[0]), root)
    assert not (interrupted / "motion_module.safetensors").exists()

    assert main(_args(dataset, interrupted, "--resume", "latest")) == 0
    assert not any(p.name.startswith(".") for p in root.iterdir())  # the partial folder was cleaned up
    expected = load_file(str(uninterrupted / "motion_module.safetensors"))
    resumed = load_file(str(interrupted / "motion_module.safetensors"))
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    a = checkpointing.load_state(uninterrupted / "checkpoints" / "checkpoint-00000004")
    b = checkpointing.load_state(root / "checkpoint-00000004")
    assert a["lr_scheduler"] == b["lr_scheduler"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert [int(r["step"]) for r in read_log(interrupted / "logs" / "train_log.csv")] == [1, 2, 3, 4]
    assert (
        read_log(interrupted / "logs" / "train_log.csv")[3]["loss"]
        == read_log(uninterrupted / "logs" / "train_log.csv")[3]["loss"]
    )


def test_resume_from_an_explicit_folder_and_refusals(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(dataset, out, "train.max_steps=2")) == 0
    checkpoint = out / "checkpoints" / "checkpoint-00000002"
    # Continue the finished 2-step run to 3 steps from the explicit folder.
    assert main(_args(dataset, out, "train.max_steps=3", "checkpoint.every=3", "--resume", str(checkpoint))) == 0
    assert [s for s, _ in checkpointing.list_checkpoints(out / "checkpoints")] == [2, 3]
    assert main(_args(dataset, tmp_path / "other", "--resume", str(tmp_path / "nowhere"))) == 2
    assert "Cannot resume from" in capsys.readouterr().err
    (checkpoint / checkpointing.STATE_FILE).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        checkpointing.load_state(checkpoint)
