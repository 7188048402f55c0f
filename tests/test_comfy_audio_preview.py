"""In ComfyUI (in-process): Encode Audio shows its per-frame preview in the page and outputs it as an IMAGE;
Load Audio offers the upload button and refuses a file that is not sound. Host tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import comfy_host

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def pack():
    comfy_host.load_plugin_package()
    from comfyui_avsync import nodes as pack_nodes

    return pack_nodes


@pytest.fixture(scope="module")
def encoder(pack, golden):
    from comfyui_avsync.avsync_core.audio import ImageBindAudioEncoder

    return ImageBindAudioEncoder.from_file(
        golden / "imagebind_audio_tiny" / "imagebind_audio_tiny.safetensors", num_heads=4
    )


def test_encode_audio_shows_and_outputs_the_frame_preview(pack, encoder):
    import folder_paths
    from comfyui_avsync.avsync_core.audio.preview import band_colour, preview_layout
    from comfyui_avsync.nodes.audio_nodes import AVSyncEncodeAudio

    assert AVSyncEncodeAudio.RETURN_TYPES == ("AVSYNC_AUDIO", "INT", "IMAGE"), "new outputs go last: links keep slots"
    rate = 44100
    audio = {
        "waveform": 0.3 * torch.randn(1, 2, int(3.5 * rate), generator=torch.Generator().manual_seed(0)),
        "sample_rate": rate,
    }
    with torch.inference_mode():
        out = AVSyncEncodeAudio().encode(audio, encoder, 12, 6.0, 0)
    condition, total, preview = out["result"]
    assert condition.num_windows == 2 and total == 23
    layout = preview_layout(condition.windows, 12, 6.0)
    assert preview.shape == (1, layout.height, layout.width, 3) and preview.dtype == torch.float32
    (shown,) = out["ui"]["images"]
    assert shown["type"] == "temp"
    saved = np.asarray(
        Image.open(folder_paths.get_temp_directory() + "/" + shown["subfolder"] + "/" + shown["filename"])
    )
    assert np.array_equal(saved, (preview[0] * 255).round().byte().numpy()), "the page shows the IMAGE output"
    top, bottom = layout.lane(0)
    lane = saved[(top + bottom) // 2]
    assert np.all(lane == band_colour(0), axis=1).sum() > 10  # frame 0's bars are drawn


def test_load_audio_offers_upload_and_refuses_files_that_are_not_sound(pack, tmp_path):
    import folder_paths
    from comfyui_avsync.nodes.audio_nodes import AVSyncLoadAudio

    assert AVSyncLoadAudio.INPUT_TYPES()["required"]["audio"][1]["audio_upload"] is True
    (tmp_path / "notes.txt").write_text("not a sound")
    comfy_host.write_clicks(tmp_path / "clap.wav")
    previous = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(tmp_path))
    try:
        message = AVSyncLoadAudio.VALIDATE_INPUTS("notes.txt", 0.0, 0.0)
        assert AVSyncLoadAudio.VALIDATE_INPUTS("clap.wav", 0.0, 0.0) is True
        assert "not found" in AVSyncLoadAudio.VALIDATE_INPUTS("gone.wav", 0.0, 0.0)
    finally:
        folder_paths.set_input_directory(previous)
    assert "'notes.txt' is not an audio or video file" in message and "upload a sound" in message


def test_load_audio_refuses_hostile_values_when_the_prompt_is_queued(pack, tmp_path):
    """Each refusal comes from VALIDATE_INPUTS (queue time, before any model loads) and names the input."""
    import folder_paths
    from comfyui_avsync.nodes.audio_nodes import AVSyncLoadAudio

    inputs, outside = tmp_path / "input", tmp_path / "private"
    inputs.mkdir()
    outside.mkdir()
    comfy_host.write_clicks(outside / "secret.wav")
    comfy_host.write_clicks(inputs / "clap.wav", seconds=1.0)
    (inputs / "link.wav").symlink_to(outside / "secret.wav")
    (inputs / "empty.wav").write_bytes(b"")
    (inputs / "cut.wav").write_bytes((inputs / "clap.wav").read_bytes()[:30])
    previous = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(inputs))
    try:
        cases = {
            ("../private/secret.wav", 0.0, 0.0): "leads outside the folder",
            ("link.wav", 0.0, 0.0): "leads outside the folder",
            ("empty.wav", 0.0, 0.0): "is empty (0 bytes)",
            ("cut.wav", 0.0, 0.0): "FFmpeg cannot read",
            ("clap.wav", float("nan"), 0.0): "start_seconds must be a finite number",
            ("clap.wav", 0.0, float("inf")): "duration_seconds must be a finite number",
            ("clap.wav", 5.0, 0.0): "at or past the end of the audio",
            (7, 0.0, 0.0): "audio must be the name of a file",
        }
        answers = {case: AVSyncLoadAudio.VALIDATE_INPUTS(*case) for case in cases}
        assert AVSyncLoadAudio.VALIDATE_INPUTS("clap.wav", 0.5, 0.0) is True
    finally:
        folder_paths.set_input_directory(previous)
    for case, expected in cases.items():
        assert isinstance(answers[case], str) and expected in answers[case], (case, answers[case])
