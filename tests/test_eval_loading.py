"""Loading the AVSync classifier (released folder, our safetensors) and ImageBind's vision + audio branches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from avsync_core.errors import CheckpointError, InvalidInputError
from avsync_core.evaluation import AVSyncClassifier, ImageBindImageAudio
from avsync_core.evaluation.classifier import main as convert_classifier
from avsync_core.evaluation.imagebind import main as convert_imagebind
from conftest import golden_dir
from eval_models import CLASSIFIER_CONFIGS as _CONFIGS
from eval_models import procedural_classifier, write_official_folder

TINY_IMAGEBIND = ("sync_metrics", "imagebind_tiny_vision_audio.safetensors")


@pytest.fixture(scope="module")
def model() -> AVSyncClassifier:
    return procedural_classifier(tag=3)


@pytest.fixture(scope="module")
def official(model, tmp_path_factory) -> Path:
    return write_official_folder(model, tmp_path_factory.mktemp("classifier"))


def _small_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """The nets are convolutional with global pooling: a small clip exercises every weight quickly."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 1, 128, 204, generator=g), torch.randn(2, 3, 12, 48, 64, generator=g)


def test_official_folder_and_converted_file_give_identical_scores(model, official, tmp_path):
    mel, video = _small_inputs()
    from_folder = AVSyncClassifier.from_file(official)
    from_parent = AVSyncClassifier.from_file(official.parent)  # the checkpoint folder that holds modules/
    convert_classifier([str(official), str(tmp_path / "avsync_classifier.safetensors")])
    from_file = AVSyncClassifier.from_file(tmp_path / "avsync_classifier.safetensors")
    with torch.no_grad():
        expected = model(mel, video)
        scores = [m(mel, video) for m in (from_folder, from_parent, from_file)]
    for score in scores:
        assert torch.equal(score, expected)
    for key, value in model.state_dict().items():
        assert torch.equal(from_file.state_dict()[key], value), key


def test_missing_part_is_named(official, tmp_path):
    broken = tmp_path / "modules"
    for name in ("audio_encoder", "video_encoder"):
        (broken / name).mkdir(parents=True)
        for f in (official / name).iterdir():
            (broken / name / f.name).symlink_to(f)
    with pytest.raises(CheckpointError, match=r"head/config\.json is missing"):
        AVSyncClassifier.from_file(broken)
    (broken / "head").mkdir()
    (broken / "head" / "config.json").write_text(json.dumps(_CONFIGS["head"]))
    with pytest.raises(CheckpointError, match="No weights in"):
        AVSyncClassifier.from_file(broken)


def test_folder_of_another_model_is_refused(tmp_path):
    folder = tmp_path / "modules"
    for name, config in _CONFIGS.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "config.json").write_text(json.dumps(config))
        torch.save({"conv_in.weight": torch.zeros(4, 4, 3, 3)}, folder / name / "diffusion_pytorch_model.bin")
    with pytest.raises(
        CheckpointError, match=r"does not hold the AVSync classifier's audio_encoder.*Unexpected: conv_in\.weight"
    ):
        AVSyncClassifier.from_file(folder)
    (folder / "head" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(CheckpointError, match="holds a UNet2DConditionModel"):
        AVSyncClassifier.from_file(folder)


def test_other_safetensors_and_missing_paths_are_refused(tmp_path, golden):
    with pytest.raises(CheckpointError, match="is not an AVSync classifier file"):
        AVSyncClassifier.from_file(golden.joinpath(*TINY_IMAGEBIND))
    with pytest.raises(CheckpointError, match="Classifier not found"):
        AVSyncClassifier.from_file(tmp_path / "nowhere.safetensors")
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="neither the classifier's modules/ folder"):
        AVSyncClassifier.from_file(tmp_path / "weights.pt")


def test_converter_exits_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        convert_classifier([str(tmp_path / "missing"), str(tmp_path / "out.safetensors")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Classifier not found") and "\n" not in err


# ---------------------------------------------------------------------------------------------- ImageBind


def _images_and_mel() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, 224, 224, generator=g), torch.randn(3, 1, 128, 204, generator=g)


def test_imagebind_reads_only_vision_and_audio_from_a_full_checkpoint(tmp_path):
    tensors = load_file(str(golden_dir().joinpath(*TINY_IMAGEBIND)))
    full = dict(tensors)
    full["modality_trunks.text.blocks.0.attn.in_proj_weight"] = torch.zeros(48, 16)
    full["modality_preprocessors.depth.cls_token"] = torch.zeros(1, 1, 16)
    torch.save(full, tmp_path / "imagebind_like.pth")
    from_pth = ImageBindImageAudio.from_file(tmp_path / "imagebind_like.pth", vision_heads=2, audio_heads=4)
    from_tiny = ImageBindImageAudio.from_file(golden_dir().joinpath(*TINY_IMAGEBIND), vision_heads=2, audio_heads=4)
    images, mel = _images_and_mel()
    with torch.no_grad():
        assert torch.equal(from_pth.image_audio_similarity(images, mel), from_tiny.image_audio_similarity(images, mel))
        embeddings = from_tiny.encode_image(images)
        assert torch.allclose(embeddings.norm(dim=1), torch.ones(3), atol=1e-6)


def test_imagebind_compact_file_keeps_head_counts(tmp_path):
    source = golden_dir().joinpath(*TINY_IMAGEBIND)
    convert_imagebind([str(source), str(tmp_path / "ib.safetensors"), "--vision-heads", "2", "--audio-heads", "4"])
    model = ImageBindImageAudio.from_file(tmp_path / "ib.safetensors")  # no head counts needed any more
    reference = ImageBindImageAudio.from_file(source, vision_heads=2, audio_heads=4)
    assert model.vision.config.num_heads == 2 and model.audio.config.num_heads == 4
    images, mel = _images_and_mel()
    with torch.no_grad():
        assert torch.equal(model.image_audio_similarity(images, mel), reference.image_audio_similarity(images, mel))
    # Written under ImageBind's own names, so it is also a (two-branch) ImageBind checkpoint.
    assert set(load_file(str(tmp_path / "ib.safetensors"))) == set(load_file(str(source)))


def test_imagebind_errors(tmp_path):
    tensors = load_file(str(golden_dir().joinpath(*TINY_IMAGEBIND)))
    audio_only = {k: v for k, v in tensors.items() if ".audio." in k}
    save_file(audio_only, str(tmp_path / "audio_only.safetensors"))
    with pytest.raises(CheckpointError, match="no ImageBind vision weights"):
        ImageBindImageAudio.from_file(tmp_path / "audio_only.safetensors")
    with pytest.raises(CheckpointError, match="ImageBind checkpoint not found"):
        ImageBindImageAudio.from_file(tmp_path / "imagebind_huge.pth")
    model = ImageBindImageAudio.from_file(golden_dir().joinpath(*TINY_IMAGEBIND), vision_heads=2, audio_heads=4)
    with pytest.raises(InvalidInputError, match=r"\(batch, 3, 224, 224\)"):
        model.encode_image(torch.zeros(1, 3, 256, 256))
