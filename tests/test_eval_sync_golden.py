"""AVSync score, RelSync and AlignSync against the official evaluation code (golden ``sync_metrics/``).

The classifier gets the README's procedural weights (no weight file needed); AlignSync's ImageBind is the tiny
vision + audio checkpoint built by ImageBind's own constructor (2 vision heads, 4 audio heads).
"""

from __future__ import annotations

import math

import pytest
import torch

from avsync_core.evaluation import (
    AVSyncClassifier,
    ImageBindImageAudio,
    alignsync,
    audio_to_mel,
    avsync_scores,
    preprocess_video,
    relsync,
)
from conftest import assert_close_rel, golden_dir, load_golden, load_golden_json

REL = 1e-4


def _hash_uniform(x: torch.Tensor) -> torch.Tensor:
    h = x & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    h = (h >> 16) ^ h
    return h.double() * 2 / 2**32 - 1


def procedural_classifier(tag: int = 0) -> AVSyncClassifier:
    """The golden README's weights: every tensor k of the sorted state dict from a hash of its element index."""
    model = AVSyncClassifier.build()
    state = model.state_dict()
    out = {}
    for k, key in enumerate(sorted(state)):
        value = state[key]
        if not value.is_floating_point():
            out[key] = value  # num_batches_tracked stays as built
            continue
        s = _hash_uniform(torch.arange(value.numel(), dtype=torch.int64) + 4194319 * k + 1000003 * tag)
        if key.endswith("running_var"):
            s = 1 + 0.5 * s.abs()
        elif key.endswith("running_mean"):
            s = 0.05 * s
        elif value.ndim == 1 and key.endswith("weight"):
            s = 1 + 0.1 * s
        elif value.ndim == 1 and key.endswith("bias"):
            s = 0.05 * s
        else:
            assert value.ndim >= 2, key
            s = s * math.sqrt(6 / (value.numel() / value.shape[0]))
        out[key] = s.reshape(value.shape).float()
    model.load_state_dict(out, strict=True)
    return model.requires_grad_(False).eval()


def tiny_imagebind() -> ImageBindImageAudio:
    path = golden_dir() / "sync_metrics" / "imagebind_tiny_vision_audio.safetensors"
    return ImageBindImageAudio.from_file(path, vision_heads=2, audio_heads=4)


@pytest.fixture(scope="module")
def g() -> dict[str, torch.Tensor]:
    return load_golden("sync_metrics", "sync_metrics.safetensors")


@pytest.fixture(scope="module")
def classifier() -> AVSyncClassifier:
    return procedural_classifier()


@pytest.fixture(scope="module")
def aligned(g, classifier):
    return alignsync(classifier, tiny_imagebind(), g["mel"], g["in.video"], g["in.ref_video"])


def test_state_dict_layout_is_the_official_one(classifier):
    expected = load_golden_json("sync_metrics", "sync_metrics.json")["classifier_state_dict"]
    actual = {k: list(v.shape) for k, v in classifier.state_dict().items()}
    assert actual == expected


def test_mel_from_22050_hz_audio(g):
    assert_close_rel(audio_to_mel(g["in.audio_waveform"], 22050)[None], g["mel"], REL, "mel")
    assert_close_rel(audio_to_mel(g["in.ref_audio_waveform"], 22050)[None], g["ref_mel"], REL, "ref_mel")


def test_preprocessed_video(g):
    out = preprocess_video(g["in.video"])
    assert out.shape == g["video_preprocessed"].shape
    assert (out - g["video_preprocessed"]).abs().max().item() <= 1e-5


def test_embeddings(g, classifier):
    with torch.no_grad():
        assert_close_rel(classifier.audio_encoder(g["mel"]), g["audio_embedding"], REL, "audio embedding")
        assert_close_rel(
            classifier.video_encoder(g["video_preprocessed"]), g["video_embedding"], REL, "video embedding"
        )


def test_avsync_score(g, classifier):
    assert_close_rel(avsync_scores(classifier, g["mel"], g["in.video"]), g["avsync_score"], REL, "avsync_score")


def test_relsync_against_reference_audio(g, classifier):
    out = relsync(classifier, g["mel"], g["in.video"], ref_mel=g["ref_mel"])
    assert_close_rel(out, g["relsync_ref_audio"], REL, "relsync_ref_audio")


def test_alignsync_and_its_parts(g, aligned):
    assert_close_rel(aligned.avsync_score, g["avsync_score"], REL, "avsync_score")
    assert_close_rel(aligned.reference_score, g["avsync_score_ref_video"], REL, "avsync_score_ref_video")
    assert_close_rel(aligned.relsync, g["relsync_ref_video"], REL, "relsync_ref_video")
    assert_close_rel(aligned.ia_sim, g["ia_sim"], REL, "ia_sim")
    assert_close_rel(aligned.alignsync, g["alignsync"], REL, "alignsync")
    expected = load_golden_json("sync_metrics", "sync_metrics.json")["values"]["alignsync"]
    assert aligned.alignsync.tolist() == pytest.approx(expected, rel=REL)


def test_relsync_against_reference_video_function(g, classifier, aligned):
    """relsync(ref_video=...) is the same number AlignSync multiplies by."""
    out = relsync(classifier, g["mel"], g["in.video"], ref_video=g["in.ref_video"])
    assert_close_rel(out, g["relsync_ref_video"], REL, "relsync_ref_video")
