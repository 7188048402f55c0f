"""Regenerate the pictures under docs/images/ from the project's own tests and library.

    .venv/bin/python scripts/docs_pictures.py            # runs the browser tests first (about 3 min, needs ComfyUI)
    .venv/bin/python scripts/docs_pictures.py --reuse    # takes the screenshots the last browser run left

Page pictures are the screenshots tests/test_browser.py takes in ComfyUI's page (outputs/browser_screenshots/;
the server has small random models, so the rendered video is noise); they are downscaled and quantised to small
PNGs. The library pictures are drawn by the same functions the nodes use: the per-frame audio preview of a 5 s
sound (AVSync Encode Audio with max_windows 0), the context windows of a 12 s sound (the AVSync Sampler with
long_sound = context, overlap 4, pyramid) and the synchronisation plot (AVSync Sync Score) of a synthetic clip
whose square flashes on each click, scored by AV-Align. The ComfyUI checkout is COMFYUI_PATH, else /opt/ComfyUI.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "outputs" / "browser_screenshots"
IMAGES = REPO / "docs" / "images"
# docs/images/<name>.png <- a browser screenshot, the part kept (left, top, right, bottom as fractions), width.
PAGE_PICTURES = {
    "workflow_image_audio_to_video": ("01_open_avsync_image_audio_to_video", (0, 0, 1, 1), 1280),
    "workflow_custom_sampling": ("01_open_avsync_custom_sampling", (0, 0, 1, 1), 1280),
    "load_audio_player": ("03_load_audio_after_upload", (0.34, 0.04, 1, 0.66), 900),
    "not_a_sound_refused": ("04_not_a_sound_refused", (0.34, 0.04, 1, 0.66), 900),
    "run_in_the_page": ("05_after_run_whole_graph", (0, 0, 1, 1), 1280),
    "encode_audio_node_preview": ("07_encode_audio_preview", (0.24, 0.05, 0.8, 0.92), 900),
}


def save_small(image: Image.Image, name: str, width: int | None = None) -> Path:
    """A PNG of at most ``width`` pixels across in 128 colours (screenshots and plots have few)."""
    image = image.convert("RGB")
    if width and image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    small = image.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path = IMAGES / f"{name}.png"
    small.save(path, optimize=True)
    print(f"{path.relative_to(REPO)}: {small.width}x{small.height}, {path.stat().st_size // 1024} KiB")
    return path


def run_browser_tests() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.setdefault("COMFYUI_PATH", "/opt/ComfyUI")
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/test_browser.py"]
    if subprocess.run(command, cwd=REPO, env=env).returncode != 0:
        sys.exit("docs_pictures: error: the browser tests failed, so their screenshots are not the page's; see above.")


def page_pictures() -> None:
    for name, (shot, (left, top, right, bottom), width) in PAGE_PICTURES.items():
        source = SHOTS / f"{shot}.png"
        if not source.is_file():
            sys.exit(f"docs_pictures: error: {source} is missing; run without --reuse to take the screenshots.")
        image = Image.open(source)
        box = (round(left * image.width), round(top * image.height), round(right * image.width))
        save_small(image.crop((*box, round(bottom * image.height))), name, width)


def library_pictures() -> None:
    sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the checkout's library and its test helpers
    from avsync_core.audio import AudioCondition, Waveform, clip_windows
    from avsync_core.audio.preview import render_frame_preview
    from avsync_core.evaluation.av_align import av_align_file
    from avsync_core.evaluation.plot import render_sync_plot
    from avsync_core.sampling.context import context_schedule
    from avsync_core.sampling.context_preview import render_context_preview
    from synthetic_av import click_sound, default_click_times, write_click_flash_video

    seconds, rate = 5.0, 16000
    sound = click_sound(seconds, rate, default_click_times(seconds, 6))
    windows = clip_windows(seconds, 12, 6.0)
    pixels = render_frame_preview(Waveform(torch.from_numpy(sound)[None], rate), windows, 12, 6.0)
    save_small(Image.fromarray(pixels), "encode_audio_long_sound_preview")

    clips = clip_windows(12.0, 12, 6.0)  # the picture needs the clips only; the tokens are placeholders
    song = AudioCondition(torch.zeros(len(clips), 1, 1), torch.zeros(1, 1, 1), torch.zeros(12, 1), 12, 6.0, clips)
    windows = context_schedule(song.total_frames, 12, 4)
    save_small(Image.fromarray(render_context_preview(song, windows, "pyramid", 4)), "sampler_context_windows")

    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder, "clicks_and_flashes.mp4")
        write_click_flash_video(clip, seconds=2.0, fps=6, size=128)
        result = av_align_file(clip)
    plot = render_sync_plot(result, 12, {"AV-Align": result.score})
    save_small(Image.fromarray(plot.pixels), "sync_score_plot")


def build_parser() -> argparse.ArgumentParser:
    """The script's flags (also read by the docs test)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", action="store_true", help="use outputs/browser_screenshots/ as the last run left it")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if not args.reuse:
        run_browser_tests()
    IMAGES.mkdir(parents=True, exist_ok=True)
    page_pictures()
    library_pictures()


if __name__ == "__main__":
    main()
