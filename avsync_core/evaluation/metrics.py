"""AVSync score, RelSync and AlignSync, computed as the official evaluation (ASVA ``compute_avsync.py``) does.

* **AVSync score**: the classifier's logit for (mel, video); higher means more in sync.
* **RelSync**: softmax([score of the reference, score of the generated clip])[1], i.e. the probability that the
  generated clip is the better synchronised of the two. The reference is a real video with the same sound
  (the ground truth) or, against a reference audio, the same video scored with another sound. 0.5 means as
  well synchronised as the reference.
* **AlignSync**: RelSync (against the reference video) x AlignProb, where AlignProb is the mean over frames
  1..11 of softmax([ia(reference frame 0), ia(generated frame i)])[1] and ia is ImageBind's image-audio
  similarity with the clip's sound: it also rewards frames that keep matching the sound as well as the real
  first frame does.

Every function takes raw clips (b, 3, 12, h, w) in [0, 1] and mels (b, 1, 128, 204), runs the models on their
device in one batch, and returns float32 CPU tensors. Each clip's embeddings are computed once and paired in the
head as needed (the official code re-encodes; the numbers are the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InvalidInputError
from .classifier import AVSyncClassifier
from .imagebind import ImageBindImageAudio
from .preprocess import check_mel, check_reference, check_video, preprocess_video


@dataclass
class AlignSyncResult:
    alignsync: torch.Tensor  # (b,)
    relsync: torch.Tensor  # (b,) against the reference video
    align_prob: torch.Tensor  # (b,)
    ia_sim: torch.Tensor  # (b, 12): reference frame 0, then generated frames 1..11, each against the clip's sound
    avsync_score: torch.Tensor  # (b,) generated clip
    reference_score: torch.Tensor  # (b,) reference video with the same sound


def relative_probability(score: torch.Tensor, reference_score: torch.Tensor) -> torch.Tensor:
    """softmax([reference, generated])[generated]: RelSync from two classifier logits."""
    return torch.softmax(torch.stack([reference_score, score], dim=1), dim=1)[:, 1]


def align_probability(reference_first_sim: torch.Tensor, frame_sims: torch.Tensor) -> torch.Tensor:
    """AlignProb: mean over the generated frames of softmax([ia(reference frame 0), ia(frame)])[frame].

    ``reference_first_sim`` (b, 1); ``frame_sims`` (b, f - 1), the generated frames 1.. only.
    """
    pairs = torch.stack([reference_first_sim.expand_as(frame_sims), frame_sims], dim=2)
    return torch.softmax(pairs, dim=2)[:, :, 1].mean(dim=1)


def _on(model: torch.nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(device=model.device, dtype=torch.float32)


def _embed_videos(classifier: AVSyncClassifier, preprocessed: torch.Tensor) -> torch.Tensor:
    return classifier.video_encoder(_on(classifier, preprocessed))


def _embed_mels(classifier: AVSyncClassifier, mel: torch.Tensor) -> torch.Tensor:
    return classifier.audio_encoder(_on(classifier, mel))


@torch.no_grad()
def avsync_scores(classifier: AVSyncClassifier, mel: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """The classifier's logit (b,) for each clip and its sound."""
    check_mel(mel)
    _check_batch(mel, video)
    audio = _embed_mels(classifier, mel)
    return classifier.score_embeddings(audio, _embed_videos(classifier, preprocess_video(video))).float().cpu()


@torch.no_grad()
def relsync(
    classifier: AVSyncClassifier,
    mel: torch.Tensor,
    video: torch.Tensor,
    *,
    ref_video: torch.Tensor | None = None,
    ref_mel: torch.Tensor | None = None,
) -> torch.Tensor:
    """RelSync (b,) against exactly one of ``ref_video`` (same sound) or ``ref_mel`` (same video)."""
    if (ref_video is None) == (ref_mel is None):
        raise InvalidInputError("RelSync needs exactly one reference: a reference video or a reference audio.")
    check_mel(mel)
    _check_batch(mel, video)
    if ref_video is not None:
        check_reference(ref_video, video, "ref_video")
        audio = _embed_mels(classifier, mel)
        both = _embed_videos(classifier, preprocess_video(torch.cat([video, ref_video])))
        generated, reference = both.chunk(2)
        score = classifier.score_embeddings(audio, generated)
        reference_score = classifier.score_embeddings(audio, reference)
    else:
        check_mel(ref_mel, "ref_mel")
        if ref_mel.shape[0] != mel.shape[0]:
            raise InvalidInputError(f"ref_mel has batch {ref_mel.shape[0]} but mel has {mel.shape[0]}.")
        frames = _embed_videos(classifier, preprocess_video(video))
        audio, reference_audio = _embed_mels(classifier, torch.cat([mel, ref_mel])).chunk(2)
        score = classifier.score_embeddings(audio, frames)
        reference_score = classifier.score_embeddings(reference_audio, frames)
    return relative_probability(score, reference_score).float().cpu()


@torch.no_grad()
def image_audio_similarities(
    imagebind: ImageBindImageAudio, mel: torch.Tensor, preprocessed: torch.Tensor
) -> torch.Tensor:
    """ImageBind similarity (b, f) of every preprocessed frame (b, 3, f, 224, 224) with its clip's sound."""
    b, _, f = preprocessed.shape[:3]
    images = preprocessed.transpose(1, 2).flatten(0, 1)
    image_embeddings = imagebind.encode_image(_on(imagebind, images))
    audio_embeddings = imagebind.encode_audio(_on(imagebind, mel)).repeat_interleave(f, dim=0)
    return (image_embeddings * audio_embeddings).sum(dim=1).reshape(b, f).float().cpu()


@torch.no_grad()
def alignsync(
    classifier: AVSyncClassifier,
    imagebind: ImageBindImageAudio,
    mel: torch.Tensor,
    video: torch.Tensor,
    ref_video: torch.Tensor,
) -> AlignSyncResult:
    """AlignSync (and its parts) of generated clips against reference videos that share their sound."""
    check_mel(mel)
    _check_batch(mel, video)
    check_reference(ref_video, video, "ref_video")
    preprocessed = preprocess_video(torch.cat([video, ref_video]))
    audio = _embed_mels(classifier, mel)
    generated, reference = _embed_videos(classifier, preprocessed).chunk(2)
    score = classifier.score_embeddings(audio, generated).float().cpu()
    reference_score = classifier.score_embeddings(audio, reference).float().cpu()
    rel = relative_probability(score, reference_score)
    generated_frames, reference_frames = preprocessed.chunk(2)
    frames = torch.cat([reference_frames[:, :, :1], generated_frames[:, :, 1:]], dim=2)
    ia_sim = image_audio_similarities(imagebind, mel, frames)
    prob = align_probability(ia_sim[:, :1], ia_sim[:, 1:])
    return AlignSyncResult(prob * rel, rel, prob, ia_sim, score, reference_score)


def _check_batch(mel: torch.Tensor, video: torch.Tensor) -> None:
    check_video(video)
    if mel.shape[0] != video.shape[0]:
        raise InvalidInputError(f"The batch has {video.shape[0]} video(s) but {mel.shape[0]} mel(s); give one each.")
