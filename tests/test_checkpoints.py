"""The shared weight reader and atomic writers: aligned tensors from safetensors, crash-safe text files."""

import os

import pytest
import torch
from safetensors.torch import save_file

from avsync_core.checkpoints import read_state_dict, write_text_atomic


def test_safetensors_tensors_come_back_aligned_and_equal(tmp_path):
    """Unaligned tensors take other CPU kernels (last-bit differences); the reader hands out aligned memory."""
    tensors = {"odd": torch.arange(3, dtype=torch.float16), "w": torch.randn(7, 5), "b": torch.randn(5)}
    save_file(tensors, tmp_path / "w.safetensors")
    read = read_state_dict(tmp_path / "w.safetensors")
    for key, value in tensors.items():
        assert read[key].data_ptr() % 64 == 0, key
        assert torch.equal(read[key], value), key


def test_text_is_written_as_given_and_no_temp_file_stays(tmp_path):
    target = tmp_path / "sub" / "scores.csv"
    write_text_atomic(target, "a,b\r\n1,2\r\n")
    assert target.read_bytes() == b"a,b\r\n1,2\r\n"
    assert os.listdir(target.parent) == ["scores.csv"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "scores.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["scores.json"]
