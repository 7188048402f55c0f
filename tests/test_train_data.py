"""Training data pipeline: dataset layouts, prompts, clip sampling (frames and sound in sync), transforms,
bad files reported and skipped, DataLoader use; and the mp4 writer used for validation renders."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from avsync_core.audio import Waveform, decode_audio
from avsync_core.errors import AVSyncError, InvalidInputError
from avsync_core.train.data import (
    AVClipDataset,
    VideoRecord,
    collate_clips,
    load_prompts,
    scan_dataset,
)
from avsync_core.video import center_crop_resize, probe_video, read_frames, write_video
from tests.synthetic_av import click_sound, flash_frames, make_synthetic_dataset, write_click_flash_video

SOURCE_FPS = 24
CLIP_SECONDS = 2.0


@pytest.fixture(scope="module")
def avsync15(tmp_path_factory) -> tuple[Path, dict[str, list[float]]]:
    root = tmp_path_factory.mktemp("avsync15")
    return root, make_synthetic_dataset(root, layout="avsync15")


@pytest.fixture(scope="module")
def marker_video(tmp_path_factory) -> Path:
    """96x64: blue outside the centre square, red block in its top-left corner."""
    path = tmp_path_factory.mktemp("marker") / "wide" / "wide.mp4"
    write_click_flash_video(path, size=(96, 64), crop_markers=True)
    return path


def _dataset(records, classes, **kwargs) -> AVClipDataset:
    return AVClipDataset(records, classes, load_prompts(classes, None), **kwargs)


def _square_brightness(video: torch.Tensor) -> torch.Tensor:
    """Mean of the centre eighth of each frame (inside the flashing square) -> (F,)."""
    size = video.shape[-1]
    lo, hi = size // 2 - size // 16, size // 2 + size // 16
    return video[:, :, lo:hi, lo:hi].mean(dim=(0, 2, 3))


def _red_corner(video: torch.Tensor) -> str:
    """Which top corner of the first frame holds the red marker block ('left' unless flipped)."""
    frame = video[:, 0]
    redness = frame[0] - frame[1]  # red minus green: ~1 on the marker, ~0 on grey
    quarter = frame.shape[-1] // 4
    left, right = redness[:quarter, :quarter].mean(), redness[:quarter, -quarter:].mean()
    assert max(left, right) > 0.8 and min(left, right) < 0.1, (left, right)
    return "left" if left > right else "right"


def _onsets(audio: torch.Tensor, sample_rate: int = 16000) -> np.ndarray:
    """Times (s) where |audio| first rises above 30% of its peak after 50 ms of staying below it."""
    envelope = audio.abs().numpy().reshape(-1)
    above = np.flatnonzero(envelope > 0.3 * envelope.max())
    gap = int(0.05 * sample_rate)
    starts = [above[0]] + [b for a, b in zip(above, above[1:]) if b - a > gap]
    return np.asarray(starts) / sample_rate


# ------------------------------------------------------------------------------------------ layouts


def test_scan_avsync15_layout_honours_split_lists(avsync15):
    root, clicks = avsync15
    train, classes = scan_dataset(root, "train")
    test, test_classes = scan_dataset(root, "test")
    listed = (root / "train.txt").read_text().split()
    assert classes == test_classes == ["dog", "hammer"]
    assert [r.path for r in train] == [root / "videos" / line for line in listed]
    assert [r.class_name for r in train] == [line.split("/")[0] for line in listed]
    assert {r.path.name for r in test} == {"dog_2.mp4", "hammer_2.mp4"}
    everything, _ = scan_dataset(root, None)
    assert sorted(str(r.path.relative_to(root / "videos")) for r in everything) == sorted(clicks)


def test_scan_list_with_missing_file_drops_it_and_says_so(avsync15, tmp_path, caplog):
    root, _ = avsync15
    list_root = tmp_path / "listed"
    list_root.mkdir()
    (list_root / "videos").symlink_to(root / "videos", target_is_directory=True)
    (list_root / "train.txt").write_text("dog/dog_0.mp4\n\n# comment\ndog/gone.mp4\n")
    with caplog.at_level(logging.WARNING):
        records, _ = scan_dataset(list_root, "train")
    assert [r.path.name for r in records] == ["dog_0.mp4"]
    assert "1 of the videos listed" in caplog.text and "gone.mp4" in caplog.text
    (list_root / "train.txt").write_text("dog_0.mp4\n")
    with pytest.raises(InvalidInputError, match="class_folder/file.mp4"):
        scan_dataset(list_root, "train")


def test_scan_folder_layout_uses_folder_names(tmp_path):
    clicks = make_synthetic_dataset(tmp_path, classes=("rain", "playing_trumpet"), per_class=2, layout="folders")
    (tmp_path / "rain" / "notes.txt").write_text("not a video")
    records, classes = scan_dataset(tmp_path, "train")  # no train.txt: every video
    assert classes == ["playing_trumpet", "rain"]
    assert sorted(f"{r.class_name}/{r.path.name}" for r in records) == sorted(clicks)


def test_scan_bad_folders_say_what_was_expected(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        scan_dataset(tmp_path / "nowhere")
    with pytest.raises(InvalidInputError, match="No videos found.*AVSync15 layout"):
        scan_dataset(tmp_path)
    write_click_flash_video(tmp_path / "loose.mp4", seconds=0.5)
    with pytest.raises(InvalidInputError, match="sub-folder named after the class"):
        scan_dataset(tmp_path)


# ------------------------------------------------------------------------------------------ prompts


def test_prompts_from_folder_names_and_json(tmp_path):
    classes = ["dog", "playing_trumpet"]
    assert load_prompts(classes, None) == {"dog": "dog", "playing_trumpet": "playing trumpet"}
    mapping = tmp_path / "prompts.json"
    mapping.write_text(json.dumps({"dog": "a dog barking", "playing_trumpet": "trumpet", "extra": "unused"}))
    assert load_prompts(classes, mapping) == {"dog": "a dog barking", "playing_trumpet": "trumpet"}


def test_prompt_file_problems_are_clear(tmp_path):
    classes = ["dog", "rain"]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"dog": "a dog"}))
    with pytest.raises(InvalidInputError, match="no prompt for 1 of the 2 classes: rain"):
        load_prompts(classes, partial)
    broken = tmp_path / "broken.json"
    broken.write_text("{dog: ")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        load_prompts(classes, broken)
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(["dog", "rain"]))
    with pytest.raises(InvalidInputError, match="holds a list"):
        load_prompts(classes, listed)
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_prompts(classes, tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------ samples


def test_sample_shapes_dtypes_and_ranges(avsync15):
    root, _ = avsync15
    records, classes = scan_dataset(root, "train")
    sample = _dataset(records, classes)[1]  # paper defaults: 12 frames, 6 fps, 256 px
    assert sample["video"].shape == (3, 12, 256, 256) and sample["video"].dtype == torch.float32
    assert 0.0 <= sample["video"].min() and sample["video"].max() <= 1.0
    assert sample["audio"].shape == (1, 32000) and sample["audio"].dtype == torch.float32
    assert sample["mel"].shape == (1, 128, 204) and torch.isfinite(sample["mel"]).all()
    assert sample["audio"].abs().max() > 0.1  # the clicks are there
    assert sample["path"] == str(records[1].path)
    assert sample["class_index"] == classes.index(records[1].class_name)
    assert sample["prompt"] == records[1].class_name
    assert 0.0 <= sample["start"] <= 3.0 - CLIP_SECONDS


def test_frames_at_6fps_and_audio_are_the_same_two_seconds(avsync15):
    """Frame i shows the first source frame at or after start + i/6; the clicks sit at (click - start)."""
    root, clicks = avsync15
    records, classes = scan_dataset(root, None)
    dataset = _dataset(records, classes, size=64, random_flip=False)
    whites = 0
    for index, record in enumerate(records):  # mono and stereo files, a random start each
        sample = dataset[index]
        start = sample["start"]
        times = clicks[f"{record.class_name}/{record.path.name}"]
        flashes = flash_frames(times, SOURCE_FPS, 3 * SOURCE_FPS)
        shown = [math.ceil((start + i / 6.0) * SOURCE_FPS - 1e-6) for i in range(12)]
        brightness = _square_brightness(sample["video"])
        assert ((brightness > 0.8) | (brightness < 0.2)).all(), brightness
        assert (brightness > 0.8).tolist() == [k in flashes for k in shown], (start, brightness)
        whites += int((brightness > 0.8).sum())

        expected = np.array([t - start for t in times if 0.02 < t - start < CLIP_SECONDS - 0.02])
        found = _onsets(sample["audio"])
        found = found[(found > 0.02) & (found < CLIP_SECONDS - 0.02)]
        assert len(found) == len(expected), (start, found, expected)
        assert np.abs(found - expected).max() <= 0.010, (start, found, expected)
    assert whites >= 10  # the check above saw flashes, not only dark frames


def test_clip_start_and_flip_are_reproducible_and_vary(marker_video):
    records = [VideoRecord(marker_video, "wide")] * 4
    dataset = _dataset(records, ["wide"], size=32, seed=7)

    def draw(ds, index):
        sample = ds[index]
        return sample["start"], _red_corner(sample["video"]), sample["video"]

    first = draw(dataset, 0)
    again = draw(_dataset(records, ["wide"], size=32, seed=7), 0)
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])
    assert len({draw(dataset, i)[0] for i in range(4)}) == 4
    per_epoch = []
    for epoch in range(8):
        dataset.set_epoch(epoch)
        per_epoch.append(draw(dataset, 0)[:2])
    assert len({start for start, _ in per_epoch}) == 8
    assert {corner for _, corner in per_epoch} == {"left", "right"}
    assert draw(_dataset(records, ["wide"], size=32, seed=8), 0)[0] != first[0]


def test_validation_clip_is_centred_and_never_flipped(marker_video):
    dataset = _dataset([VideoRecord(marker_video, "wide")], ["wide"], size=32, deterministic_clip=True)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        sample = dataset[0]
        assert sample["start"] == pytest.approx((3.0 - CLIP_SECONDS) / 2)
        assert _red_corner(sample["video"]) == "left"


@pytest.mark.parametrize("size", [(96, 64), (64, 96)])
def test_short_side_resize_and_centre_crop_keeps_the_centre(tmp_path, size):
    path = tmp_path / "m" / "m.mp4"
    write_click_flash_video(path, size=size, crop_markers=True)
    dataset = _dataset([VideoRecord(path, "m")], ["m"], size=32, deterministic_clip=True)
    video = dataset[0]["video"]  # the 64x64 centre square scaled to 32x32
    red, green, blue = video[0], video[1], video[2]
    corner = (slice(None), slice(1, 7), slice(1, 7))  # the red block: top-left 16x16 of 64 -> 8x8 of 32
    assert red[corner].min() > 0.8 and green[corner].max() < 0.25 and blue[corner].max() < 0.25
    assert (blue - torch.maximum(red, green)).max() < 0.3  # none of the blue outside the square got in
    grey = video[:, :, 12:20, 1:7]  # left of the flashing square: plain grey
    assert (grey - 0.5).abs().max() < 0.1


def test_centre_crop_resize_on_a_hand_computed_case():
    """A 4x6 frame whose value is its column index, to 2x2: the official transform crops the centre 4x4 square
    (columns 1..4) and scales it by 1/2 with torchvision's antialiased bilinear filter, a triangle two input
    pixels wide: output column 0 weighs columns 1, 2, 3 by 3:3:1, column 1 weighs columns 2, 3, 4 by 1:3:3.
    Resizing the whole frame first (to 2x3) and then cropping would give 5/7 and 2.5 instead."""
    frame = torch.arange(6.0).repeat(1, 3, 4, 1) / 10  # (1, 3, 4, 6), rows all alike
    expected_columns = torch.tensor([(3 * 1 + 3 * 2 + 1 * 3) / 7, (1 * 2 + 3 * 3 + 3 * 4) / 7]) / 10
    out = center_crop_resize(frame, 2)
    assert out.shape == (1, 3, 2, 2)
    assert torch.allclose(out, expected_columns.expand(1, 3, 2, 2), atol=1e-6, rtol=0)
    tall = frame.transpose(-1, -2).contiguous()  # 6x4: the crop takes rows 1..4
    assert torch.allclose(center_crop_resize(tall, 2), out.transpose(-1, -2), atol=1e-6, rtol=0)


def test_centre_crop_resize_matches_the_official_transform():
    """The official ``load_and_transform_images_stable_diffusion`` (ASVA avgen/data/utils.py), square target:
    frames as float / 255, crop to the target aspect ratio (``int(h / aspect)`` wide, offset ``(w - trimmed) // 2``),
    then torchvision's ``Resize(size)`` (short side, bilinear, antialias) and ``CenterCrop(size)``."""
    transforms = pytest.importorskip("torchvision.transforms")
    official_resize_crop = transforms.Compose(
        [
            transforms.Resize(32, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
            transforms.CenterCrop(32),
        ]
    )
    generator = torch.Generator().manual_seed(0)
    for height, width in [(64, 96), (96, 64), (75, 100), (50, 50), (31, 47), (47, 31), (20, 33)]:
        pixels = torch.randint(0, 256, (2, 3, height, width), generator=generator, dtype=torch.uint8)
        frames = pixels.float() / 255.0
        if height <= width:
            trimmed = int(height / 1.0)
            cropped = frames[..., (width - trimmed) // 2 : (width - trimmed) // 2 + trimmed]
        else:
            trimmed = int(width * 1.0)
            cropped = frames[..., (height - trimmed) // 2 : (height - trimmed) // 2 + trimmed, :]
        reference = official_resize_crop(cropped)
        assert torch.allclose(center_crop_resize(pixels, 32), reference, atol=1e-6, rtol=0), (height, width)
        assert torch.allclose(center_crop_resize(frames, 32), reference, atol=1e-6, rtol=0), (height, width)


# ------------------------------------------------------------------------------------------ bad input


def _bad_files(root: Path) -> dict[str, Path]:
    paths = {name: root / "a" / f"{name}.mp4" for name in ("good", "short", "silent", "corrupt")}
    write_click_flash_video(paths["good"])
    write_click_flash_video(paths["short"], seconds=1.5)
    write_click_flash_video(paths["silent"], with_audio=False)
    paths["corrupt"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return paths


def test_short_silent_and_corrupt_videos_are_reported_and_skipped(tmp_path, caplog):
    paths = _bad_files(tmp_path)
    records, classes = scan_dataset(tmp_path)
    with caplog.at_level(logging.WARNING):
        dataset = _dataset(records, classes, size=32)
    assert len(dataset) == 1 and dataset.records[0].path == paths["good"]
    reasons = dict(dataset.skipped)
    assert set(reasons) == {paths["short"], paths["silent"], paths["corrupt"]}
    assert "shorter than 2.00 s" in reasons[paths["short"]]
    assert "no audio stream" in reasons[paths["silent"]]
    assert "Cannot read" in reasons[paths["corrupt"]]
    assert "Skipped 3 of 4 videos" in caplog.text and "short.mp4" in caplog.text
    assert dataset[0]["path"] == str(paths["good"])


def test_no_usable_video_is_a_clear_error(tmp_path):
    paths = _bad_files(tmp_path)
    records = [VideoRecord(paths[name], "a") for name in ("short", "silent", "corrupt")]
    with pytest.raises(InvalidInputError, match="None of the 3 videos.*1 too short.*1 without audio.*1 unreadable"):
        _dataset(records, ["a"])


def test_a_file_that_fails_while_reading_is_replaced_by_another(tmp_path, caplog):
    paths = _bad_files(tmp_path)
    records = [VideoRecord(paths["corrupt"], "a"), VideoRecord(paths["good"], "a")]
    dataset = _dataset(records, ["a"], size=32, validate=False)
    with caplog.at_level(logging.WARNING):
        sample = dataset[0]
    assert sample["path"] == str(paths["good"])
    assert "Could not read" in caplog.text and "corrupt.mp4" in caplog.text

    broken = _dataset([VideoRecord(paths["corrupt"], "a")] * 2, ["a"], validate=False)
    with pytest.raises(AVSyncError, match="6 videos in a row could not be read"):
        broken[0]


# ------------------------------------------------------------------------------------------ loading


def test_dataloader_with_two_workers_yields_reproducible_batches(avsync15):
    root, _ = avsync15
    records, classes = scan_dataset(root, "train")
    dataset = _dataset(records, classes, size=32)
    dataset.set_epoch(3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_clips)
    batches = list(loader)
    assert len(batches) == 2
    batch = batches[0]
    assert batch["video"].shape == (2, 3, 12, 32, 32)
    assert batch["audio"].shape == (2, 1, 32000) and batch["mel"].shape == (2, 1, 128, 204)
    assert batch["class_index"].dtype == torch.long
    assert batch["prompt"] == [dataset.prompts[r.class_name] for r in records[:2]]
    starts = torch.cat([b["start"] for b in batches]).tolist()
    assert starts == [dataset[i]["start"] for i in range(len(dataset))]


# ------------------------------------------------------------------------------------------ writer


@pytest.mark.parametrize("codec", [None, "mpeg4"])
def test_write_video_round_trip_with_sound(tmp_path, codec):
    generator = torch.Generator().manual_seed(0)
    frames = torch.zeros(12, 3, 35, 33)
    frames[:, :, 8:24, 8:24] = torch.rand(12, 3, 1, 1, generator=generator)  # flat colour per frame
    sound = click_sound(2.0, 16000, [0.5, 1.25])
    audio = Waveform(torch.from_numpy(np.stack([sound, -sound])), 16000)
    path = write_video(tmp_path / "out.mp4", frames, fps=6, audio=audio, video_codec=codec)

    info = probe_video(path)
    assert (info.width, info.height) == (34, 36)  # padded to even sides for yuv420p
    assert info.fps == pytest.approx(6.0) and info.video_duration == pytest.approx(2.0, abs=1e-3)
    assert info.has_audio and info.audio_channels == 2 and info.audio_sample_rate == 16000
    with av.open(str(path)) as container:
        expected_codec = codec or ("h264" if "libx264" in av.codecs_available else "mpeg4")
        assert container.streams.video[0].codec_context.name == expected_codec

    back = read_frames(path, np.arange(12) / 6.0)
    centre = torch.from_numpy(back[:, 12:20, 12:20]).float().mean(dim=(1, 2)) / 255.0
    assert (centre - frames[:, :, 16, 16]).abs().max() < 0.06
    left = decode_audio(path, sample_rate=16000, mono=False).samples[0]
    np.testing.assert_allclose(_onsets(left), [0.5, 1.25], atol=0.002)


def test_write_video_accepts_uint8_frames_and_refuses_bad_input(tmp_path):
    frames = np.full((4, 16, 16, 3), 200, np.uint8)
    path = write_video(tmp_path / "still.mp4", frames, fps=6.0)
    assert not probe_video(path).has_audio
    assert abs(int(read_frames(path, [0.0])[0, 8, 8, 0]) - 200) <= 3
    odd_rate = Waveform(torch.zeros(1, 10000), 10000)  # not an AAC rate: stored at 48 kHz
    assert probe_video(write_video(tmp_path / "odd.mp4", frames, 6, odd_rate)).audio_sample_rate == 48000
    with pytest.raises(InvalidInputError, match=r"\(F, H, W, 3\) uint8 or \(F, 3, H, W\) float"):
        write_video(tmp_path / "bad.mp4", np.zeros((4, 16, 16), np.float32), fps=6)
    with pytest.raises(InvalidInputError, match="mono or stereo"):
        write_video(tmp_path / "bad.mp4", frames, 6, Waveform(torch.zeros(3, 1000), 16000))
    with pytest.raises(AVSyncError, match="NaN"):
        write_video(tmp_path / "bad.mp4", frames, 6, Waveform(torch.full((1, 1000), float("nan")), 16000))
    assert not (tmp_path / "bad.mp4").exists()
