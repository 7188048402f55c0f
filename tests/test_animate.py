"""``python -m avsync_core.animate``: one animation without ComfyUI, on tiny model files written to disk.

The SD1.5 folder holds the golden unet_tiny_c's SD1.5 part with a random tiny VAE and CLIP; the motion module
is unet_tiny_c's; the ImageBind file is the golden tiny one (``tests/tiny_models.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np
import pytest
import torch

from avsync_core.animate import main
from avsync_core.audio import Waveform
from avsync_core.pipeline import decode_latents, encode_image, load_image
from avsync_core.sd15.components import load_vae
from avsync_core.video import write_video
from conftest import REPO_ROOT
from tests.tiny_models import write_image, write_tiny_models, write_wav

SIZE = 64
# Frame 0 in the mp4 against the VAE round trip of the image, compared as 4x4-pixel block means: the random VAE
# decodes to pixel-level noise that H.264 (crf 18) and yuv420p's 2x2 chroma subsampling smear, but they keep
# block means (measured: 0.0075 mean |diff|; the round trip of another image is 0.078 away, frame 1 0.135).
FIRST_FRAME_BLOCK = 4
FIRST_FRAME_MEAN_ABS = 0.02


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("animate")
    paths = write_tiny_models(root)
    paths["image"] = write_image(root / "first.png")
    paths["other_image"] = write_image(root / "other.png", seed=9)
    rate = 22050
    sound = torch.from_numpy(np.stack([np.sin(np.arange(2 * rate) * 0.05)] * 2).astype(np.float32)) * 0.3
    frames = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    paths["video_with_sound"] = write_video(root / "clip.mp4", frames, 6.0, Waveform(sound, rate))
    paths["video_without_sound"] = write_video(root / "silent.mp4", frames, 6.0)
    paths["seven_seconds"] = write_wav(root / "seven.wav", 7.0)
    return paths


def _args(files, audio, out, *extra):
    return [
        "--image",
        str(files["image"]),
        "--audio",
        str(audio),
        "--sd15",
        str(files["sd15"]),
        "--avsyncd",
        str(files["motion"]),
        "--imagebind",
        str(files["imagebind"]),
        "--prompt",
        "a dog barking",
        "--steps",
        "2",
        "--scheduler",
        "ddim",
        "--size",
        str(SIZE),
        "--seed",
        "3",
        "-o",
        str(out),
        *extra,
    ]


def _read(path):
    """Decoded frames (F, H, W, 3) uint8, the video's average rate, and the audio stream's duration in seconds."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        rate = float(video.average_rate)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video)])
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        samples = sum(f.samples for f in container.decode(audio))
        audio_seconds = samples / audio.codec_context.sample_rate
        codec = (audio.codec_context.name, audio.codec_context.sample_rate, audio.codec_context.channels)
    return frames, rate, audio_seconds, codec


def _blocks(image: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(image[None], FIRST_FRAME_BLOCK)[0]


def _round_trip(files, image_path):
    vae = load_vae(files["sd15"])
    latents = encode_image(vae, load_image(image_path, SIZE))
    return _blocks(decode_latents(vae, latents[:, :, None])[0])


def test_animate_writes_the_video_with_its_sound_and_the_image_as_frame_zero(files, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    assert main(_args(files, files["video_with_sound"], out)) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    frames, rate, audio_seconds, codec = _read(out)
    assert frames.shape == (12, SIZE, SIZE, 3)
    assert rate == 6.0
    assert codec == ("aac", 22050, 2), "ComfyUI's Save Video settings: AAC at the sound's own rate and channels"
    # AAC decoders emit whole 1024-sample frames: the track is the video's 2 s up to that rounding.
    assert abs(audio_seconds - 2.0) <= 1024 / 22050, audio_seconds
    first = _blocks(torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 255)
    own = (first - _round_trip(files, files["image"])).abs().mean()
    other = (first - _round_trip(files, files["other_image"])).abs().mean()
    assert own < FIRST_FRAME_MEAN_ABS < other, (own, other)
    assert not list(tmp_path.glob("*.tmp*"))


def test_seconds_over_a_long_sound_chain_three_clips_and_keep_the_sound_as_long(files, tmp_path):
    """1..6 s of a 7 s sound: 30 whole frames at 6 fps need 3 chained 12-frame clips, 1 + 3 x 11 frames."""
    out = tmp_path / "long.mp4"
    assert main(_args(files, files["seven_seconds"], out, "--seconds", "1:6")) == 0
    frames, rate, audio_seconds, _ = _read(out)
    assert frames.shape[0] == 1 + 3 * 11 and rate == 6.0
    assert abs(audio_seconds - (1 + 3 * 11) / 6) <= 1024 / 22050, audio_seconds


def test_long_sound_in_context_windows_gives_the_chains_frames_from_one_run(files, tmp_path):
    out = tmp_path / "context.mp4"
    args = _args(files, files["seven_seconds"], out, "--seconds", "1:6", "--long-sound", "context", "--overlap", "3")
    assert main(args) == 0
    frames, rate, audio_seconds, _ = _read(out)
    assert frames.shape[0] == 1 + 3 * 11 and rate == 6.0
    assert abs(audio_seconds - (1 + 3 * 11) / 6) <= 1024 / 22050, audio_seconds


@pytest.mark.parametrize(
    "change,message",
    [
        ({"--image": "{tmp}/missing.png"}, "Image file not found"),
        ({"--image": "{tmp}/not_an_image.png"}, "as an image"),
        ({"--audio": "{video_without_sound}"}, "has no audio stream"),
        ({"--sd15": "{tmp}/sdxl"}, "SDXL"),
        ({"--fps": "8"}, "cover 1.5 s, but each clip hears a 2 s audio window"),
        ({"-o": "{tmp}/a_file/out.mp4"}, "Cannot create the folder"),
        ({"--seconds": "5:2"}, "START < END"),
        ({"--avsyncd": "{sd15}"}, "UNet"),
        ({"--long-sound": "context", "--overlap": "11"}, "overlap must be a whole number from 0 to 10"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_status_2(files, tmp_path, capsys, change, message):
    (tmp_path / "not_an_image.png").write_text("this is text")
    (tmp_path / "a_file").write_text("a file where a folder is expected")
    sdxl_unet = tmp_path / "sdxl" / "unet"
    sdxl_unet.mkdir(parents=True)
    config = {"cross_attention_dim": 2048, "addition_embed_type": "text_time", "in_channels": 4}
    (sdxl_unet / "config.json").write_text(json.dumps(config))
    names = {"tmp": tmp_path, **{k: str(v) for k, v in files.items()}}
    args = _args(files, files["video_with_sound"], tmp_path / "out.mp4")
    if "--fps" in change:
        args += ["--frames", "12"]
    for flag, value in change.items():
        value = value.format(**names)
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out.mp4").exists()


def test_the_module_runs_and_bad_input_never_shows_a_traceback(files, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "avsync_core.animate", *_args(files, files["video_without_sound"], tmp_path / "o.mp4")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "has no audio stream" in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_a_missing_transformers_package_is_named_with_the_install_command(files, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a)
    )
    assert main(_args(files, files["video_with_sound"], tmp_path / "out.mp4")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install transformers" in err[0], err
