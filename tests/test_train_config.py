"""Training config: YAML + dotted overrides, typed values, clear errors for unknown keys and bad values,
the shipped example configs, the learning-rate schedules, and the CLI's user-error path (exit code 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avsync_core.errors import InvalidInputError
from avsync_core.train.__main__ import main
from avsync_core.train.config import TrainConfig, load_config, valid_keys
from avsync_core.train.trainer import lr_factor

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "train"


def test_paper_recipe_config_holds_the_paper_settings():
    cfg = load_config(CONFIGS / "avsync15.yaml")
    assert (cfg.data.frames, cfg.data.fps, cfg.data.size) == (12, 6.0, 256)
    assert cfg.train.batch_size * cfg.train.gradient_accumulation * 8 == 64
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.lr_schedule) == (1e-4, 1e-2, "constant")
    assert cfg.train.mixed_precision == "fp16" and cfg.train.gradient_checkpointing
    assert cfg.train.audio_drop_prob == 0.2 and cfg.train.max_steps == 37000 and cfg.checkpoint.every == 1000


def test_tiny_config_uses_tiny_models_on_the_cpu():
    cfg = load_config(CONFIGS / "tiny_cpu.yaml")
    assert cfg.model.tiny and cfg.device == "cpu" and cfg.train.mixed_precision == "no"
    assert cfg.data.frames / cfg.data.fps == 2.0  # the audio window the segment masks are made for


def test_overrides_are_typed_and_win_over_the_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("optim:\n  lr: 1.0e-4\ntrain:\n  batch_size: 4\nmodel:\n  tiny: true\n")
    cfg = load_config(
        path,
        [
            "optim.lr=5e-5",
            "train.batch_size=2",
            "optim.betas=[0.8, 0.99]",
            "train.gradient_checkpointing=false",
            "model.init_from=null",
            "data.root=/x",
        ],
    )
    assert cfg.optim.lr == 5e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.train.batch_size == 2 and cfg.optim.betas == (0.8, 0.99)
    assert cfg.train.gradient_checkpointing is False and cfg.model.init_from is None and cfg.data.root == "/x"
    assert load_config(None, ["model.tiny=true"]).to_dict() == load_config(None, ["model.tiny=true"]).to_dict()
    # YAML reads a bare "no" as false; for a text setting it still means "no".
    assert load_config(path, ["train.mixed_precision=no"]).train.mixed_precision == "no"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("optim.learnig_rate=1", "Did you mean 'optim.lr'"),
        ("train.batchsize=2", "Did you mean 'train.batch_size'"),
        ("trian.max_steps=2", "Did you mean 'train.max_steps'"),
    ],
)
def test_unknown_keys_name_the_closest_valid_key(override, expected):
    with pytest.raises(InvalidInputError, match=expected) as info:
        load_config(None, ["model.tiny=true", override])
    assert "optim.weight_decay" in str(info.value)  # and list the valid keys


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.mixed_precision=fp8", "mixed_precision must be one of"),
        ("train.batch_size=0", "batch_size must be at least 1"),
        ("train.batch_size=1.5", "whole number"),
        ("optim.lr=fast", "must be a number"),
        ("train.audio_drop_prob=1.5", r"audio_drop_prob must be in \[0, 1\]"),
        ("data.size=100", "multiple of 8"),
        ("eval.scheduler=magic", "eval.scheduler must be one of"),
        ("train.deterministic=maybe", "true or false"),
        ("optim=3", "must be a section"),
        ("optim.lr", "not of the form key=value"),
        (f"seed={2**64}", r"seed must be a whole number from 0 to 2\*\*64 - 1, got 18446744073709551616"),
        ("seed=-1", r"seed must be a whole number from 0 to 2\*\*64 - 1, got -1"),
        (f"eval.seed={2**65}", r"eval.seed must be a whole number from 0"),
        ("data.fps=3", r"data.frames / data.fps: 12 frames at 3 fps cover 4 s.*Set fps to frames / 2 = 6"),
    ],
)
def test_bad_values_are_refused_with_the_reason(override, message):
    with pytest.raises(InvalidInputError, match=message):
        load_config(None, ["model.tiny=true", override])


def test_real_models_need_their_paths():
    with pytest.raises(InvalidInputError, match="model.sd15 is not set"):
        load_config(None, [])
    with pytest.raises(InvalidInputError, match="model.imagebind is not set"):
        load_config(None, ["model.sd15=/models/sd15"])


def test_config_file_problems_are_clear(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(InvalidInputError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(InvalidInputError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_every_key_of_the_dataclasses_is_settable():
    keys = valid_keys()
    assert "optim.lr" in keys and "eval.every" in keys and "output_dir" in keys
    overrides = [f"{k}={v}" for k, v in (("log.every", 3), ("checkpoint.keep_every", 5000), ("eval.text_scale", 2))]
    cfg = load_config(None, ["model.tiny=true", *overrides])
    assert (cfg.log.every, cfg.checkpoint.keep_every, cfg.eval.text_scale) == (3, 5000, 2.0)


def _cfg(**optim) -> TrainConfig:
    cfg = load_config(None, ["model.tiny=true", "train.max_steps=100"])
    for k, v in optim.items():
        setattr(cfg.optim, k, v)
    return cfg


def test_learning_rate_schedules():
    assert [lr_factor(_cfg(), s) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    warm = _cfg(lr_schedule="warmup", warmup_steps=10)
    assert lr_factor(warm, 0) == pytest.approx(0.1) and lr_factor(warm, 9) == 1.0 and lr_factor(warm, 60) == 1.0
    cos = _cfg(lr_schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(cos, 4) == pytest.approx(0.5)
    assert lr_factor(cos, 10) == pytest.approx(1.0)
    assert lr_factor(cos, 55) == pytest.approx(0.55)
    assert lr_factor(cos, 100) == pytest.approx(0.1)


def test_cli_reports_user_errors_without_a_traceback(capsys):
    assert main(["--config", str(CONFIGS / "tiny_cpu.yaml"), "optim.lerning_rate=1"]) == 2
    err = capsys.readouterr().err
    assert "avsync train: error: Unknown config key 'optim.lerning_rate'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RANK": "zero"}, "RANK='zero' is not a whole number"),
        ({"WORLD_SIZE": "2x"}, "WORLD_SIZE='2x' is not a whole number"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "WORLD_SIZE=2, RANK=2, LOCAL_RANK=0 do not describe a process group"),
        ({"WORLD_SIZE": "0"}, "do not describe a process group"),
    ],
)
def test_cli_reports_a_bad_launcher_environment_in_one_line(capsys, monkeypatch, env, message):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["--config", str(CONFIGS / "tiny_cpu.yaml"), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("avsync train: error: ")
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_seeds_near_the_top_of_the_range_wrap_instead_of_overflowing():
    from avsync_core.train.batches import GlobalBatchStream
    from avsync_core.train.loop import _seed_everything
    from avsync_core.train.processes import DistContext

    top = load_config(None, ["model.tiny=true", f"seed={2**64 - 1}"])
    _seed_everything(top, DistContext(world_size=2, rank=1))  # seed + rank = 2**64 wraps to 0
    after_wrap = torch.rand(2)
    torch.manual_seed(0)
    assert torch.equal(after_wrap, torch.rand(2))
    stream = GlobalBatchStream(5, seed=2**64 - 1, batch_size=2, accumulation=1, world_size=1, rank=0)
    assert sorted(stream.item(p)[1] for p in range(5)) == list(range(5))


def test_cli_prints_the_resolved_config(capsys):
    assert main(["--config", str(CONFIGS / "tiny_cpu.yaml"), "train.max_steps=7", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "max_steps: 7" in printed and "tiny: true" in printed
