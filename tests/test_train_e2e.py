"""End to end on a synthetic dataset (flashing squares clicking in sync) with tiny random SD1.5-shaped models:
the CLI run and what it writes, learning on a fixed batch, mixed precision, and bad input handled clearly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from avsync_core.model.motion_files import load_motion_module
from avsync_core.model.unet import AVSyncUNet
from avsync_core.train import checkpointing
from avsync_core.train.__main__ import main
from avsync_core.train.config import load_config
from avsync_core.train.data import AVClipDataset, collate_clips, load_prompts, scan_dataset
from avsync_core.train.logs import read_log
from avsync_core.train.models import build_models
from avsync_core.train.processes import DistContext
from avsync_core.train.trainer import Trainer
from avsync_core.video import probe_video, read_frames
from tests.synthetic_av import make_synthetic_dataset, write_click_flash_video

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "train" / "tiny_cpu.yaml")


def tiny_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config",
        CONFIG,
        f"data.root={data}",
        f"output_dir={out}",
        "log.progress=false",
        "eval.every=0",
        "train.gradient_checkpointing=false",
        *extra,
    ]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, per_class=3)  # train: 2 per class, test: 1 per class
    return root


@pytest.fixture(scope="module")
def tiny_run(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    args = tiny_args(
        dataset,
        out,
        "train.max_steps=4",
        "checkpoint.every=2",
        "checkpoint.keep_last=1",
        "eval.every=4",
        "eval.steps=2",
        "eval.num_clips=2",
        "log.every=1",
        "train.gradient_checkpointing=true",
        "data.num_workers=1",
    )
    assert main(args) == 0
    return out


def test_cli_run_logs_finite_losses_and_keeps_the_last_checkpoints(tiny_run):
    rows = read_log(tiny_run / "logs" / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 and math.isfinite(r["grad_norm"]) for r in rows)
    assert all(r["seconds_per_step"] > 0 for r in rows)
    assert list((tiny_run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert (tiny_run / "config.yaml").is_file()
    names = sorted(p.name for p in (tiny_run / "checkpoints").iterdir())
    assert names == ["checkpoint-00000004"]  # keep_last 1 pruned step 2; no temporary folder is left


def test_validation_renders_are_mp4s_with_the_clip_sound(tiny_run):
    videos = sorted((tiny_run / "samples" / "step-00000004").glob("*.mp4"))
    assert len(videos) == 2
    for path in videos:
        info = probe_video(path)
        assert info.has_audio and (info.width, info.height) == (64, 64)
        assert abs(info.audio_duration - 2.0) < 0.1  # 4 frames at 2 fps: the clip's 2 s of sound
        assert len(read_frames(path, [0.0, 0.5, 1.0, 1.5])) == 4


def test_saved_motion_module_loads_into_avsyncunet_and_changes_its_output(tiny_run):
    final = tiny_run / "motion_module.safetensors"
    checkpoint = tiny_run / "checkpoints" / "checkpoint-00000004" / checkpointing.MOTION_FILE
    assert load_file(str(final)).keys() == load_file(str(checkpoint)).keys()
    assert all(torch.equal(a, b) for a, b in zip(load_file(str(final)).values(), load_file(str(checkpoint)).values()))

    motion, info = load_motion_module(final)
    assert (info.frames, info.fps, info.metadata["training_step"]) == (4, 2.0, "4")
    config = load_config(CONFIG)
    # The module the run started from: the loop builds it from the run seed, the same way.
    start = build_models(config.model, torch.device("cpu"), seed=config.seed).unet.eval()
    trained = AVSyncUNet(start.base, motion).eval()
    start_state = start.motion.state_dict()
    changed = [k for k, v in load_file(str(final)).items() if not torch.equal(start_state[k], v)]
    assert len(changed) == len(start_state), f"{len(start_state) - len(changed)} tensors were not trained"
    g = torch.Generator().manual_seed(0)
    inputs = (
        torch.randn(1, 4, 4, 8, 8, generator=g),
        torch.tensor([500]),
        torch.randn(1, 77, 32, generator=g),
        torch.randn(1, 229, 48, generator=g),
    )
    with torch.no_grad():
        difference = (trained(*inputs) - start(*inputs)).abs().max()
    assert difference > 1e-3


def _trainer(dataset: Path, *overrides: str):
    cfg = load_config(CONFIG, [f"data.root={dataset}", "train.gradient_checkpointing=false", *overrides])
    records, classes = scan_dataset(dataset, "train")
    prompts = load_prompts(classes, None)
    clips = AVClipDataset(records, classes, prompts, frames=cfg.data.frames, fps=cfg.data.fps, size=cfg.data.size)
    models = build_models(cfg.model, torch.device("cpu"), _dtype(cfg), gradient_checkpointing=False)
    return Trainer(cfg, models, DistContext(), [prompts[c] for c in classes]), clips


def _dtype(cfg) -> torch.dtype:
    return {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.train.mixed_precision]


def _batch(clips, indices: list[int]) -> dict:
    batch = collate_clips([clips[i] for i in indices])
    batch["position"] = torch.arange(len(indices))
    return batch


@pytest.mark.slow
def test_fifty_steps_on_a_fixed_batch_lower_the_loss_clearly(dataset):
    trainer, clips = _trainer(dataset, "optim.lr=1e-3", "optim.lr_schedule=constant", "train.batch_size=1")
    batch = _batch(clips, [0])
    # The same step key every time: the same noise, timestep and audio drop, so the loss measures the fit.
    losses = [trainer.train_step([batch], step=0).loss for _ in range(51)]
    assert all(math.isfinite(x) for x in losses)
    assert losses[50] < 0.7 * losses[0], f"loss {losses[0]:.4f} -> {losses[50]:.4f} after 50 steps"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_keep_fp32_master_weights(dataset, precision):
    trainer, clips = _trainer(dataset, f"train.mixed_precision={precision}", "train.batch_size=1")
    before = [p.detach().clone() for p in trainer.params]
    result = trainer.train_step([_batch(clips, [1])], step=0)
    assert math.isfinite(result.loss) and math.isfinite(result.grad_norm)
    assert all(p.dtype == torch.float32 for p in trainer.models.unet.motion.parameters())
    assert all(p.dtype == _dtype(trainer.config) for p in trainer.models.unet.base.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params))
    assert trainer.scaler.is_enabled() == (precision == "fp16")


# -- bad input -------------------------------------------------------------------------------------------


def _fails(capsys, args: list[str], message: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err


def test_empty_dataset_folder_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fails(capsys, tiny_args(tmp_path / "empty", tmp_path / "out"), "No videos found")


def test_dataset_of_broken_or_silent_videos_is_refused(tmp_path, capsys):
    root = tmp_path / "bad"
    (root / "dog").mkdir(parents=True)
    (root / "dog" / "broken.mp4").write_bytes(b"not a video at all")
    write_click_flash_video(root / "dog" / "silent.mp4", with_audio=False)
    _fails(capsys, tiny_args(root, tmp_path / "out"), "None of the 2 videos can be used for training")


def test_a_corrupt_video_among_good_ones_is_skipped(dataset, tmp_path, caplog):
    root = tmp_path / "mixed"
    (root / "hammer").mkdir(parents=True)
    for name in ("hammer_0.mp4", "hammer_1.mp4"):
        (root / "hammer" / name).write_bytes((dataset / "videos" / "hammer" / name).read_bytes())
    (root / "hammer" / "corrupt.mp4").write_bytes(b"\x00" * 2048)
    assert main(tiny_args(root, tmp_path / "out", "train.max_steps=1", "train.batch_size=1")) == 0
    assert "corrupt.mp4" in caplog.text
    assert (tmp_path / "out" / "motion_module.safetensors").is_file()


def test_output_folder_that_cannot_be_written_is_refused(dataset, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    _fails(capsys, tiny_args(dataset, blocker / "out"), "is not writable")


def test_existing_checkpoints_are_not_overwritten_without_resume(tiny_run, dataset, capsys):
    _fails(capsys, tiny_args(dataset, tiny_run), "Pass --resume latest")


def test_out_of_memory_gives_advice_and_keeps_the_last_checkpoint(dataset, tmp_path, capsys, monkeypatch):
    real_step = Trainer.train_step

    def step_then_oom(self, micro_batches, step):
        if step >= 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_step(self, micro_batches, step)

    monkeypatch.setattr(Trainer, "train_step", step_then_oom)
    out = tmp_path / "out"
    _fails(
        capsys,
        tiny_args(dataset, out, "train.max_steps=3", "checkpoint.every=1", "train.batch_size=1"),
        "Out of memory during training",
    )
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["checkpoint-00000001"]
    assert checkpointing.load_state(out / "checkpoints" / "checkpoint-00000001")["step"] == 1
    assert not (out / "motion_module.safetensors").exists()
