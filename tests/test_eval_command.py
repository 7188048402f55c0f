"""``python -m avsync_core.evaluate`` on tiny clips: one clip, a folder in the official layout, and bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avsync_core.audio import Waveform, decode_audio
from avsync_core.evaluation import (
    AVSyncClassifier,
    ImageBindImageAudio,
    align_probability,
    audio_to_mel,
    av_align_file,
    avsync_scores,
    image_audio_similarities,
    preprocess_video,
    relative_probability,
    relsync,
)
from avsync_core.evaluation.clips import load_generated_clip, load_reference_clip
from avsync_core.evaluation.command import main
from avsync_core.video import write_video
from conftest import REPO_ROOT, golden_dir

pytest.importorskip("librosa")
pytest.importorskip("cv2")


def _write_clip(path: Path, frames: int, seed: int, with_audio: bool = True) -> Path:
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(frames, 3, 48, 64, generator=g)
    # Moving bright squares and clicks, so AV-Align has peaks to find.
    for f in range(0, frames, 4):
        video[f, :, 8:24, 8 + f : 24 + f] = 1.0
    audio = None
    if with_audio:
        samples = 0.01 * torch.randn(1, round(16000 * frames / 6), generator=g)
        for f in range(0, frames, 4):
            start = round(16000 * f / 6)
            samples[0, start : start + 400] += 0.8 * torch.hann_window(400)
        audio = Waveform(samples, 16000)
    return write_video(path, video, 6, audio)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval_command")
    out = {"root": root}
    out["gen"] = _write_clip(root / "gen.mp4", 12, 1)
    out["ref"] = _write_clip(root / "ref.mp4", 12, 2)
    out["silent"] = _write_clip(root / "silent.mp4", 12, 3, with_audio=False)
    out["short"] = _write_clip(root / "short.mp4", 8, 4)
    _write_clip(root / "gt" / "birds" / "robin.mp4", 30, 5)
    for i in range(2):
        _write_clip(root / "generated" / "birds" / f"robin_clip-{i}.mp4", 12, 10 + i)
    ref_audio = Waveform(0.2 * torch.randn(1, 44100, generator=torch.Generator().manual_seed(6)), 22050)
    out["ref_audio"] = write_video(root / "ref_audio.mp4", torch.zeros(12, 3, 16, 16), 6, ref_audio)
    torch.manual_seed(0)
    AVSyncClassifier.build().save_safetensors(root / "classifier.safetensors")
    out["classifier"] = root / "classifier.safetensors"
    tiny = golden_dir() / "sync_metrics" / "imagebind_tiny_vision_audio.safetensors"
    ImageBindImageAudio.from_file(tiny, vision_heads=2, audio_heads=4).save_safetensors(root / "imagebind.safetensors")
    out["imagebind"] = root / "imagebind.safetensors"
    return out


def _models(files):
    classifier = AVSyncClassifier.from_file(files["classifier"])
    return classifier, ImageBindImageAudio.from_file(files["imagebind"])


def _error(capsys, argv: list[str]) -> str:
    assert main([str(a) for a in argv]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_one_clip_against_a_reference_audio(files, tmp_path):
    out = tmp_path / "one.json"
    argv = [
        "--video",
        files["gen"],
        "--ref-audio",
        files["ref_audio"],
        "--metric",
        "avsync",
        "relsync",
        "av-align",
        "--classifier",
        files["classifier"],
        "--device",
        "cpu",
        "--output",
        out,
    ]
    assert main([str(a) for a in argv]) == 0
    report = json.loads(out.read_text())
    assert report["metrics"] == ["avsync_score", "relsync", "av_align"]
    (row,) = report["clips"]
    classifier, _ = _models(files)
    clip = load_generated_clip(files["gen"])
    sound = decode_audio(files["ref_audio"], sample_rate=None)
    assert sound.sample_rate == 22050  # the reference mel is resampled from another rate
    ref_mel = audio_to_mel(sound.samples, sound.sample_rate)
    expected_score = avsync_scores(classifier, clip.mel[None], clip.video[None])
    expected_rel = relsync(classifier, clip.mel[None], clip.video[None], ref_mel=ref_mel[None])
    assert row["avsync_score"] == pytest.approx(expected_score.item(), rel=1e-5, abs=1e-6)
    assert row["relsync"] == pytest.approx(expected_rel.item(), rel=1e-5)
    assert row["av_align"] == av_align_file(files["gen"]).score
    assert report["mean"] == {k: row[k] for k in report["metrics"]}


@pytest.mark.slow
def test_folder_in_the_official_layout(files, tmp_path):
    root = files["root"]
    out = tmp_path / "scores.csv"
    argv = [
        "--generated-dir",
        root / "generated",
        "--reference-dir",
        root / "gt",
        "--clips-per-video",
        "2",
        "--metric",
        "relsync",
        "alignsync",
        "av-align",
        "--classifier",
        files["classifier"],
        "--imagebind",
        files["imagebind"],
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--output",
        out,
    ]
    assert main([str(a) for a in argv]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["clip"] for r in rows] == ["birds/robin_clip-0.mp4", "birds/robin_clip-1.mp4", "mean", "std"]
    # Two 2 s clips spread over the 5 s ground truth: starts 0 and 3 s.
    assert rows[0]["reference"].endswith("robin.mp4@0.000s") and rows[1]["reference"].endswith("robin.mp4@3.000s")

    classifier, imagebind = _models(files)
    gen = [load_generated_clip(root / "generated" / "birds" / f"robin_clip-{i}.mp4") for i in range(2)]
    ref = [load_reference_clip(root / "gt" / "birds" / "robin.mp4", start) for start in (0.0, 3.0)]
    mel, video = torch.stack([c.mel for c in gen]), torch.stack([c.video for c in gen])
    ref_mel, ref_video = torch.stack([c.mel for c in ref]), torch.stack([c.video for c in ref])
    rel = relative_probability(avsync_scores(classifier, mel, video), avsync_scores(classifier, ref_mel, ref_video))
    first = image_audio_similarities(imagebind, ref_mel, preprocess_video(ref_video)[:, :, :1])
    frames = image_audio_similarities(imagebind, mel, preprocess_video(video)[:, :, 1:])
    align = align_probability(first, frames) * rel
    for i in range(2):
        assert float(rows[i]["relsync"]) == pytest.approx(rel[i].item(), rel=1e-5)
        assert float(rows[i]["alignsync"]) == pytest.approx(align[i].item(), rel=1e-5)
        assert float(rows[i]["av_align"]) == av_align_file(root / "generated" / "birds" / f"robin_clip-{i}.mp4").score
    for column in ("relsync", "alignsync", "av_align"):
        values = torch.tensor([float(rows[i][column]) for i in range(2)], dtype=torch.float64)
        assert float(rows[2][column]) == pytest.approx(values.mean().item(), rel=1e-12)
        assert float(rows[3][column]) == pytest.approx(values.std().item(), rel=1e-9)


def test_wrong_frame_count_says_how_to_fix(files, capsys):
    line = _error(capsys, ["--video", files["short"], "--metric", "avsync", "--classifier", files["classifier"]])
    assert "short.mp4 holds 8 frames at 6 fps" in line
    assert "exactly 12 frames at 6 fps" in line and "Resample it to 12 frames at 6 fps" in line


def test_bad_checkpoints(files, tmp_path, capsys):
    video = ["--video", files["gen"], "--metric", "avsync"]
    line = _error(capsys, [*video])
    assert "--classifier is needed" in line
    line = _error(capsys, [*video, "--classifier", tmp_path / "missing"])
    assert "Classifier not found" in line and "missing" in line
    line = _error(capsys, [*video, "--classifier", files["imagebind"]])
    assert "is not an AVSync classifier file" in line
    line = _error(
        capsys,
        [
            "--video",
            files["gen"],
            "--ref-video",
            files["ref"],
            "--metric",
            "alignsync",
            "--classifier",
            files["classifier"],
            "--imagebind",
            tmp_path / "imagebind_huge.pth",
        ],
    )
    assert "ImageBind checkpoint not found" in line


def test_bad_inputs(files, tmp_path, capsys):
    c = ["--classifier", files["classifier"]]
    assert "does not exist" in _error(capsys, ["--video", tmp_path / "nope.mp4", *c])
    assert "AlignSync needs --ref-video" in _error(capsys, ["--video", files["gen"], "--metric", "alignsync", *c])
    assert "RelSync needs a reference" in _error(capsys, ["--video", files["gen"], "--metric", "relsync", *c])
    assert "no sound track" in _error(capsys, ["--video", files["silent"], *c])
    assert "must end in .csv or .json" in _error(capsys, ["--video", files["gen"], *c, "--output", tmp_path / "a.txt"])
    root = files["root"]
    line = _error(capsys, ["--generated-dir", root / "generated", "--reference-dir", root / "gt", *c])
    assert "2 generated clip(s) birds/robin_clip-*.mp4" in line and "expected --clips-per-video 3" in line
    assert "Give a clip" in _error(capsys, [*c])


def test_module_entry_point_exits_2(files):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "avsync_core.evaluate",
            "--video",
            str(files["short"]),
            "--classifier",
            str(files["classifier"]),
        ],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and "12 frames at 6 fps" in result.stderr
