"""Tiny synthetic audio-visual files for tests: a square that flashes white exactly when the sound clicks.

Written with PyAV directly (not with avsync_core.video.write_video) so that reading tests do not depend on
the project's own writer.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CLICK_EVERY_FRAMES = 5


def default_click_times(seconds: float, fps: int, first_frame: int = 2) -> list[float]:
    """A click every 5 frames: 5 is prime to the 4-frame stride of 6 fps sampling, so any clip sees some."""
    return [k / fps for k in range(first_frame, int(seconds * fps), CLICK_EVERY_FRAMES)]


def click_sound(seconds: float, sample_rate: int, click_times: list[float]) -> np.ndarray:
    """(T,) float32: silence with a 4 ms decaying 3 kHz burst starting at each click time."""
    audio = np.zeros(int(round(seconds * sample_rate)), np.float32)
    t = np.arange(int(0.004 * sample_rate)) / sample_rate
    burst = (0.9 * np.exp(-t / 0.0015) * np.sin(2 * np.pi * 3000.0 * t)).astype(np.float32)
    for time in click_times:
        start = int(round(time * sample_rate))
        piece = burst[: max(0, len(audio) - start)]
        audio[start : start + len(piece)] += piece
    return audio


def flash_frames(click_times: list[float], fps: int, num_frames: int) -> set[int]:
    return {round(time * fps) for time in click_times if round(time * fps) < num_frames}


def write_click_flash_video(
    path: str | Path,
    seconds: float = 3.0,
    fps: int = 24,
    size: int | tuple[int, int] = 64,
    sample_rate: int = 44100,
    click_times: list[float] | None = None,
    stereo: bool = False,
    with_audio: bool = True,
    crop_markers: bool = False,
) -> list[float]:
    """Grey frames with a centred square, white on the frame of each click and black otherwise.

    ``size`` is a side or (width, height). ``crop_markers`` paints what lies outside the centre square blue
    and puts a red block in the top-left corner of the centre square, so crops and flips can be seen.
    Stereo files have the clicks at half amplitude on the right. Returns the click times.
    """
    width, height = (size, size) if isinstance(size, int) else size
    if click_times is None:
        click_times = default_click_times(seconds, fps)
    num_frames = int(round(seconds * fps))
    flashes = flash_frames(click_times, fps, num_frames)

    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    base = np.full((height, width, 3), 128, np.uint8)
    if crop_markers:
        base[:] = (0, 0, 255)
        base[top : top + side, left : left + side] = 128
        base[top : top + side // 4, left : left + side // 4] = (255, 0, 0)
    square = side // 4
    sq_top, sq_left = (height - square) // 2, (width - square) // 2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=Fraction(fps))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": "10"}
        sound = None
        if with_audio:
            sound = container.add_stream("aac", rate=sample_rate)
            sound.layout = "stereo" if stereo else "mono"
        for index in range(num_frames):
            image = base.copy()
            image[sq_top : sq_top + square, sq_left : sq_left + square] = 255 if index in flashes else 0
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if sound is not None:
            mono = click_sound(seconds, sample_rate, click_times)
            samples = np.stack([mono, 0.5 * mono]) if stereo else mono[None]
            for offset in range(0, samples.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(samples[:, offset : offset + 1024]), format="fltp", layout=sound.layout.name
                )
                frame.sample_rate, frame.pts = sample_rate, offset
                container.mux(sound.encode(frame))
            container.mux(sound.encode())
    return click_times


def make_synthetic_dataset(
    root: str | Path,
    classes: tuple[str, ...] = ("hammer", "dog"),
    per_class: int = 3,
    layout: str = "avsync15",
    seconds: float = 3.0,
    fps: int = 24,
) -> dict[str, list[float]]:
    """Flash videos per class; the second of each class is stereo. Returns 'class/file.mp4' -> click times.

    ``avsync15``: root/videos/<class>/<file>.mp4 with train.txt (all but the last per class) and test.txt
    (the last per class). ``folders``: root/<class>/<file>.mp4 and no lists.
    """
    if layout not in ("avsync15", "folders"):
        raise ValueError(f"layout must be 'avsync15' or 'folders', got {layout!r}")
    root = Path(root)
    base = root / "videos" if layout == "avsync15" else root
    clicks: dict[str, list[float]] = {}
    train, test = [], []
    for name in classes:
        for k in range(per_class):
            relative = f"{name}/{name}_{k}.mp4"
            clicks[relative] = write_click_flash_video(
                base / relative,
                seconds=seconds,
                fps=fps,
                click_times=default_click_times(seconds, fps, first_frame=2 + k),
                stereo=(k == 1),
            )
            (test if k == per_class - 1 else train).append(relative)
    if layout == "avsync15":
        (root / "train.txt").write_text("\n".join(train) + "\n")
        (root / "test.txt").write_text("\n".join(test) + "\n")
    return clicks
