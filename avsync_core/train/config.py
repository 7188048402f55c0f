"""Training configuration: a YAML file plus dotted ``key=value`` overrides, checked against typed dataclasses.

Every key is validated: a misspelt key stops the run before any model is loaded, with the list of valid keys
and the closest match, because a silently ignored ``optim.learnig_rate`` would waste a multi-day run.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from ..audio.windows import check_clip_duration
from ..errors import InvalidInputError
from ..sampling.schedulers import SCHEDULERS

MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "warmup", "cosine")
DEVICES = ("auto", "cpu", "cuda")
SEED_MODULUS = 2**64  # a torch generator takes 64 bits: seeds, and the seeds derived from them, wrap modulo this


@dataclass
class ModelConfig:
    sd15: str | None = None  # SD1.5: diffusers folder (with unet/, vae/, text_encoder/, tokenizer/) or single file
    tokenizer: str | None = None  # CLIP tokenizer folder; single-file checkpoints carry none
    imagebind: str | None = None  # imagebind_huge.pth, an AVSyncD checkpoint folder, or our audio safetensors
    init_from: str | None = None  # fine-tune: an official AVSyncD checkpoint folder or a motion-module file
    tiny: bool = False  # SMOKE TESTS ONLY: random-weight tiny SD1.5-shaped models instead of real ones
    tiny_seed: int = 0


@dataclass
class DataConfig:
    root: str | None = None
    train_split: str = "train"
    val_split: str = "test"
    prompt_file: str | None = None
    frames: int = 12
    fps: float = 6.0
    size: int = 256
    random_flip: bool = True
    num_workers: int = 4
    validate_files: bool = True


@dataclass
class TrainSection:
    batch_size: int = 4  # per process
    gradient_accumulation: int = 2
    max_steps: int = 37000  # optimizer steps
    audio_drop_prob: float = 0.2
    mixed_precision: str = "fp16"
    gradient_checkpointing: bool = True
    deterministic: bool = False
    vae_batch: int = 16  # frames encoded by the VAE at once


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float = 1.0  # 0 = no clipping
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine: final lr as a fraction of lr


@dataclass
class CheckpointConfig:
    every: int = 1000
    keep_last: int = 3
    keep_every: int = 0  # checkpoints at multiples of this are never pruned (0 = none)


@dataclass
class LogConfig:
    every: int = 10
    csv: bool = True
    tensorboard: bool = True
    progress: bool = True


@dataclass
class EvalConfig:
    every: int = 1000  # 0 = no validation renders
    num_clips: int = 4
    steps: int = 50
    scheduler: str = "pndm"
    audio_scale: float = 4.0
    text_scale: float = 1.0
    seed: int = 0


@dataclass
class TrainConfig:
    output_dir: str = "runs/avsync"
    seed: int = 123
    device: str = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSection = field(default_factory=TrainSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def global_batch(self, world_size: int) -> int:
        return self.train.batch_size * self.train.gradient_accumulation * world_size


def valid_keys(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    """Every dotted key a config may set, e.g. ``optim.lr``."""
    keys = []
    for f in dataclasses.fields(cls):
        hint = _hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys += valid_keys(hint, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Defaults <- YAML file <- ``key=value`` overrides (values parsed as YAML scalars)."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"Override {item!r} is not of the form key=value (e.g. optim.lr=5e-5).")
        _set_dotted(raw, key.strip(), yaml.safe_load(text) if text.strip() else None)
    config = _build(TrainConfig, raw, "")
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Value checks that a type alone cannot express."""
    checks = [
        (config.device in DEVICES, f"device must be one of {DEVICES}, got {config.device!r}."),
        (
            config.train.mixed_precision in MIXED_PRECISION,
            f"train.mixed_precision must be one of {MIXED_PRECISION}, got {config.train.mixed_precision!r}.",
        ),
        (
            config.optim.lr_schedule in LR_SCHEDULES,
            f"optim.lr_schedule must be one of {LR_SCHEDULES}, got {config.optim.lr_schedule!r}.",
        ),
        (
            config.eval.scheduler in SCHEDULERS,
            f"eval.scheduler must be one of {sorted(SCHEDULERS)}, got {config.eval.scheduler!r}.",
        ),
        (
            0.0 <= config.train.audio_drop_prob <= 1.0,
            f"train.audio_drop_prob must be in [0, 1], got {config.train.audio_drop_prob}.",
        ),
        (
            config.data.frames >= 2,
            f"data.frames must be at least 2 (frame 0 is the given image), got {config.data.frames}.",
        ),
        (config.data.fps > 0, f"data.fps must be positive, got {config.data.fps}."),
        (
            config.data.size >= 8 and config.data.size % 8 == 0,
            f"data.size must be a multiple of 8 (the VAE's factor), got {config.data.size}.",
        ),
        (config.data.num_workers >= 0, f"data.num_workers must be 0 or more, got {config.data.num_workers}."),
        (config.optim.lr > 0, f"optim.lr must be positive, got {config.optim.lr}."),
        (config.optim.eps > 0, f"optim.eps must be positive, got {config.optim.eps}."),
        (config.optim.weight_decay >= 0, f"optim.weight_decay must be 0 or more, got {config.optim.weight_decay}."),
        (
            config.optim.max_grad_norm >= 0,
            f"optim.max_grad_norm must be 0 (off) or more, got {config.optim.max_grad_norm}.",
        ),
        (config.optim.warmup_steps >= 0, f"optim.warmup_steps must be 0 or more, got {config.optim.warmup_steps}."),
        (
            0.0 <= config.optim.min_lr_ratio <= 1.0,
            f"optim.min_lr_ratio must be in [0, 1], got {config.optim.min_lr_ratio}.",
        ),
        (
            all(0.0 <= b < 1.0 for b in config.optim.betas),
            f"optim.betas must lie in [0, 1), got {list(config.optim.betas)}.",
        ),
        (
            config.checkpoint.keep_last >= 1,
            f"checkpoint.keep_last must be at least 1, got {config.checkpoint.keep_last}.",
        ),
        (config.checkpoint.every >= 1, f"checkpoint.every must be at least 1, got {config.checkpoint.every}."),
        (config.log.every >= 1, f"log.every must be at least 1, got {config.log.every}."),
        (config.eval.every >= 0, f"eval.every must be 0 (off) or more, got {config.eval.every}."),
        (config.eval.steps >= 1 and config.eval.num_clips >= 1, "eval.steps and eval.num_clips must be at least 1."),
    ]
    seeds = {"seed": config.seed, "eval.seed": config.eval.seed, "model.tiny_seed": config.model.tiny_seed}
    for key, seed in seeds.items():
        checks.append((0 <= seed < SEED_MODULUS, f"{key} must be a whole number from 0 to 2**64 - 1, got {seed}."))
    for key in ("batch_size", "gradient_accumulation", "max_steps", "vae_batch"):
        value = getattr(config.train, key)
        checks.append((value >= 1, f"train.{key} must be at least 1, got {value}."))
    for ok, message in checks:
        if not ok:
            raise InvalidInputError(message)
    try:
        check_clip_duration(config.data.frames, config.data.fps)
    except InvalidInputError as exc:
        raise InvalidInputError(f"data.frames / data.fps: {exc}") from None
    if config.model.tiny:
        return
    if not config.model.sd15:
        raise InvalidInputError(
            "model.sd15 is not set: give a Stable Diffusion 1.5 diffusers folder or single-file checkpoint."
        )
    if not config.model.imagebind:
        raise InvalidInputError(
            "model.imagebind is not set: give imagebind_huge.pth, an official AVSyncD checkpoint folder (its "
            "audio_encoder/), or an audio-encoder .safetensors file."
        )


# -- parsing ---------------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InvalidInputError(f"Config file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"Config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInputError(f"Config file {path} must hold a mapping of settings, found a {type(data).__name__}.")
    return data


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InvalidInputError(f"Cannot set {key}: {part} is a value, not a section.")
        node = child
    node[leaf] = value


def _unknown_key(key: str, value: Any, cls: type, prefix: str) -> InvalidInputError:
    full = f"{prefix}{key}"
    while isinstance(value, dict) and len(value) == 1:  # name the whole dotted key the user wrote
        ((child, value),) = value.items()
        full = f"{full}.{child}"
    keys = valid_keys(TrainConfig)
    sections = sorted({k.rsplit(".", 1)[0] for k in keys if "." in k})
    close = difflib.get_close_matches(full, keys + sections, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    here = [f.name for f in dataclasses.fields(cls)]
    return InvalidInputError(
        f"Unknown config key {full!r}.{hint} Valid keys{' in ' + prefix[:-1] if prefix else ''}: {', '.join(here)}. "
        f"All keys: {', '.join(keys)}."
    )


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{prefix[:-1] or 'The config'} must be a section (a mapping), got {raw!r}.")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise _unknown_key(str(key), raw[key], cls, prefix)
    values = {}
    for name in names & set(raw):
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name], f"{prefix}{name}.")
        else:
            values[name] = _coerce(raw[name], hint, f"{prefix}{name}")
    return cls(**values)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise InvalidInputError(f"{key} must be a list of {len(args)} numbers, got {value!r}.")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise InvalidInputError(f"{key} must be true or false, got {value!r}.")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise InvalidInputError(f"{key} must be a whole number, got {value!r}.")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)  # exact, also above 2**53 (seeds)
        try:
            number = float(value)
        except ValueError:
            raise InvalidInputError(f"{key} must be a whole number, got {value!r}.") from None
        if not number.is_integer():
            raise InvalidInputError(f"{key} must be a whole number, got {value!r}.")
        return int(number)
    if hint is float:
        if isinstance(value, bool):
            raise InvalidInputError(f"{key} must be a number, got {value!r}.")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{key} must be a number, got {value!r}.") from None
    if hint is str:
        if isinstance(value, bool):  # YAML reads a bare no/off/yes/on as a boolean: mixed_precision: no
            return "yes" if value else "no"
        if isinstance(value, (dict, list)) or value is None:
            raise InvalidInputError(f"{key} must be a text value, got {value!r}.")
        return str(value)
    raise InvalidInputError(f"{key}: unsupported setting type {hint}.")  # a bug in the dataclasses above


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
