"""Audio front end: decode any audio, ImageBind's log-mel and audio tokens, per-frame segment masks, long clips.

Host-independent (no ComfyUI import); ComfyUI's AUDIO values convert with ``to_comfy_audio``/``from_comfy_audio``.
"""

from .comfy_audio import from_comfy_audio, to_comfy_audio
from .condition import AudioCondition, encode_audio_condition
from .decode import MAX_DECODE_SECONDS, check_decode_request, decode_audio, probe_audio_duration
from .imagebind import AudioEncoderOutput, ImageBindAudioConfig, ImageBindAudioEncoder
from .mel import (
    CLIP_SECONDS,
    MEL_MEAN,
    MEL_STD,
    NUM_MEL_BINS,
    TARGET_FRAMES,
    melspectrogram,
    melspectrogram_batch,
    min_samples,
    null_melspectrogram,
)
from .segments import (
    FREQ_PATCHES,
    MAX_FRAMES,
    NUM_TOKENS,
    TIME_PATCHES,
    segment_index,
    segment_masks,
    segment_time_masks,
    segment_time_seconds,
    segment_time_windows,
)
from .waveform import SAMPLE_RATE, Waveform, check_finite, mix_to_mono, resample
from .windows import (
    ENCODER_WINDOW_SECONDS,
    ClipWindow,
    check_clip_duration,
    clip_windows,
    start_windows,
    window_samples,
)

__all__ = [
    "AudioCondition",
    "AudioEncoderOutput",
    "CLIP_SECONDS",
    "ClipWindow",
    "FREQ_PATCHES",
    "ImageBindAudioConfig",
    "ImageBindAudioEncoder",
    "MAX_DECODE_SECONDS",
    "MAX_FRAMES",
    "MEL_MEAN",
    "ENCODER_WINDOW_SECONDS",
    "MEL_STD",
    "NUM_MEL_BINS",
    "NUM_TOKENS",
    "SAMPLE_RATE",
    "TARGET_FRAMES",
    "TIME_PATCHES",
    "Waveform",
    "check_clip_duration",
    "check_decode_request",
    "check_finite",
    "clip_windows",
    "decode_audio",
    "encode_audio_condition",
    "from_comfy_audio",
    "melspectrogram",
    "melspectrogram_batch",
    "min_samples",
    "mix_to_mono",
    "null_melspectrogram",
    "probe_audio_duration",
    "resample",
    "segment_index",
    "segment_masks",
    "segment_time_masks",
    "segment_time_seconds",
    "segment_time_windows",
    "start_windows",
    "to_comfy_audio",
    "window_samples",
]
