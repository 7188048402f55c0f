"""AVSync Sync Score on a real headless ComfyUI: a small API prompt scores a 12-frame clip (an animated PNG that
core Load Image turns into a 12-image batch) against its clicks and hands back the plot it showed.

Host test: the classifier has procedural weights (our .safetensors in models/avsync_classifier), ImageBind is
the golden tiny vision + audio model (models/imagebind).
"""

from __future__ import annotations

import io
import urllib.parse
import wave

import numpy as np
import pytest
from PIL import Image
from test_comfy_eval import FPS, JUMPS, RATE, generated_clip

from avsync_core.evaluation.plot import HEIGHT, WIDTH
from comfy_host import ComfyServer
from eval_models import procedural_classifier, tiny_imagebind
from synthetic_av import click_sound

pytestmark = [pytest.mark.host, pytest.mark.slow]


def write_clip_png(path):
    frames = (generated_clip() * 255).round().byte().numpy()
    frames[:, 0, 0, 0] = np.arange(len(frames))  # no two frames equal, or the APNG writer merges them
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / FPS))
    return path


def write_clicks_wav(path):
    samples = (click_sound(2.0, RATE, [j / FPS for j in JUMPS]) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes(samples.tobytes())
    return path


def test_sync_score_runs_in_a_prompt_and_returns_its_plot(tmp_path):
    procedural_classifier().save_safetensors(tmp_path / "avsync_classifier.safetensors")
    tiny_imagebind().save_safetensors(tmp_path / "imagebind_tiny_vision_audio.safetensors")
    with ComfyServer(plugin=True) as server:
        clip = server.upload_input(write_clip_png(tmp_path / "clip.png"))
        prompt = {
            "1": {"class_type": "LoadImage", "inputs": {"image": clip}},
            "2": {
                "class_type": "AVSyncLoadAudio",
                "inputs": {
                    "audio": server.upload_input(write_clicks_wav(tmp_path / "clicks.wav")),
                    "start_seconds": 0.0,
                    "duration_seconds": 0.0,
                },
            },
            "3": {
                "class_type": "AVSyncClassifierLoader",
                "inputs": {
                    "classifier_name": server.add_model("avsync_classifier", tmp_path / "avsync_classifier.safetensors")
                },
            },
            "4": {
                "class_type": "AVSyncImageBindVisionAudioLoader",
                "inputs": {
                    "imagebind_name": server.add_model(
                        "imagebind", tmp_path / "imagebind_tiny_vision_audio.safetensors"
                    )
                },
            },
            "5": {
                "class_type": "AVSyncSyncScore",
                "inputs": {
                    "images": ["1", 0],
                    "audio": ["2", 0],
                    "classifier": ["3", 0],
                    "audio_start_seconds": 0.0,
                    "imagebind": ["4", 0],
                },
            },
            "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 5], "filename_prefix": "sync_plot"}},
        }
        entry = server.run_prompt(prompt, timeout=600)
        (shown,) = entry["outputs"]["5"]["images"]
        assert shown["type"] == "temp" and shown["filename"].startswith("AVSyncSyncScore")
        query = urllib.parse.urlencode({k: shown[k] for k in ("filename", "subfolder", "type")})
        status, body = server._request(f"/view?{query}")
        assert status == 200
        plot = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
        (saved,) = server.output_files(entry)
        assert np.array_equal(np.asarray(Image.open(saved).convert("RGB")), plot)  # the IMAGE output is the plot
        assert plot.shape == (HEIGHT, WIDTH, 3) and plot.std() > 10
        assert "IMPORT FAILED" not in server.log_text()
