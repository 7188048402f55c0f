"""Evaluation nodes: load the AVSync classifier and ImageBind's vision + audio branches, and score how well an
animation is in sync with its sound (the paper's AVSync score, RelSync, AlignSync, and AV-Align), with a plot.

The models live in ComfyUI's ModelPatcher and reach the GPU through comfy.model_management like every other
model of the graph; all metric math is in ``avsync_core.evaluation``.
"""

from __future__ import annotations

import comfy.model_management
import comfy.utils
import torch

from ..avsync_core.audio import from_comfy_audio
from ..avsync_core.errors import InvalidInputError
from ..avsync_core.evaluation import AVSyncClassifier, ImageBindImageAudio, render_sync_plot, score_clip
from ..avsync_core.evaluation.clip_score import STEPS
from ..avsync_core.evaluation.preprocess import CLIP_FRAMES
from . import model_paths
from .ownership import owned, owner
from .previews import save_preview
from .types import CATEGORY, IMAGEBIND_VISION_AUDIO, SYNC_CLASSIFIER
from .validation import check_widgets, verdict

CLASSIFIER_LOADER_TOOLTIPS = {
    "classifier_name": (
        "The AVSync classifier that scores synchronisation (AVSync score, RelSync, AlignSync). "
        + model_paths.HELP[model_paths.CLASSIFIER_FOLDER]
        + "."
    ),
}
IMAGEBIND_LOADER_TOOLTIPS = {
    "imagebind_name": (
        "ImageBind with its vision and audio branches, for AlignSync: Meta's imagebind_huge.pth (only those two "
        "branches are read) or the compact file python -m avsync_core.evaluation.imagebind writes, in "
        "ComfyUI/models/imagebind/. The audio-only file of 'Load ImageBind Audio Encoder' has no vision branch."
    ),
}
SYNC_SCORE_TOOLTIPS = {
    "images": (
        "The generated animation: exactly 12 frames at 6 fps (one 2 s clip), as the metrics were defined. For a "
        "longer animation, score each 12-frame clip (e.g. with core 'Get Image or Mask Range From Batch')."
    ),
    "audio": "The sound the animation was made from (any AUDIO; mixed to mono).",
    "classifier": "From 'Load AVSync Classifier'.",
    "audio_start_seconds": (
        "Where the clip's 2 s of sound start in the audio: 0 for the first clip, 11/6 s for the second clip of "
        "AVSync Encode Audio (clips overlap by one frame), and so on."
    ),
    "imagebind": "Optional, from 'Load ImageBind (Vision + Audio)': with reference_images, AlignSync is computed.",
    "reference_images": (
        "Optional real video with the same sound (12 frames at 6 fps, the same size as images): gives RelSync "
        "against it, and AlignSync with ImageBind. Its first frame is the ground-truth first frame."
    ),
    "reference_audio": (
        "Optional other sound for the same frames (its first 2 s are used): gives RelSync against that audio."
    ),
}
SCORE_OUTPUT_TOOLTIPS = (
    "The classifier's logit for (audio, frames): higher is more in sync. Comparable between takes of one sound.",
    "Probability that the animation is better in sync than reference_images (0.5 = as good); NaN without it.",
    "Probability that the frames fit audio better than reference_audio; NaN without it.",
    "RelSync against reference_images times how well each frame matches the sound in ImageBind's space "
    "compared with the real first frame (the paper's main metric, x100 in its tables); NaN without "
    "reference_images and imagebind.",
    "AV-Align: intersection over union of audio onsets and motion peaks matched within one frame (0 to 1).",
    "The plot: onset strength and motion over time, peaks, matched pairs, each frame's audio; scores in the title.",
)


class AVSyncClassifierLoader:
    @classmethod
    def INPUT_TYPES(cls):
        tips = CLASSIFIER_LOADER_TOOLTIPS
        return {
            "required": {"classifier_name": (model_paths.classifier_choices(), {"tooltip": tips["classifier_name"]})}
        }

    RETURN_TYPES = (SYNC_CLASSIFIER,)
    RETURN_NAMES = ("classifier",)
    OUTPUT_TOOLTIPS = ("The AVSync classifier of the AVSyncD paper (audio net, R(2+1)D video net, MLP head).",)
    FUNCTION = "load"
    CATEGORY = f"{CATEGORY}/loaders"
    DESCRIPTION = "Loads the AVSync classifier the synchronisation metrics use, from the release or a converted file."

    def load(self, classifier_name: str):
        path = model_paths.resolve(model_paths.CLASSIFIER_FOLDER, classifier_name)
        return (owner(AVSyncClassifier.from_file(path)),)


class AVSyncImageBindVisionAudioLoader:
    @classmethod
    def INPUT_TYPES(cls):
        tips = IMAGEBIND_LOADER_TOOLTIPS
        return {
            "required": {"imagebind_name": (model_paths.imagebind_file_choices(), {"tooltip": tips["imagebind_name"]})}
        }

    RETURN_TYPES = (IMAGEBIND_VISION_AUDIO,)
    RETURN_NAMES = ("imagebind",)
    OUTPUT_TOOLTIPS = ("ImageBind's vision and audio branches (AlignSync's image-audio similarity).",)
    FUNCTION = "load"
    CATEGORY = f"{CATEGORY}/loaders"
    DESCRIPTION = "Loads ImageBind's vision and audio branches without reading the other modalities."

    def load(self, imagebind_name: str):
        path = model_paths.resolve(model_paths.IMAGEBIND_FOLDER, imagebind_name)
        return (owner(ImageBindImageAudio.from_file(path)),)


def _waveform(audio: dict, name: str):
    try:
        return from_comfy_audio(audio, sample_rate=None, mono=False)
    except InvalidInputError as err:
        raise InvalidInputError(f"{name}: {err}") from None


class AVSyncSyncScore:
    @classmethod
    def INPUT_TYPES(cls):
        tips = SYNC_SCORE_TOOLTIPS
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": tips["images"]}),
                "audio": ("AUDIO", {"tooltip": tips["audio"]}),
                "classifier": (SYNC_CLASSIFIER, {"tooltip": tips["classifier"]}),
                "audio_start_seconds": (
                    "FLOAT",
                    {"default": 0.0, "min": 0.0, "max": 1e6, "step": 0.01, "tooltip": tips["audio_start_seconds"]},
                ),
            },
            "optional": {
                "imagebind": (IMAGEBIND_VISION_AUDIO, {"tooltip": tips["imagebind"]}),
                "reference_images": ("IMAGE", {"tooltip": tips["reference_images"]}),
                "reference_audio": ("AUDIO", {"tooltip": tips["reference_audio"]}),
            },
        }

    RETURN_TYPES = ("FLOAT", "FLOAT", "FLOAT", "FLOAT", "FLOAT", "IMAGE")
    RETURN_NAMES = ("avsync_score", "relsync_video", "relsync_audio", "alignsync", "av_align", "plot")
    OUTPUT_TOOLTIPS = SCORE_OUTPUT_TOOLTIPS
    OUTPUT_NODE = True
    FUNCTION = "score"
    CATEGORY = f"{CATEGORY}/evaluation"
    DESCRIPTION = (
        f"How well {CLIP_FRAMES} frames are in sync with their sound: the AVSyncD paper's metrics and AV-Align, "
        "and a plot of onsets against motion."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, audio_start_seconds: float):
        return verdict(lambda: check_widgets(cls, audio_start_seconds=audio_start_seconds))

    def score(
        self,
        images: torch.Tensor,
        audio: dict,
        classifier,
        audio_start_seconds: float,
        imagebind=None,
        reference_images: torch.Tensor | None = None,
        reference_audio: dict | None = None,
    ):
        sound = _waveform(audio, "audio")
        reference = _waveform(reference_audio, "reference_audio") if reference_audio is not None else None
        # Whole: the classifier's BatchNorms and the vision branch's MultiheadAttention have no cast-aware
        # ComfyUI layer, so these two cannot be streamed.
        comfy.model_management.load_models_gpu(
            [p for p in (classifier, imagebind) if p is not None], force_full_load=True
        )
        pbar = comfy.utils.ProgressBar(STEPS)

        def progress(done: int, total: int) -> None:
            comfy.model_management.throw_exception_if_processing_interrupted()
            pbar.update_absolute(done, total)

        with torch.inference_mode():
            scores = score_clip(
                owned(classifier),
                images,
                sound.samples,
                sound.sample_rate,
                audio_start=audio_start_seconds,
                imagebind=owned(imagebind) if imagebind is not None else None,
                reference_images=reference_images,
                reference_samples=reference.samples if reference is not None else None,
                reference_rate=reference.sample_rate if reference is not None else None,
                progress=progress,
            )
        plot = render_sync_plot(scores.av_align, CLIP_FRAMES, scores.named())
        image = torch.from_numpy(plot.pixels).float().div(255.0).unsqueeze(0)
        ui = save_preview(image, "AVSyncSyncScore")
        values = (scores.avsync_score, scores.relsync_video, scores.relsync_audio, scores.alignsync)
        return {"ui": ui, "result": (*values, scores.av_align.score, image)}
