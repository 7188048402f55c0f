"""The synchronisation metrics over a batch: every clip is scored with its own sound and its own reference.

The goldens are batch 1. Here a batch of three different clips must give, clip for clip, what three batch-1
calls give (the expectation never comes from a batched call), and a permuted batch the same numbers permuted.
Models as in test_eval_sync_golden (procedural classifier, golden tiny ImageBind).
"""

from __future__ import annotations

import pytest
import torch

from avsync_core.evaluation import alignsync, audio_to_mel, avsync_scores, preprocess_video, relsync
from avsync_core.evaluation.metrics import image_audio_similarities
from conftest import assert_close_rel, load_golden
from eval_models import procedural_classifier, tiny_imagebind

REL = 1e-4  # the goldens' tolerance: batching may change the summation order, nothing else
PERMUTATION = [2, 0, 1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models():
    return procedural_classifier(), tiny_imagebind()


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    """Three clips, each with its own sound, reference video and reference sound (all different)."""
    g = load_golden("sync_metrics", "sync_metrics.safetensors")
    video, ref_video = g["in.video"], g["in.ref_video"]
    sound, ref_sound = g["in.audio_waveform"][0], g["in.ref_audio_waveform"][0]
    return {
        "video": torch.cat([video, ref_video.flip(-1), video.flip(2)]),
        "ref_video": torch.cat([ref_video, video.flip(-2), ref_video.flip(2)]),
        "mel": torch.stack([audio_to_mel(s, 22050) for s in (sound, ref_sound, sound.roll(9000))]),
        "ref_mel": torch.stack([audio_to_mel(s, 22050) for s in (ref_sound, sound.flip(0), ref_sound.roll(15000))]),
    }


def _one(batch, i: int) -> dict[str, torch.Tensor]:
    return {k: v[i : i + 1] for k, v in batch.items()}


def _permuted(batch) -> dict[str, torch.Tensor]:
    return {k: v[PERMUTATION] for k, v in batch.items()}


def _metrics(models, b) -> dict[str, torch.Tensor]:
    classifier, imagebind = models
    aligned = alignsync(classifier, imagebind, b["mel"], b["video"], b["ref_video"])
    return {
        "avsync_score": avsync_scores(classifier, b["mel"], b["video"]),
        "relsync_ref_video": relsync(classifier, b["mel"], b["video"], ref_video=b["ref_video"]),
        "relsync_ref_audio": relsync(classifier, b["mel"], b["video"], ref_mel=b["ref_mel"]),
        "ia_sim": image_audio_similarities(imagebind, b["mel"], preprocess_video(b["video"])),
        "alignsync": aligned.alignsync,
        "alignsync.relsync": aligned.relsync,
        "alignsync.align_prob": aligned.align_prob,
        "alignsync.ia_sim": aligned.ia_sim,
        "alignsync.avsync_score": aligned.avsync_score,
        "alignsync.reference_score": aligned.reference_score,
    }


@pytest.fixture(scope="module")
def single(models, batch) -> dict[str, torch.Tensor]:
    """The expectation: each clip scored alone, then stacked."""
    per_clip = [_metrics(models, _one(batch, i)) for i in range(3)]
    return {name: torch.cat([m[name] for m in per_clip]) for name in per_clip[0]}


def test_the_clips_score_differently_so_a_pairing_error_would_show(single):
    """Any two clips differ by more than the tolerance, so scoring one with another's inputs cannot pass."""
    for name, values in single.items():
        per_clip = values.reshape(3, -1).double()
        spread = (per_clip[:, None] - per_clip[None]).abs().amax(dim=-1)
        off_diagonal = spread[~torch.eye(3, dtype=torch.bool)]
        assert off_diagonal.min() > REL * values.abs().max(), f"{name}: two clips score alike {per_clip}"


def test_a_batch_scores_each_clip_as_it_scores_alone(models, batch, single):
    for name, values in _metrics(models, batch).items():
        assert_close_rel(values, single[name], REL, name)


def test_a_permuted_batch_gives_the_same_scores_permuted(models, batch, single):
    for name, values in _metrics(models, _permuted(batch)).items():
        assert_close_rel(values, single[name][PERMUTATION], REL, name)
