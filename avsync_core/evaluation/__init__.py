"""Synchronisation metrics: the AVSyncD paper's AVSync score, RelSync and AlignSync, and TempoTokens' AV-Align.

Host-free: nothing here imports ComfyUI or diffusers. AV-Align's librosa and OpenCV are optional (the ``eval``
extra) and imported only when AV-Align runs.
"""

from .av_align import AVAlignResult, av_align, av_align_file, flow_trajectory, peak_iou, video_peaks
from .classifier import AudioConv2DNet, AVSyncClassifier, FCHead, VideoR2Plus1DNet
from .clip_score import ClipScores, score_clip
from .imagebind import ImageBindImageAudio, ImageBindVisionConfig, ImageBindVisionEncoder
from .metrics import (
    AlignSyncResult,
    align_probability,
    alignsync,
    avsync_scores,
    image_audio_similarities,
    relative_probability,
    relsync,
)
from .plot import SyncPlot, render_sync_plot
from .preprocess import CLIP_FPS, CLIP_FRAMES, audio_to_mel, check_video, preprocess_video

__all__ = [
    "CLIP_FPS",
    "CLIP_FRAMES",
    "AVAlignResult",
    "AVSyncClassifier",
    "AlignSyncResult",
    "ClipScores",
    "AudioConv2DNet",
    "FCHead",
    "ImageBindImageAudio",
    "ImageBindVisionConfig",
    "ImageBindVisionEncoder",
    "SyncPlot",
    "VideoR2Plus1DNet",
    "align_probability",
    "alignsync",
    "audio_to_mel",
    "av_align",
    "av_align_file",
    "avsync_scores",
    "check_video",
    "flow_trajectory",
    "image_audio_similarities",
    "peak_iou",
    "preprocess_video",
    "relative_probability",
    "relsync",
    "render_sync_plot",
    "score_clip",
    "video_peaks",
]
