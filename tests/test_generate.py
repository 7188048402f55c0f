"""``python -m avsync_core.generate``: a dataset at the official clip positions, sharded, resumable.

Tiny model files as in test_animate (``tests/tiny_models.py``); two processes run under torchrun on the CPU
(gloo), as the training tests do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from avsync_core.audio import Waveform
from avsync_core.evaluation.clips import clip_starts
from avsync_core.generate import main
from avsync_core.video import write_video
from conftest import REPO_ROOT
from tests.tiny_models import write_image, write_tiny_models, write_wav

CLIPS = 2
# H.264 through PyAV is not byte-reproducible on a loaded machine: the same frames written twice decode up to
# 19/255 apart in a few pixels, 0.67/255 on average at most (measured); clips of other content are 6/255 or more
# apart on average. Generated clips are compared as decoded pictures within this mean, their sound exactly.
SAME_CLIP_MEAN_ABS = 1.5
VIDEOS = {"dog/bark_01": 3.0, "dog/bark_02": 2.5, "hammer/hit_01": 4.0}
ARGS = ["--clips-per-video", str(CLIPS), "--steps", "2", "--scheduler", "ddim", "--size", "64", "--no-progress"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    models = write_tiny_models(root / "models")
    data = root / "data"
    g = torch.Generator().manual_seed(0)
    for name, seconds in VIDEOS.items():
        count = round(seconds * 6)
        # A bright bar moving down the frame: each frame differs, so clip positions show in the pictures.
        frames = torch.full((count, 3, 48, 64), 0.2)
        for i in range(count):
            frames[i, :, (2 * i) % 48 : (2 * i) % 48 + 4] = 0.9
        sound = 0.3 * torch.randn(2, round(seconds * 22050), generator=g)
        write_video(data / "videos" / f"{name}.mp4", frames, 6.0, Waveform(sound, 22050))
    listing = [f"{name}.mp4" for name in VIDEOS] + ["hammer/lost_01.mp4"]
    (data / "test.txt").write_text("\n".join(listing) + "\n")
    model_args = [
        "--sd15",
        str(models["sd15"]),
        "--avsyncd",
        str(models["motion"]),
        "--imagebind",
        str(models["imagebind"]),
    ]
    return {"root": root, "data": data, "model_args": model_args}


def _files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def _decoded(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with av.open(str(path)) as container:
        pictures = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.float32)
    with av.open(str(path)) as container:
        sound = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    return pictures, sound


def _assert_same_outputs(out: Path, reference: Path) -> None:
    """The same files; ground-truth clips byte for byte, generated clips as pictures (see SAME_CLIP_MEAN_ABS)."""
    assert _files(out) == _files(reference)
    for name in _files(reference):
        if name.startswith("groundtruth/"):
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name
            continue
        (pictures, sound), (expected_pictures, expected_sound) = _decoded(out / name), _decoded(reference / name)
        assert pictures.shape == expected_pictures.shape and np.array_equal(sound, expected_sound), name
        assert np.abs(pictures - expected_pictures).mean() < SAME_CLIP_MEAN_ABS, name


def _finished(folder: Path) -> list[Path]:
    """Clips written completely (not the hidden temporaries they are written to first)."""
    return [p for p in folder.rglob("*_clip-*.mp4") if not p.name.startswith(".")]


def _torchrun(setup, out: Path, nproc: int, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    command += ["-m", "avsync_core.generate", "--data", str(setup["data"]), *setup["model_args"], *ARGS, "-o", str(out)]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


@pytest.fixture(scope="module")
def single(setup):
    """One process, launched like the sharded runs (same launcher, same thread count), so that only the number of
    processes differs between them."""
    out = setup["root"] / "single"
    run = _torchrun(setup, out, 1)
    stdout, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr.decode()[-3000:]
    return out


def test_one_process_writes_every_clip_and_its_ground_truth_in_the_official_layout(setup, single, capfd):
    names = [
        f"{kind}/{name}_clip-{k:02d}.mp4" for kind in ("groundtruth", "videos") for name in VIDEOS for k in range(2)
    ]
    assert _files(single) == sorted(names)
    for name, seconds in VIDEOS.items():
        starts = clip_starts(seconds, CLIPS, 2.0)
        assert starts == [0.0, seconds - 2.0]
        for k, start in enumerate(starts):
            with av.open(str(single / "groundtruth" / f"{name}_clip-{k:02d}.mp4")) as container:
                real = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            with av.open(str(single / "videos" / f"{name}_clip-{k:02d}.mp4")) as container:
                generated = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
                assert container.streams.audio, "the generated clip carries its sound"
            assert len(real) == len(generated) == 12
            # The ground truth is the source from `start`: its bright bar sits at row 2 * (start * 6) of 48
            # (rows 0..47 scaled to 64 px by the centre crop), frame after frame.
            bar_row = np.argmax(real[0][:, :, 0].mean(axis=1))
            assert abs(bar_row - (2 * round(start * 6)) % 48 * 64 / 48) <= 4, (name, k, bar_row)
    again = main(["--data", str(setup["data"]), *setup["model_args"], *ARGS, "-o", str(single)])
    out = capfd.readouterr().out
    assert again == 0 and "0 written, 6 already done" in out and "missing: " in out and "lost_01.mp4" in out


def test_two_processes_write_exactly_the_files_of_one(setup, single):
    out = setup["root"] / "two"
    run = _torchrun(setup, out, 2)
    stdout, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr.decode()[-3000:]
    assert "6 written, 0 already done, 0 failed" in stdout.decode()
    _assert_same_outputs(out, single)


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def test_a_killed_run_restarted_finishes_the_set_without_redoing_finished_clips(setup, single):
    out = setup["root"] / "killed"
    run = _torchrun(setup, out, 2)
    deadline = time.monotonic() + 300
    while not _finished(out / "videos") and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _children(run.pid)
    assert workers, "torchrun started its workers"
    os.kill(workers[-1], signal.SIGKILL)
    run.communicate(timeout=120)
    assert run.returncode != 0
    finished_files = [p for p in out.rglob("*_clip-*.mp4") if not p.name.startswith(".")]  # not the temporaries
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished_files}
    assert 0 < len([p for p in before if "videos" in p.parts]) < 6, "killed mid-run"

    restart = _torchrun(setup, out, 2)
    stdout, stderr = restart.communicate(timeout=600)
    assert restart.returncode == 0, stderr.decode()[-3000:]
    finished = len([p for p in before if "videos" in p.parts])
    assert f"{6 - finished} written, {finished} already done" in stdout.decode()
    for path, stamp in before.items():
        if "videos" in path.parts:
            assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, f"{path} was redone"
    _assert_same_outputs(out, single)  # every clip complete, as an uninterrupted run writes it
    assert not list(out.rglob(".*.part-*")), "no temporary file is left behind"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--missing", "fatal"], "1 listed file(s) do not exist"),
        (["--fps", "8"], "each clip hears a 2 s audio window"),
        (["--sd15", "{root}/nowhere"], "not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(setup, tmp_path, capsys, extra, message):
    extra = [e.format(root=setup["root"]) for e in extra]
    assert main(["--data", str(setup["data"]), *setup["model_args"], *ARGS, "-o", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_csv_rows_animate_their_image_and_report_missing_files(setup, tmp_path, capfd):
    write_image(tmp_path / "cat.png")
    write_wav(tmp_path / "purr.wav", 5.0)
    rows = "image,audio,prompt,name\ncat.png,purr.wav,a cat purring,cat\nmissing.png,purr.wav,a ghost,ghost\n"
    (tmp_path / "list.csv").write_text(rows)
    out = tmp_path / "out"
    assert main(["--csv", str(tmp_path / "list.csv"), *setup["model_args"], *ARGS, "-o", str(out)]) == 0
    assert _files(out) == ["videos/cat_clip-00.mp4", "videos/cat_clip-01.mp4"]
    summary = capfd.readouterr().out
    assert "2 written" in summary and f"missing: {tmp_path / 'missing.png'}" in summary
    assert clip_starts(5.0, CLIPS, 2.0) == [0.0, 3.0]


def test_the_evaluate_command_reads_what_generate_wrote(setup, single, tmp_path):
    """Folder mode of ``python -m avsync_core.evaluate`` over the generated clips and the dataset's videos
    (AV-Align: the metric that needs no weights)."""
    pytest.importorskip("librosa")
    pytest.importorskip("cv2")
    from avsync_core.evaluate import main as evaluate

    listing = tmp_path / "present.txt"  # test.txt without the missing video
    listing.write_text("\n".join(f"{name}.mp4" for name in VIDEOS) + "\n")
    scores = tmp_path / "scores.csv"
    args = ["--generated-dir", str(single / "videos"), "--reference-dir", str(setup["data"] / "videos")]
    args += ["--list", str(listing), "--clips-per-video", str(CLIPS), "--metric", "av-align", "--output", str(scores)]
    assert evaluate(args) == 0
    rows = scores.read_text().splitlines()
    clips = sorted(row.split(",")[0] for row in rows[1:] if row.split(",")[0].endswith(".mp4"))
    assert clips == sorted(f"{name}_clip-{k:02d}.mp4" for name in VIDEOS for k in range(CLIPS))


@pytest.mark.slow
def test_the_paper_table_from_one_dataset_folder(setup, single, tmp_path):
    """generate -> ``evaluate --metric all``: every official result key, per clip, from the generated folder and
    the dataset's videos, with all the weight files the table needs (procedural or tiny stand-ins)."""
    pytest.importorskip("librosa")
    pytest.importorskip("cv2")
    from avsync_core.evaluate import main as evaluate
    from avsync_core.evaluation import AVSyncClassifier
    from conftest import golden_dir
    from eval_models import write_fid_inception, write_tiny_imagebind_with_text

    listing = tmp_path / "one.txt"
    listing.write_text("dog/bark_01.mp4\n")
    torch.manual_seed(0)
    AVSyncClassifier.build().save_safetensors(tmp_path / "classifier.safetensors")
    table = tmp_path / "table.json"
    args = ["--generated-dir", single / "videos", "--reference-dir", setup["data"] / "videos", "--list", listing]
    args += ["--clips-per-video", CLIPS, "--metric", "all", "--device", "cpu", "--output", table]
    args += [
        "--classifier",
        tmp_path / "classifier.safetensors",
        "--detector",
        golden_dir() / "paper_eval/i3d_stand_in.pt",
    ]
    args += ["--inception", write_fid_inception(tmp_path / "inception.pth")]
    args += ["--imagebind", write_tiny_imagebind_with_text(tmp_path / "imagebind.safetensors")]
    assert evaluate([str(a) for a in args]) == 0
    report = json.loads(table.read_text())
    keys = ["FID", "FVD", "IA_mean", "IA_std", "IT_mean", "IT_std", "RelSync_mean", "RelSync_std"]
    keys += ["AlignSync_mean", "AlignSync_std", "AVAlign_mean", "AVAlign_std"]
    assert all(np.isfinite(report[key]) for key in keys), {k: report.get(k) for k in keys}
    assert report["FID"] > 0 and report["FVD"] > 0
    clips = report["instance_metrics"]
    assert sorted(clips) == [f"dog/bark_01_clip-{k:02d}.mp4" for k in range(CLIPS)]
    for values in clips.values():
        assert sorted(values) == ["AVAlign", "AlignSync", "IA", "IT", "RelSync"]
        assert 0 < values["AlignSync"] < values["RelSync"] < 1
