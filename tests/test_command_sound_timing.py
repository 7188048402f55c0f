"""Which part of the sound each command animates, read back from the mp4s it writes.

The source sound is a linear chirp: every 2 s stretch of it is different, so cross-correlating a written sound
track with the source finds the source time the track starts at (exactly, measured: AAC written and decoded by
PyAV keeps the sample positions). ``generate``'s first frames are checked against the source frame at each
clip's start: the source shows a bright bar that moves with the frame index.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from avsync_core.animate import main as animate
from avsync_core.audio import Waveform
from avsync_core.generate import main as generate
from avsync_core.pipeline import decode_latents, encode_image
from avsync_core.sd15.components import load_vae
from avsync_core.video import center_crop_resize, write_video
from tests.tiny_models import write_image, write_tiny_models

RATE = 22050
SIZE = 64
SOURCE_SECONDS = 5.0
# Three 2 s clips spread uniformly over 5 s start at 0, 1.5 and 3 s (the official generation's positions).
CLIP_STARTS = (0.0, 1.5, 3.0)
# Cross-correlation of the decoded track with the source: the lag is found to the sample (measured); 5 ms
# tolerates an encoder that shifts it by a few samples, and is far below the 1.5 s between clips.
OFFSET_TOLERANCE = 0.005
pytestmark = pytest.mark.slow
COMMON = ["--steps", "2", "--scheduler", "ddim", "--size", str(SIZE), "--seed", "3"]


def chirp(seconds: float, rate: int = RATE) -> np.ndarray:
    """(T,) float32: a sweep from 200 Hz to 3 kHz over ``seconds``."""
    t = np.arange(round(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * (200 * t + (3000 - 200) / (2 * seconds) * t * t))).astype(np.float32)


def sound_track(path) -> tuple[np.ndarray, int]:
    """The mp4's sound decoded by PyAV, averaged to mono, and its rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = np.concatenate([f.to_ndarray() for f in container.decode(stream)], axis=1)
        return samples.mean(axis=0), stream.codec_context.sample_rate


def source_time_of(track: np.ndarray, source: np.ndarray, rate: int) -> float:
    """Seconds into ``source`` where ``track`` fits best (FFT cross-correlation over every valid lag)."""
    n = len(source) + len(track)
    spectrum = np.fft.rfft(source, n) * np.conj(np.fft.rfft(track, n))
    lags = np.fft.irfft(spectrum, n)[: len(source) - len(track) + 1]
    return float(np.argmax(lags)) / rate


BAR_PERIOD = 24  # the bar wraps after 48 rows: frames i and i + 24 are the same


def bar_frames(count: int) -> torch.Tensor:
    """(count, 3, 48, 64): a bright bar moving down 2 rows a frame, so every frame of a period is different."""
    frames = torch.full((count, 3, 48, 64), 0.2)
    for i in range(count):
        frames[i, :, (2 * i) % 48 : (2 * i) % 48 + 4] = 0.9
    return frames


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("timing")
    paths = write_tiny_models(root / "models")
    sound = torch.from_numpy(np.stack([chirp(SOURCE_SECONDS)] * 2))
    paths["frames"] = bar_frames(round(SOURCE_SECONDS * 6))
    paths["data"] = root / "data"
    write_video(paths["data"] / "videos" / "dog" / "bark.mp4", paths["frames"], 6.0, Waveform(sound, RATE))
    (paths["data"] / "test.txt").write_text("dog/bark.mp4\n")
    import wave

    paths["wav"] = root / "chirp.wav"
    with wave.open(str(paths["wav"]), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((chirp(SOURCE_SECONDS) * 32767).round().astype("<i2").tobytes())
    paths["image"] = write_image(root / "first.png")
    return paths


def _models(files) -> list[str]:
    return ["--sd15", str(files["sd15"]), "--avsyncd", str(files["motion"]), "--imagebind", str(files["imagebind"])]


def test_animate_seconds_writes_the_sound_from_start(files, tmp_path):
    out = tmp_path / "part.mp4"
    argv = ["--image", str(files["image"]), "--audio", str(files["wav"]), *_models(files), *COMMON]
    assert animate([*argv, "--seconds", "2.5:4.5", "-o", str(out)]) == 0
    track, rate = sound_track(out)
    assert rate == RATE and abs(len(track) / rate - 2.0) <= 1024 / RATE
    found = source_time_of(track[: 2 * RATE - 2048], chirp(SOURCE_SECONDS), rate)
    assert abs(found - 2.5) <= OFFSET_TOLERANCE, f"the track starts at {found:.4f} s of the source, not 2.5 s"


def _blocks(image: torch.Tensor) -> torch.Tensor:
    """4x4-pixel block means: the random VAE's pixel noise is smeared by H.264, its block means are kept (as in
    test_animate)."""
    return torch.nn.functional.avg_pool2d(image[None], 4)[0]


def test_generate_clip_k_hears_its_2_s_and_starts_from_the_frame_at_that_time(files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--data", str(files["data"]), *_models(files), *COMMON, "--clips-per-video", "3", "--no-progress"]
    assert generate([*argv, "-o", str(out)]) == 0
    source = chirp(SOURCE_SECONDS)
    vae = load_vae(files["sd15"])
    # Every source frame of one period of the bar (24 frames, all different), through the same VAE round trip.
    candidates = []
    for frame in files["frames"][:BAR_PERIOD]:
        real = center_crop_resize(frame[None], SIZE)
        candidates.append(_blocks(decode_latents(vae, encode_image(vae, real)[:, :, None])[0]))
    for k, start in enumerate(CLIP_STARTS):
        for kind in ("videos", "groundtruth"):
            track, rate = sound_track(out / kind / "dog" / f"bark_clip-{k:02d}.mp4")
            found = source_time_of(track[: 2 * RATE - 2048], source, rate)
            assert abs(found - start) <= OFFSET_TOLERANCE, f"{kind} clip {k} hears {found:.4f} s, not {start} s"
        with av.open(str(out / "videos" / "dog" / f"bark_clip-{k:02d}.mp4")) as container:
            first = next(container.decode(video=0)).to_ndarray(format="rgb24")
        first = _blocks(torch.from_numpy(first).permute(2, 0, 1).float() / 255)
        distances = [(first - candidate).abs().mean().item() for candidate in candidates]
        nearest, wanted = int(np.argmin(distances)), round(start * 6)
        assert nearest == wanted, f"clip {k}'s first frame is source frame {nearest}, not {wanted} (its {start} s)"


def test_generate_from_csv_takes_each_clip_sound_at_its_start(files, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text(f"image,audio,prompt\n{files['image']},{files['wav']},a chirp\n")
    out = tmp_path / "out"
    argv = ["--csv", str(listing), *_models(files), *COMMON, "--clips-per-video", "3", "--no-progress"]
    assert generate([*argv, "-o", str(out)]) == 0
    for k, start in enumerate(CLIP_STARTS):
        track, rate = sound_track(out / "videos" / f"chirp_clip-{k:02d}.mp4")
        found = source_time_of(track[: 2 * RATE - 2048], chirp(SOURCE_SECONDS), rate)
        assert abs(found - start) <= OFFSET_TOLERANCE, f"clip {k} hears {found:.4f} s, not {start} s"
