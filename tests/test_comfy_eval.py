"""The evaluation nodes inside ComfyUI: loaders through folder_paths, models in ModelPatcher, the Sync Score node
on a generated clip (its numbers are the library's, its plot is shown and returned), and bad input.

Host tests: ComfyUI runs in-process on the CPU. The classifier has the golden README's procedural weights (as
the released folder layout and as our file); ImageBind is the golden tiny vision + audio model.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_comfy_nodes import model_folders

import comfy_host
from eval_models import procedural_classifier, tiny_imagebind, write_official_folder
from synthetic_av import click_sound

pytestmark = pytest.mark.host

RATE = 22050
FPS = 6.0
JUMPS = (3, 8)  # frames where the square jumps, and the sound clicks


@pytest.fixture(scope="module")
def pack():
    comfy_host.load_plugin_package()
    from comfyui_avsync import nodes as pack_nodes

    return pack_nodes


@pytest.fixture(scope="module")
def models_root(pack, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_models")
    classifier = procedural_classifier(tag=1)
    write_official_folder(classifier, root / "avsync_classifier" / "vggss_sync_contrast")
    classifier.save_safetensors(root / "avsync_classifier" / "avsync_classifier.safetensors")
    (root / "imagebind").mkdir()
    tiny_imagebind().save_safetensors(root / "imagebind" / "imagebind_tiny_vision_audio.safetensors")
    tiny_imagebind().save_safetensors(root / "avsync_classifier" / "not_a_classifier.safetensors")
    return root


@pytest.fixture(scope="module")
def folders(models_root):
    with model_folders(avsync_classifier=[models_root / "avsync_classifier"], imagebind=[models_root / "imagebind"]):
        yield models_root


@pytest.fixture(scope="module")
def loaded(folders, pack):
    from comfyui_avsync.nodes.evaluation_nodes import AVSyncClassifierLoader, AVSyncImageBindVisionAudioLoader

    classifier = AVSyncClassifierLoader().load("vggss_sync_contrast/modules [classifier folder]")[0]
    imagebind = AVSyncImageBindVisionAudioLoader().load("imagebind_tiny_vision_audio.safetensors")[0]
    return classifier, imagebind


def generated_clip(frames: int = 12, size: int = 64, seed: int = 0) -> torch.Tensor:
    """IMAGE (F, H, W, 3): a textured square that creeps right and jumps at the JUMPS frames."""
    g = torch.Generator().manual_seed(seed)
    texture = torch.rand(16, 16, 3, generator=g)
    clip = torch.full((frames, size, size, 3), 0.2)
    x = 2
    for i in range(frames):
        x += 12 if i in JUMPS else 0
        clip[i, 20:36, x : x + 16] = texture
    return clip


def clicks(seconds: float = 2.0) -> dict:
    samples = torch.from_numpy(click_sound(seconds, RATE, [j / FPS for j in JUMPS]))
    return {"waveform": samples.reshape(1, 1, -1).repeat(1, 2, 1), "sample_rate": RATE}


def test_loaders_list_the_release_folder_and_files(folders, pack):
    from comfyui_avsync.nodes import model_paths

    choices = model_paths.classifier_choices()
    assert choices[0] == "vggss_sync_contrast/modules [classifier folder]"
    assert {"avsync_classifier.safetensors", "not_a_classifier.safetensors"} <= set(choices)
    assert not any(c.endswith(".bin") for c in choices)  # the parts of the release folder are not entries
    assert model_paths.imagebind_file_choices() == ["imagebind_tiny_vision_audio.safetensors"]


@pytest.mark.slow
def test_sync_score_node_on_a_generated_clip(loaded, pack):
    import comfy.model_management
    import comfy.model_patcher
    import folder_paths
    from comfyui_avsync.avsync_core.evaluation import render_sync_plot, score_clip
    from comfyui_avsync.nodes.evaluation_nodes import AVSyncSyncScore
    from comfyui_avsync.nodes.ownership import owned

    classifier, imagebind = loaded
    assert isinstance(classifier, comfy.model_patcher.ModelPatcher)
    images, reference, audio = generated_clip(), generated_clip(seed=1), clicks()
    other = {"waveform": torch.roll(audio["waveform"], RATE // 2, dims=2), "sample_rate": RATE}
    with torch.inference_mode():
        out = AVSyncSyncScore().score(images, audio, classifier, 0.0, imagebind, reference, other)
    loaded_models = [m.model for m in comfy.model_management.current_loaded_models]
    assert classifier in loaded_models and imagebind in loaded_models  # moved by ComfyUI's model management

    expected = score_clip(
        owned(classifier),
        images,
        audio["waveform"][0],
        RATE,
        imagebind=owned(imagebind),
        reference_images=reference,
        reference_samples=other["waveform"][0],
        reference_rate=RATE,
    )
    avsync_score, relsync_video, relsync_audio, alignsync, av_align, plot = out["result"]
    assert (avsync_score, relsync_video, relsync_audio, alignsync, av_align) == (
        expected.avsync_score,
        expected.relsync_video,
        expected.relsync_audio,
        expected.alignsync,
        expected.av_align.score,
    )
    assert all(math.isfinite(v) for v in (avsync_score, relsync_video, relsync_audio, alignsync))
    assert 0 < relsync_video < 1 and 0 < alignsync < relsync_video
    # The clicks fall on the jumps: AV-Align finds them and matches them.
    assert [round(t * FPS) for t in expected.av_align.video_peaks] == list(JUMPS)
    assert len(expected.av_align.matches) == len(JUMPS) and av_align == 1.0

    drawn = render_sync_plot(expected.av_align, 12, expected.named())
    assert plot.shape == (1, *drawn.pixels.shape) and plot.dtype == torch.float32
    assert torch.equal((plot[0] * 255).round().to(torch.uint8), torch.from_numpy(drawn.pixels))
    (shown,) = out["ui"]["images"]
    assert shown["type"] == "temp"
    path = f"{folder_paths.get_temp_directory()}/{shown['subfolder']}/{shown['filename']}"
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), drawn.pixels)


def test_without_references_the_reference_scores_are_nan(loaded, pack):
    from comfyui_avsync.nodes.evaluation_nodes import AVSyncSyncScore

    classifier, _ = loaded
    with torch.inference_mode():
        result = AVSyncSyncScore().score(generated_clip(), clicks(), classifier, 0.0)["result"]
    assert math.isfinite(result[0]) and all(math.isnan(v) for v in result[1:4]) and 0 <= result[4] <= 1


def test_cancel_stops_scoring(loaded, pack):
    import comfy.model_management
    from comfyui_avsync.nodes.evaluation_nodes import AVSyncSyncScore

    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException), torch.inference_mode():
            AVSyncSyncScore().score(generated_clip(), clicks(), loaded[0], 0.0)
    finally:
        comfy.model_management.interrupt_current_processing(False)


def test_bad_input_names_the_input(loaded, pack):
    from comfyui_avsync.avsync_core.errors import AVSyncError
    from comfyui_avsync.nodes.evaluation_nodes import AVSyncSyncScore

    classifier, imagebind = loaded
    node = AVSyncSyncScore()
    cases = [
        ({"images": generated_clip(frames=23)}, r"images has 23 frames.*Resample the clip to 12 frames at 6 fps"),
        ({"reference_images": generated_clip(size=48)}, r"reference_images are \(12, 48, 48, 3\) but images are"),
        ({"reference_audio": {"waveform": torch.zeros(1, 2, 0), "sample_rate": RATE}}, "reference_audio: "),
        ({"audio_start_seconds": 5.0}, "audio is 2.00 s long, so the clip cannot start at 5 s"),
    ]
    for change, message in cases:
        args = {"images": generated_clip(), "audio": clicks(), "classifier": classifier, "audio_start_seconds": 0.0}
        with pytest.raises(AVSyncError, match=message), torch.inference_mode():
            node.score(**{**args, **change})


def test_classifier_loader_errors(folders, pack, tmp_path):
    from comfyui_avsync.avsync_core.errors import CheckpointError
    from comfyui_avsync.nodes.evaluation_nodes import AVSyncClassifierLoader

    loader = AVSyncClassifierLoader()
    with pytest.raises(CheckpointError, match="not_a_classifier.safetensors is not an AVSync classifier file"):
        loader.load("not_a_classifier.safetensors")
    with pytest.raises(CheckpointError, match="No model found in models/avsync_classifier.*lzhangbj/ASVA"):
        loader.load("(none found: see the tooltip) models/avsync_classifier")
    broken = tmp_path / "broken"
    write_official_folder(procedural_classifier(), broken)
    (broken / "modules" / "video_encoder" / "config.json").unlink()
    with model_folders(avsync_classifier=[tmp_path]):
        with pytest.raises(CheckpointError, match=r"video_encoder/config\.json is missing"):
            loader.load("broken/modules [classifier folder]")
