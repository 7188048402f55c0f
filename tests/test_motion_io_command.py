"""``python -m avsync_core.motion_io``: extract a motion module (fp16 halves it) and convert ImageBind files."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from avsync_core.audio import ImageBindAudioEncoder
from avsync_core.model.motion_files import load_motion_module
from avsync_core.model.motion_module import is_motion_key
from avsync_core.motion_io import main
from conftest import REPO_ROOT, golden_dir, load_golden


def test_extract_in_fp16_halves_the_file_and_keeps_the_weights_to_fp16_rounding(official_tiny_c, tmp_path, capsys):
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    assert main(["extract", str(official_tiny_c), str(full)]) == 0
    assert main(["extract", str(official_tiny_c), str(half), "--dtype", "fp16"]) == 0
    assert f"wrote {half}" in capsys.readouterr().out
    official = {k: v for k, v in load_golden("unet_tiny_c", "unet_tiny_c.safetensors").items() if is_motion_key(k)}
    written = load_file(str(half))
    assert set(written) == set(official)
    assert all(v.dtype == torch.float16 for v in written.values())
    for key, value in official.items():
        assert torch.equal(written[key], value.half()), key
    ratio = half.stat().st_size / full.stat().st_size
    assert 0.49 < ratio < 0.52, ratio
    motion, info = load_motion_module(half)  # loads back, as float32, with the official metadata
    assert (info.frames, info.fps) == (12, 6.0) and next(motion.parameters()).dtype == torch.float32
    assert not list(tmp_path.glob(".*.tmp")), "atomic write must not leave temporary files"


def test_convert_writes_the_compact_imagebind_file(tmp_path):
    out = tmp_path / "imagebind.safetensors"
    source = golden_dir() / "imagebind_audio_tiny" / "imagebind_audio_tiny.safetensors"
    assert main(["convert", str(source), str(out), "--num-heads", "4"]) == 0
    expected = ImageBindAudioEncoder.from_file(source, num_heads=4).state_dict()
    loaded = ImageBindAudioEncoder.from_file(out).state_dict()
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected)


@pytest.mark.parametrize(
    "args,message",
    [
        (["extract", "{missing}", "{out}"], "not found"),
        (["extract", "{golden}/mel", "{out}"], "not an AVSyncD checkpoint folder"),
        (["extract", "{official}", "{tmp}/motion.bin"], "must be a .safetensors file"),
        (["extract", "{official}", "{tmp}/afile/motion.safetensors"], "Cannot create the folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(official_tiny_c, tmp_path, args, message):
    (tmp_path / "afile").write_text("not a folder")
    names = {
        "missing": tmp_path / "nothing_here",
        "out": tmp_path / "m.safetensors",
        "golden": golden_dir(),
        "official": official_tiny_c,
        "tmp": tmp_path,
    }
    argv = [a.format(**names) for a in args]
    run = subprocess.run(
        [sys.executable, "-m", "avsync_core.motion_io", *argv], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in run.stderr, run.stderr
