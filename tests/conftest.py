"""Shared test fixtures: where the golden reference tensors live, and how to load them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

# The host matrix: every host test runs on each ComfyUI host, named in its id (host_matrix.py).
from host_matrix import pytest_collection_modifyitems, pytest_configure, pytest_generate_tests  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]


def golden_dir() -> Path:
    """The golden folder is required: the goldens define correctness, so a missing one fails loudly."""
    candidates = [os.environ.get("AVSYNC_GOLDEN_DIR"), REPO_ROOT.parent / "shared" / "golden"]
    for candidate in candidates:
        if candidate and Path(candidate, "README.md").is_file():
            return Path(candidate)
    raise FileNotFoundError(
        "The golden reference tensors were not found. Put the project's shared/ folder beside the repository "
        "(../shared/golden) or point AVSYNC_GOLDEN_DIR at it."
    )


@pytest.fixture(scope="session")
def golden() -> Path:
    return golden_dir()


def load_golden(*parts: str) -> dict[str, torch.Tensor]:
    return load_file(str(golden_dir().joinpath(*parts)))


def load_golden_json(*parts: str) -> dict:
    return json.loads(golden_dir().joinpath(*parts).read_text())


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str = "") -> None:
    """max |actual - expected| <= rel * max |expected| (the goldens' own tolerance rule)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    actual = actual.detach().double()
    expected = expected.detach().double()
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= rel * scale, f"{what}: max |diff| {err:.3e} > {rel:g} x max|ref| {scale:.3e}"


def write_official_unet_folder(name: str, dest: Path) -> Path:
    """Lay a golden tiny UNet out as an official AVSyncD checkpoint (``<dest>/unet/`` with config + weights)."""
    src = golden_dir() / name
    unet_dir = dest / "unet"
    unet_dir.mkdir(parents=True, exist_ok=True)
    (unet_dir / "config.json").write_bytes((src / "config.json").read_bytes())
    (unet_dir / "diffusion_pytorch_model.safetensors").write_bytes((src / f"{name}.safetensors").read_bytes())
    return dest


@pytest.fixture(scope="session")
def official_tiny_a(tmp_path_factory) -> Path:
    return write_official_unet_folder("unet_tiny_a", tmp_path_factory.mktemp("official_a"))


@pytest.fixture(scope="session")
def official_tiny_c(tmp_path_factory) -> Path:
    return write_official_unet_folder("unet_tiny_c", tmp_path_factory.mktemp("official_c"))


@pytest.fixture(scope="session")
def unet_tiny_a(official_tiny_a):
    """Shared across tests: never modify it; load your own copy when a test needs to change weights."""
    from avsync_core.model.unet import AVSyncUNet

    return AVSyncUNet.from_official(official_tiny_a)


@pytest.fixture(scope="session")
def unet_tiny_c(official_tiny_c):
    from avsync_core.model.unet import AVSyncUNet

    return AVSyncUNet.from_official(official_tiny_c)
