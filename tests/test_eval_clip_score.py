"""One clip held in memory (frames last-channel, a waveform) scored with every metric, as the node does it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avsync_core.errors import InvalidInputError
from avsync_core.evaluation import alignsync, audio_to_mel, av_align, avsync_scores, relsync
from avsync_core.evaluation.clip_score import score_clip
from eval_models import procedural_classifier, tiny_imagebind
from synthetic_av import click_sound, default_click_times

RATE = 22050


@pytest.fixture(scope="module")
def classifier():
    return procedural_classifier()


def _frames(seed: int, frames: int = 12, size: tuple[int, int] = (40, 48)) -> torch.Tensor:
    return torch.rand(frames, *size, 3, generator=torch.Generator().manual_seed(seed))


def _sound(seconds: float, first_frame: int = 2) -> torch.Tensor:
    return torch.from_numpy(click_sound(seconds, RATE, default_click_times(seconds, 6, first_frame)))[None]


def test_every_metric_is_the_library_metric_of_the_same_clip(classifier):
    images, reference = _frames(0), _frames(1)
    sound = _sound(5.0)  # longer than the clip: the clip's 2 s start at audio_start
    other = _sound(2.0, first_frame=3)
    steps = []
    scores = score_clip(
        classifier,
        images,
        sound,
        RATE,
        audio_start=1.0,
        imagebind=tiny_imagebind(),
        reference_images=reference,
        reference_samples=other,
        reference_rate=RATE,
        progress=lambda done, total: steps.append((done, total)),
    )
    clip_sound = sound[0, RATE : 3 * RATE]
    mel = audio_to_mel(clip_sound, RATE)[None]
    video = images.permute(3, 0, 1, 2)[None]
    ref_video = reference.permute(3, 0, 1, 2)[None]
    assert scores.avsync_score == float(avsync_scores(classifier, mel, video)[0])
    expected = alignsync(classifier, tiny_imagebind(), mel, video, ref_video)
    assert scores.relsync_video == float(expected.relsync[0])
    assert scores.alignsync == float(expected.alignsync[0])
    ref_mel = audio_to_mel(other[0, : 2 * RATE], RATE)[None]
    assert scores.relsync_audio == float(relsync(classifier, mel, video, ref_mel=ref_mel)[0])
    frames_uint8 = (images.clamp(0, 1) * 255).to(torch.uint8).numpy()
    direct = av_align(frames_uint8, 6.0, clip_sound.numpy(), RATE)
    assert scores.av_align.score == direct.score
    assert scores.av_align.flow == pytest.approx(direct.flow, rel=1e-6)  # OpenCV's threads vary the last bits
    assert scores.av_align.audio_peaks == direct.audio_peaks and len(direct.audio_peaks) > 0
    assert steps == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    named = {"AVSync score", "RelSync (ref. video)", "RelSync (ref. audio)", "AlignSync", "AV-Align"}
    assert set(scores.named()) == named


def test_without_references_only_the_reference_free_metrics(classifier):
    scores = score_clip(classifier, _frames(0), _sound(2.0), RATE)
    assert math.isnan(scores.relsync_video) and math.isnan(scores.relsync_audio) and math.isnan(scores.alignsync)
    assert list(scores.named()) == ["AVSync score", "AV-Align"]
    assert np.isfinite(scores.avsync_score)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": _frames(0, frames=24)}, r"images has 24 frames.*Resample the clip to 12 frames at 6 fps"),
        ({"reference_images": _frames(1, size=(32, 48))}, r"reference_images are \(12, 32, 48, 3\) but images are"),
        ({"reference_images": _frames(1, frames=8)}, "reference_images has 8 frames"),
        ({"audio_start": 3.0}, r"audio is 2\.00 s long, so the clip cannot start at 3 s"),
        ({"images": torch.rand(12, 40, 3)}, r"images must be frames shaped \(frames, height, width, 3\)"),
    ],
)
def test_bad_input_names_the_input(classifier, kwargs, message):
    args = {"images": _frames(0), "samples": _sound(2.0), "sample_rate": RATE, **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        score_clip(classifier, **args)
