"""The shared atomic text writer: the text as given, crash-safe."""

import os

import pytest

from avsync_core.checkpoints import write_text_atomic


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
