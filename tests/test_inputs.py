"""The cheap checks hosts run before loading any model: numbers finite and in range, files inside their folder,
and a decode request refused from the file's header alone."""

from __future__ import annotations

import struct

import pytest

from avsync_core.audio import check_decode_request
from avsync_core.errors import AudioError, InvalidInputError
from avsync_core.inputs import check_number, file_inside
from comfy_host import write_clicks


@pytest.mark.parametrize(
    "value, says",
    [
        (float("nan"), "steps must be a finite number"),
        (float("inf"), "steps must be a finite number"),
        (-1, "steps must be between 0 and 10, got -1"),
        (11.5, "steps must be between 0 and 10, got 11.5"),
        ("3", "steps must be a number, got '3'"),
        (True, "steps must be a number, got True"),
    ],
)
def test_numbers_must_be_finite_and_in_range(value, says):
    with pytest.raises(InvalidInputError, match=says):
        check_number("steps", value, 0, 10)


def test_numbers_in_range_pass_as_floats():
    assert check_number("steps", 10, 0, 10) == 10.0 and check_number("x", -1e300) == -1e300


def test_files_must_stay_inside_their_folder(tmp_path):
    inside, outside = tmp_path / "input", tmp_path / "private"
    (inside / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"x")
    (inside / "sub" / "ok.wav").write_bytes(b"x")
    (inside / "link.wav").symlink_to(outside / "secret.wav")
    assert file_inside("audio", "sub/ok.wav", inside) == (inside / "sub" / "ok.wav").resolve()
    assert file_inside("audio", "sub/../sub/ok.wav", inside) == (inside / "sub" / "ok.wav").resolve()
    for name in ("../private/secret.wav", "link.wav", str(outside / "secret.wav")):
        with pytest.raises(InvalidInputError, match=f"audio: '{name}' leads outside the folder") as error:
            file_inside("audio", name, inside)
        assert str(tmp_path) not in str(error.value).replace(name, "")  # the server's folders are not shown


def test_a_decode_request_is_judged_from_the_header(tmp_path):
    clap = write_clicks(tmp_path / "clap.wav", seconds=2.0)
    assert check_decode_request(clap) == pytest.approx(2.0)
    assert check_decode_request(clap, start=0.5, duration=1.0) == pytest.approx(1.0)
    with pytest.raises(AudioError, match="at or past the end"):
        check_decode_request(clap, start=2.0)
    hour = tmp_path / "hour.wav"  # a header declaring an hour of 16 kHz mono 16-bit, over a sparse data chunk
    data = 16000 * 2 * 3600
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    with open(hour, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", data))
        f.truncate(44 + data)
    with pytest.raises(InvalidInputError, match="3600 s of audio were requested in one piece, above the limit"):
        check_decode_request(hour)
    assert check_decode_request(hour, start=1800.0, duration=10.0) == 10.0
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="is empty"):
        check_decode_request(tmp_path / "empty.wav")
