"""``python -m avsync_core.evaluate --metric fid fvd ia it``: the paper's table over a folder pair, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_eval_command import _write_clip

from avsync_core.evaluation.clip_similarity import FrameSimilarities, frame_similarities
from avsync_core.evaluation.clips import load_generated_clip, load_reference_clip, reference_clip_starts
from avsync_core.evaluation.command import main
from avsync_core.evaluation.frechet import FeatureStats, frechet_distance
from avsync_core.evaluation.fvd import fvd_features, load_detector
from avsync_core.evaluation.imagebind import ImageBindImageAudio
from avsync_core.evaluation.imagebind_text import ImageBindTextEncoder
from conftest import golden_dir
from eval_models import write_tiny_imagebind_with_text

DETECTOR = golden_dir() / "paper_eval" / "i3d_stand_in.pt"
# Ground truths listed out of order, in two classes: each clip's text must still be its own class.
LISTING = ["zebra/gallop.mp4", "birds/robin.mp4"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("paper_command")
    for n, name in enumerate(LISTING):
        _write_clip(root / "gt" / name, 30, 20 + n)
        for i in range(2):
            _write_clip(root / "gen" / name.replace(".mp4", f"_clip-{i}.mp4"), 12, 30 + 2 * n + i)
    (root / "list.txt").write_text("\n".join(LISTING) + "\n")
    return {"root": root, "imagebind": write_tiny_imagebind_with_text(root / "imagebind.safetensors")}


def _args(folders, *extra) -> list[str]:
    root = folders["root"]
    argv = ["--generated-dir", root / "gen", "--reference-dir", root / "gt", "--list", root / "list.txt"]
    argv += ["--clips-per-video", "2", "--device", "cpu", *extra]
    return [str(a) for a in argv]


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_fvd_ia_it_over_a_folder_pair_match_the_definitions(folders, tmp_path):
    out = tmp_path / "table.json"
    argv = _args(folders, "--metric", "fvd", "ia", "it", "--detector", DETECTOR)
    assert main(argv + ["--imagebind", str(folders["imagebind"]), "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    root = folders["root"]
    detector = load_detector(DETECTOR)
    image_audio = ImageBindImageAudio.from_file(folders["imagebind"])
    text = ImageBindTextEncoder.from_file(folders["imagebind"])
    truth, generated, ia, it = FeatureStats(), FeatureStats(), {}, {}
    for name in sorted(LISTING):
        reference = root / "gt" / name
        clips = [load_reference_clip(reference, s).video for s in reference_clip_starts(reference, 2)]
        truth.add(fvd_features(detector, torch.stack(clips)))
        for i in range(2):
            clip_name = name.replace(".mp4", f"_clip-{i}.mp4")
            clip = load_generated_clip(root / "gen" / clip_name)
            generated.add(fvd_features(detector, clip.video[None]))
            sims = frame_similarities(image_audio, clip.video[None], clip.mel[None], [name.split("/")[0]], text)
            ia[clip_name] = float(FrameSimilarities.per_clip(sims.ia)[0])
            it[clip_name] = float(FrameSimilarities.per_clip(sims.it)[0])
    assert report["FVD"] == pytest.approx(frechet_distance(truth, generated), rel=1e-6)
    assert sorted(report["instance_metrics"]) == sorted(ia)
    for clip_name, values in report["instance_metrics"].items():
        assert values["IA"] == pytest.approx(ia[clip_name], abs=1e-6)
        assert values["IT"] == pytest.approx(it[clip_name], abs=1e-6)  # its own IT, not IA (official bug)
        assert values["IT"] != pytest.approx(values["IA"], abs=1e-4)
    ias = torch.tensor(list(ia.values()), dtype=torch.float64)
    assert report["IA_mean"] == pytest.approx(float(ias.mean()), abs=1e-6)
    assert report["IA_std"] == pytest.approx(float(ias.std()), abs=1e-6)
    assert report["IT_mean"] == pytest.approx(sum(it.values()) / 4, abs=1e-6)
    assert report["num_clips_per_video"] == 2 and "FID" not in report


def test_it_uses_each_clips_own_class_name(folders, tmp_path):
    """Texts follow their ground-truth paths, whatever the list order (official bug: unsorted categories)."""
    out = tmp_path / "it.json"
    assert main(_args(folders, "--metric", "it", "--imagebind", str(folders["imagebind"]), "--output", str(out))) == 0
    table = json.loads(out.read_text())["instance_metrics"]
    fixed = tmp_path / "fixed.json"
    argv = _args(folders, "--metric", "it", "--imagebind", str(folders["imagebind"]), "--text", "birds")
    assert main(argv + ["--output", str(fixed)]) == 0
    birds = json.loads(fixed.read_text())["instance_metrics"]
    assert table["birds/robin_clip-0.mp4"]["IT"] == pytest.approx(birds["birds/robin_clip-0.mp4"]["IT"], abs=1e-7)
    assert table["zebra/gallop_clip-0.mp4"]["IT"] != pytest.approx(birds["zebra/gallop_clip-0.mp4"]["IT"], abs=1e-5)


def test_bad_weight_files_are_one_line_and_status_2(folders, tmp_path, capsys):
    not_script = tmp_path / "i3d_state_dict.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, not_script)
    message = _error(capsys, _args(folders, "--metric", "fvd", "--detector", str(not_script)))
    assert str(not_script) in message and "TorchScript" in message and "i3d_torchscript.pt" in message
    wrong = tmp_path / "inception.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3), "other.weight": torch.zeros(1)}, wrong)
    message = _error(capsys, _args(folders, "--metric", "fid", "--inception", str(wrong)))
    assert str(wrong) in message and "FID InceptionV3" in message and "Unexpected: other.weight" in message
    missing = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    message = _error(capsys, _args(folders, "--metric", "fid", "--inception", str(missing)))
    assert str(missing) in message and "not found" in message and "pytorch-fid" in message
    assert "--inception is needed" in _error(capsys, _args(folders, "--metric", "fid"))
    assert "--detector is needed" in _error(capsys, _args(folders, "--metric", "fvd"))
    vision_audio_only = golden_dir() / "sync_metrics" / "imagebind_tiny_vision_audio.safetensors"
    message = _error(capsys, _args(folders, "--metric", "it", "--imagebind", str(vision_audio_only)))
    assert "vision head count" in message or "text branch" in message


def test_bad_folders_and_modes_are_one_line_and_status_2(folders, tmp_path, capsys):
    root = folders["root"]
    message = _error(capsys, _args(folders, "--metric", "fvd", "--detector", str(DETECTOR), "--clips-per-video", "3"))
    assert "expected --clips-per-video 3" in message
    short = tmp_path / "gen" / "birds" / "robin_clip-0.mp4"
    _write_clip(short, 8, 1)
    _write_clip(tmp_path / "gen" / "birds" / "robin_clip-1.mp4", 12, 2)
    argv = ["--generated-dir", tmp_path / "gen", "--reference-dir", root / "gt", "--clips-per-video", "2"]
    argv += ["--list", tmp_path / "one.txt", "--metric", "fvd", "--detector", DETECTOR]
    (tmp_path / "one.txt").write_text("birds/robin.mp4\n")
    message = _error(capsys, [str(a) for a in argv])
    assert str(short) in message and "exactly 12 frames at 6 fps" in message
    message = _error(capsys, ["--video", str(short), "--metric", "fid"])
    assert "--generated-dir" in message
    message = _error(capsys, _args(folders, "--metric", "fvd", "--detector", str(DETECTOR), "--output", "t.csv"))
    assert ".json" in message
    flat = tmp_path / "flat"
    _write_clip(flat / "gt" / "robin.mp4", 30, 3)
    _write_clip(flat / "gen" / "robin_clip-0.mp4", 12, 4)
    argv = ["--generated-dir", flat / "gen", "--reference-dir", flat / "gt", "--clips-per-video", "1"]
    argv += ["--metric", "it", "--imagebind", folders["imagebind"]]
    message = _error(capsys, [str(a) for a in argv])
    assert "--text" in message and "robin.mp4" in message
