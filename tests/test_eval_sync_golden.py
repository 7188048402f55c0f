"""AVSync score, RelSync and AlignSync against the official evaluation code (golden ``sync_metrics/``).

The classifier gets the README's procedural weights (no weight file needed); AlignSync's ImageBind is the tiny
vision + audio checkpoint built by ImageBind's own constructor (2 vision heads, 4 audio heads).
"""

from __future__ import annotations

import pytest
import torch

from avsync_core.evaluation import (
    AVSyncClassifier,
    alignsync,
    audio_to_mel,
    avsync_scores,
    preprocess_video,
    relsync,
)
from conftest import assert_close_rel, load_golden, load_golden_json
from eval_models import procedural_classifier, tiny_imagebind

REL = 1e-4


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


def test_float64_inputs_are_scored_as_float32(g, classifier):
    """Clips and mels in float64 (numpy's default) reach the float32 model as float32: the same score."""
    scores = avsync_scores(classifier, g["mel"].double(), g["in.video"].double())
    assert_close_rel(scores, g["avsync_score"], REL, "avsync_score from float64 inputs")


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
