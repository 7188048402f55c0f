"""Audio nodes: load audio (also the sound of a video), load the ImageBind audio encoder, encode the audio."""

from __future__ import annotations

import os
from pathlib import Path

import comfy.model_management
import comfy.ops
import comfy.utils
import folder_paths
import torch

from ..avsync_core.audio import (
    MAX_FRAMES,
    ImageBindAudioEncoder,
    check_clip_duration,
    check_decode_request,
    decode_audio,
    encode_audio_condition,
    from_comfy_audio,
    to_comfy_audio,
)
from ..avsync_core.errors import AudioError, AVSyncError, InvalidInputError
from ..avsync_core.inputs import file_inside
from . import model_paths
from .ownership import owner
from .previews import frame_preview_image, save_preview
from .types import AUDIO_CONDITION, AUDIO_ENCODER, CATEGORY
from .validation import check_widgets, verdict

LOAD_AUDIO_TOOLTIPS = {
    "audio": (
        "An audio file, or a video whose sound track to use, from ComfyUI's input folder (any format FFmpeg "
        "reads). The upload button (or dropping a file on the node) puts a file into the input folder."
    ),
    "start_seconds": (
        "Where to start in the file, in seconds. Only the requested part is decoded, so long files are cheap."
    ),
    "duration_seconds": "How many seconds to load; 0 loads to the end of the file.",
}
ENCODER_LOADER_TOOLTIPS = {
    "encoder_name": (
        "ImageBind's audio branch: imagebind_huge.pth or the compact file in models/imagebind, or an official "
        "AVSyncD folder (its audio_encoder/) in models/avsyncd. " + model_paths.HELP[model_paths.IMAGEBIND_FOLDER] + "."
    ),
}
ENCODE_AUDIO_TOOLTIPS = {
    "audio": (
        "Any AUDIO value (from AVSync Load Audio, core Load Audio, a video loader...). Only the first item of a "
        "batch is used; it is mixed to mono and resampled to 16 kHz."
    ),
    "audio_encoder": "From 'Load ImageBind Audio Encoder'.",
    "frames": "Frames per clip, the first being the given image. The released models were trained with 12.",
    "fps": (
        "Frames per second. frames/fps must be 2 s, the audio window the encoder hears per clip: 12 frames -> 6 "
        "fps, 16 -> 8, 24 -> 12. Other values are refused, because sound and frames would drift apart."
    ),
    "max_windows": (
        "How many consecutive clips to prepare for longer audio (each starts at the previous clip's last "
        "frame); 0 = as many as the audio holds."
    ),
    "window_starts": (
        "every frame: also encode the 2 s starting at every frame, which context windows with overlap need (the "
        "AVSync Sampler's long_sound = context, or Context Windows (Manual)); frames-1 times the encoder work. "
        "clip starts: only the chained clips' windows (enough for chaining and for context overlap 0)."
    ),
}
WINDOW_STARTS = ("every frame", "clip starts")


class AVSyncLoadAudio:
    """Like core LoadAudio, plus the audio track of video files and a start/duration window."""

    @classmethod
    def INPUT_TYPES(cls):
        files = folder_paths.filter_files_content_types(
            os.listdir(folder_paths.get_input_directory()), ["audio", "video"]
        )
        tips = LOAD_AUDIO_TOOLTIPS
        return {
            "required": {
                "audio": (sorted(files), {"audio_upload": True, "tooltip": tips["audio"]}),
                "start_seconds": (
                    "FLOAT",
                    {"default": 0.0, "min": 0.0, "max": 1e6, "step": 0.01, "tooltip": tips["start_seconds"]},
                ),
                "duration_seconds": (
                    "FLOAT",
                    {"default": 0.0, "min": 0.0, "max": 1e6, "step": 0.01, "tooltip": tips["duration_seconds"]},
                ),
            }
        }

    RETURN_TYPES = ("AUDIO", "FLOAT")
    RETURN_NAMES = ("audio", "duration_seconds")
    OUTPUT_TOOLTIPS = (
        "The audio at the file's own sample rate and channels.",
        "Length of the loaded audio in seconds.",
    )
    FUNCTION = "load"
    CATEGORY = f"{CATEGORY}/audio"
    DESCRIPTION = "Loads an audio file or the sound track of a video, optionally only a window of it."

    def load(self, audio: str, start_seconds: float, duration_seconds: float):
        path = _checked_audio(audio, start_seconds, duration_seconds)
        try:
            wave = decode_audio(
                path, start=start_seconds, duration=duration_seconds or None, sample_rate=None, mono=False
            )
        except AudioError as err:
            raise _about_input(audio, err) from None
        return (to_comfy_audio(wave), wave.duration)

    @classmethod
    def IS_CHANGED(cls, audio: str, start_seconds: float, duration_seconds: float):
        """Size and modification time: a cheap key that changes when the file is replaced (hashing would read a
        4 GB video on every queue)."""
        try:
            stat = os.stat(folder_paths.get_annotated_filepath(audio))
        except (OSError, ValueError):  # newer ComfyUI raises ValueError for paths outside the input folder
            return float("nan")  # never equal to itself: ComfyUI runs the node, whose error says what is wrong
        return f"{stat.st_size}:{stat.st_mtime_ns}:{start_seconds}:{duration_seconds}"

    @classmethod
    def VALIDATE_INPUTS(cls, audio: str, start_seconds: float, duration_seconds: float):
        """Everything a load could refuse, from the file's header: a refused prompt loads no model."""
        return verdict(
            lambda: check_widgets(cls, start_seconds=start_seconds, duration_seconds=duration_seconds),
            lambda: _checked_audio(audio, start_seconds, duration_seconds),
        )


def _audio_file(audio: str) -> Path:
    """The file behind the widget value, refused when it is missing, not a sound, or outside its folder."""
    if not isinstance(audio, str):
        raise InvalidInputError(f"audio must be the name of a file in the input folder, got {audio!r}.")
    name, folder = folder_paths.annotated_filepath(audio)
    folder = folder or folder_paths.get_input_directory()
    path = file_inside("audio", name, folder)
    if not path.is_file():
        raise AudioError(f"audio: file not found in the input folder: {audio}")
    if not folder_paths.filter_files_content_types([name], ["audio", "video"]):
        raise AudioError(
            f"audio: '{audio}' is not an audio or video file; pick or upload a sound (wav, mp3, flac, ogg...) or a "
            "video."
        )
    return path


def _checked_audio(audio: str, start_seconds: float, duration_seconds: float) -> Path:
    path = _audio_file(audio)
    try:
        check_decode_request(path, start_seconds, duration_seconds or None)
    except AVSyncError as err:
        raise _about_input(audio, err) from None
    return path


def _about_input(audio: str, err: AVSyncError) -> AudioError:
    return AudioError(
        f"The audio input '{audio}' cannot be used: {err} Pick an audio file or a video that has a sound track, with "
        "start_seconds inside it."
    )


class AVSyncImageBindLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "encoder_name": (model_paths.imagebind_choices(), {"tooltip": ENCODER_LOADER_TOOLTIPS["encoder_name"]}),
            }
        }

    RETURN_TYPES = (AUDIO_ENCODER,)
    RETURN_NAMES = ("audio_encoder",)
    OUTPUT_TOOLTIPS = ("The ImageBind audio encoder (audio branch only, about 86 M parameters).",)
    FUNCTION = "load"
    CATEGORY = f"{CATEGORY}/loaders"
    DESCRIPTION = "Loads ImageBind's audio encoder without reading the other modalities of the checkpoint."

    @classmethod
    def VALIDATE_INPUTS(cls, encoder_name: str):
        return model_paths.check_choice(
            "encoder_name", model_paths.IMAGEBIND_FOLDER, encoder_name, model_paths.imagebind_choices()
        )

    def load(self, encoder_name: str):
        """Built from comfy.ops.manual_cast layers, which cast per call, so ComfyUI can stream the encoder in
        low-VRAM mode; kept in float32, the precision the released tokens were computed in."""
        path = model_paths.resolve(model_paths.IMAGEBIND_FOLDER, encoder_name)
        return (ImageBindAudioEncoder.from_file(path, operations=comfy.ops.manual_cast),)


class AVSyncEncodeAudio:
    @classmethod
    def INPUT_TYPES(cls):
        tips = ENCODE_AUDIO_TOOLTIPS
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": tips["audio"]}),
                "audio_encoder": (AUDIO_ENCODER, {"tooltip": tips["audio_encoder"]}),
                "frames": ("INT", {"default": 12, "min": 2, "max": MAX_FRAMES, "tooltip": tips["frames"]}),
                "fps": ("FLOAT", {"default": 6.0, "min": 0.5, "max": 120.0, "step": 0.5, "tooltip": tips["fps"]}),
                "max_windows": ("INT", {"default": 1, "min": 0, "max": 10000, "tooltip": tips["max_windows"]}),
            },
            "optional": {
                "window_starts": (list(WINDOW_STARTS), {"default": WINDOW_STARTS[0], "tooltip": tips["window_starts"]})
            },
        }

    RETURN_TYPES = (AUDIO_CONDITION, "INT", "IMAGE")
    RETURN_NAMES = ("avsync_audio", "total_frames", "preview")
    OUTPUT_TOOLTIPS = (
        "ImageBind tokens per clip, the per-frame segment masks and the null audio for guidance.",
        "Frames of the whole animation: 1 + windows x (frames - 1).",
        "The picture shown in the node: the waveform with each frame's audio window, the clips and frame times.",
    )
    FUNCTION = "encode"
    CATEGORY = f"{CATEGORY}/audio"
    DESCRIPTION = (
        "Turns audio into what AVSyncD listens to: 229 ImageBind tokens per 2 s clip, one segment per frame. "
        "Shows (and outputs) a picture of which sound each frame hears."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, frames: int, fps: float):
        return verdict(lambda: check_widgets(cls, frames=frames, fps=fps), lambda: check_clip_duration(frames, fps))

    def encode(
        self,
        audio: dict,
        audio_encoder: ImageBindAudioEncoder,
        frames: int,
        fps: float,
        max_windows: int,
        window_starts: str = WINDOW_STARTS[0],
    ):
        wave = from_comfy_audio(audio)
        pbar = comfy.utils.ProgressBar(1)

        def progress(done: int, total: int) -> None:
            comfy.model_management.throw_exception_if_processing_interrupted()
            pbar.update_absolute(done, total)

        # ComfyUI moves the encoder (freeing others if needed, streaming its layers when VRAM is short) and
        # offloads it when the memory is wanted later.
        comfy.model_management.load_models_gpu([owner(audio_encoder)])
        with torch.inference_mode():
            condition = encode_audio_condition(
                audio_encoder,
                wave,
                frames,
                fps,
                max_windows or None,
                progress,
                every_start=window_starts == WINDOW_STARTS[0],
            )
        condition = condition.to("cpu")
        preview = frame_preview_image(wave, condition)
        return {"ui": save_preview(preview), "result": (condition, condition.total_frames, preview)}
