"""Bad input to the synchronisation metrics is refused with a message that says what would fit."""

from __future__ import annotations

import pytest
import torch

from avsync_core.errors import InvalidInputError
from avsync_core.evaluation import (
    AVSyncClassifier,
    alignsync,
    audio_to_mel,
    avsync_scores,
    check_video,
    preprocess_video,
    relsync,
)
from avsync_core.evaluation.metrics import _embed_mels, _embed_videos


@pytest.fixture(scope="module")
def classifier() -> AVSyncClassifier:
    with torch.device("meta"):  # the checks run before any weight is used
        return AVSyncClassifier.build()


def _video(frames: int = 12, batch: int = 1, size: tuple[int, int] = (32, 40)) -> torch.Tensor:
    return torch.rand(batch, 3, frames, *size)


def _mel(batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, 1, 128, 204)


@pytest.mark.parametrize("frames", [11, 16])
def test_frame_count_other_than_12_says_how_to_fix(frames):
    with pytest.raises(InvalidInputError) as info:
        check_video(_video(frames))
    message = str(info.value)
    assert f"has {frames} frames" in message
    assert "exactly 12 frames at 6 fps" in message and "Resample the clip to 12 frames at 6 fps" in message


def test_frames_must_be_in_unit_range():
    with pytest.raises(InvalidInputError, match="divide 0-255 frames by 255"):
        check_video(_video() * 255)
    with pytest.raises(InvalidInputError, match="uint8"):
        check_video((_video() * 255).to(torch.uint8))
    with pytest.raises(InvalidInputError, match=r"\(batch, 3, frames, height, width\)"):
        check_video(torch.rand(3, 12, 32, 32))


def test_reference_video_must_match_the_generated_one(classifier):
    with pytest.raises(InvalidInputError, match=r"ref_video is shaped \(1, 3, 12, 32, 48\) but the generated video"):
        relsync(classifier, _mel(), _video(), ref_video=_video(size=(32, 48)))
    with pytest.raises(InvalidInputError, match="ref_video has 8 frames"):
        alignsync(classifier, None, _mel(), _video(), _video(frames=8))


def test_relsync_needs_exactly_one_reference(classifier):
    with pytest.raises(InvalidInputError, match="exactly one reference"):
        relsync(classifier, _mel(), _video())
    with pytest.raises(InvalidInputError, match="exactly one reference"):
        relsync(classifier, _mel(), _video(), ref_video=_video(), ref_mel=_mel())
    with pytest.raises(InvalidInputError, match="ref_mel has batch 2 but mel has 1"):
        relsync(classifier, _mel(), _video(), ref_mel=_mel(2))


def test_mels_and_batches(classifier):
    with pytest.raises(InvalidInputError, match=r"\(batch, 1, 128, 204\)"):
        avsync_scores(classifier, torch.zeros(1, 128, 204), _video())
    with pytest.raises(InvalidInputError, match=r"The batch has 2 video\(s\) but 3 mel\(s\)"):
        avsync_scores(classifier, _mel(3), _video(batch=2))
    with pytest.raises(InvalidInputError, match=r"\(samples,\) or \(channels, samples\)"):
        audio_to_mel(torch.zeros(1, 1, 100), 16000)


def test_stereo_audio_is_averaged_before_the_mel():
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(2, 44100, generator=g)
    stereo = audio_to_mel(torch.stack([left, right]), 22050)
    assert torch.allclose(stereo, audio_to_mel((left + right) / 2, 22050))
    assert stereo.shape == (1, 128, 204)


def test_inputs_are_moved_to_the_models_device(classifier):
    """The classifier lives on the meta device here (a GPU in use): CPU mels and clips are moved to it."""
    assert _embed_mels(classifier, _mel()).device.type == "meta"
    assert _embed_videos(classifier, preprocess_video(_video())).device.type == "meta"
