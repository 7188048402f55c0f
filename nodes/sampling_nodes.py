"""Sampling nodes: the AVSync Sampler (all-in-one, long audio), the AVSync Guider and the clip latent for
SamplerCustomAdvanced."""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import nodes as comfy_nodes
import torch

from ..avsync_core.audio.condition import AudioCondition
from ..avsync_core.errors import InvalidInputError
from ..avsync_core.sampling.chain import ClipRequest, sample_chained_clips
from ..avsync_core.sampling.context import DEFAULT_OVERLAP, FUSE_METHODS, LONG_SOUND_MODES
from ..avsync_core.sampling.run import clip_latents
from .compat import rgb
from .context_windows import NODE as CONTEXT_NODE
from .context_windows import context_handler, with_context_windows
from .guider import AVSyncCFGGuider
from .official_sampling import OFFICIAL_SAMPLER_NAMES, check_official_denoise, sampler_and_sigmas
from .previews import context_preview_image, save_preview
from .types import AUDIO_CONDITION, CATEGORY
from .validation import check_widgets, verdict

TOOLTIPS = {
    "model": "An SD1.5 model with AVSyncD applied ('Apply AVSyncD').",
    "positive": "What the video shows, e.g. the sound's class ('a lion roaring').",
    "negative": "Used only when text_guidance is above 1 (usually an empty prompt).",
    "avsync_audio": "From 'AVSync Encode Audio'; sets frames per clip and the number of clips.",
    "seed": "Noise seed; clip k of long audio uses seed + k (wrapping around past the largest seed).",
    "steps": "Denoising steps per clip (the paper used 50 PNDM steps).",
    "audio_guidance": (
        "How strongly the motion follows the audio (eta). 1 or less = off. The paper's best balance is 4; above 8 "
        "synchronisation still rises but quality drops."
    ),
    "text_guidance": (
        "Text guidance. 1 = off (the paper's setting: audio guidance only, the negative prompt is not used); above "
        "1 adds dual text+audio guidance against the negative prompt."
    ),
    "sampler_name": (
        "official_pndm: the paper's sampling (its PNDM on its own schedule; the paper used 50 steps). "
        "official_ddim: the official DDIM. Or any ComfyUI sampler, with the scheduler below."
    ),
    "scheduler": "Any ComfyUI noise schedule. Not used by official_pndm / official_ddim, which bring their own.",
    "denoise": "Fraction of the schedule to run, as in KSampler (official_pndm / official_ddim need 1).",
    "image": "The first frame (one per video). Encoded with the VAE like core VAE Encode does; needs the vae input.",
    "vae": "The VAE that encodes the image (usually the checkpoint's).",
    "first_latent": "Instead of image + VAE: the first frame as a latent, one per video.",
    "window": (
        "Which clip of long audio this guider renders (0 = the first). Not used for a whole-sound latent sampled "
        "in context windows (Context Windows (Manual) on the model)."
    ),
    "guider_negative": "Needed only when text_guidance is above 1 (usually an empty prompt).",
    "latent_model": "The model the latent is for (gives its latent channels).",
    "latent_audio": "Gives the frames per clip.",
    "long_sound": (
        "Sound longer than one clip. chain: clip after clip, each starting at the previous clip's last frame (least "
        "memory and compute; later clips can drift from the picture). context: all frames denoised together in "
        "overlapping windows, each holding the picture as frame 0 (no drift, smooth borders; costs "
        "(frames-1)/(frames-1-overlap) times the UNet work). A Context Windows (Manual) node on the model is used "
        "instead of these settings."
    ),
    "overlap": "context: new frames neighbouring windows share, 0 .. frames-2 (10 for 12-frame clips).",
    "fuse_method": "context: how overlapping windows are weighted (pyramid: window middles count most).",
    "whole_sound": (
        "Off: one clip. On: every frame of the sound (1 + clips x (frames-1)), for context windows (Context Windows "
        "(Manual) on the model)."
    ),
}
CONTEXT_INPUTS = {
    "long_sound": (list(LONG_SOUND_MODES), {"default": "chain", "tooltip": TOOLTIPS["long_sound"]}),
    "overlap": ("INT", {"default": DEFAULT_OVERLAP, "min": 0, "max": 238, "tooltip": TOOLTIPS["overlap"]}),
    "fuse_method": (list(FUSE_METHODS), {"default": "pyramid", "tooltip": TOOLTIPS["fuse_method"]}),
}
log = logging.getLogger(__name__)
GUIDANCE_INPUTS = {
    "audio_guidance": (
        "FLOAT",
        {"default": 4.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip": TOOLTIPS["audio_guidance"]},
    ),
    "text_guidance": (
        "FLOAT",
        {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip": TOOLTIPS["text_guidance"]},
    ),
}
FIRST_FRAME_INPUTS = {
    "image": ("IMAGE", {"tooltip": TOOLTIPS["image"]}),
    "vae": ("VAE", {"tooltip": TOOLTIPS["vae"]}),
    "first_latent": ("LATENT", {"tooltip": TOOLTIPS["first_latent"]}),
}


def first_frame_latents(model, image=None, vae=None, first_latent=None) -> torch.Tensor:
    """The first-frame latents, one row per video, from an IMAGE + VAE or a LATENT."""
    if first_latent is not None:
        samples = first_latent["samples"]
    elif image is not None and vae is not None:
        samples = comfy_nodes.VAEEncode().encode(vae, rgb(image))[0]["samples"]
    else:
        raise InvalidInputError("Connect the first frame: an image together with a vae, or a first_latent.")
    if samples.dim() != 4:
        raise InvalidInputError(
            f"first_latent must be an image latent (batch, channels, height, width), got {tuple(samples.shape)}."
        )
    return comfy.sample.fix_empty_latent_channels(model, samples)


class AVSyncSampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": TOOLTIPS["model"]}),
                "positive": ("CONDITIONING", {"tooltip": TOOLTIPS["positive"]}),
                "negative": ("CONDITIONING", {"tooltip": TOOLTIPS["negative"]}),
                "avsync_audio": (AUDIO_CONDITION, {"tooltip": TOOLTIPS["avsync_audio"]}),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "control_after_generate": True,
                        "tooltip": TOOLTIPS["seed"],
                    },
                ),
                "steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": TOOLTIPS["steps"]}),
                **GUIDANCE_INPUTS,
                "sampler_name": (
                    [*OFFICIAL_SAMPLER_NAMES, *comfy.samplers.KSampler.SAMPLERS],
                    {"default": "official_pndm", "tooltip": TOOLTIPS["sampler_name"]},
                ),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"tooltip": TOOLTIPS["scheduler"]}),
                "denoise": (
                    "FLOAT",
                    {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": TOOLTIPS["denoise"]},
                ),
            },
            "optional": {**FIRST_FRAME_INPUTS, **CONTEXT_INPUTS},
        }

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("All frames of the animation as a batch (video-major); frame 0 is the first frame's latent.",)
    FUNCTION = "sample"
    CATEGORY = f"{CATEGORY}/sampling"
    DESCRIPTION = (
        "Animates the first frame in time with the audio. Long audio: clip after clip (each clip starts at the "
        "previous clip's last frame), or context windows anchored on the picture (long_sound, or a Context Windows "
        "(Manual) node on the model)."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, audio_guidance: float, text_guidance: float, sampler_name: str, denoise: float):
        return verdict(
            lambda: check_widgets(cls, audio_guidance=audio_guidance, text_guidance=text_guidance, denoise=denoise),
            lambda: check_official_denoise(sampler_name, denoise),
        )

    def sample(
        self,
        model,
        positive,
        negative,
        avsync_audio: AudioCondition,
        seed: int,
        steps: int,
        audio_guidance: float,
        text_guidance: float,
        sampler_name: str,
        scheduler: str,
        denoise: float,
        image=None,
        vae=None,
        first_latent=None,
        long_sound: str = "chain",
        overlap: int = DEFAULT_OVERLAP,
        fuse_method: str = "pyramid",
    ):
        first = first_frame_latents(model, image, vae, first_latent)
        frames, windows = avsync_audio.frames, avsync_audio.num_windows
        sampler, sigmas = sampler_and_sigmas(model, sampler_name, scheduler, steps, denoise)
        if context_handler(model.model_options) is not None:
            log.info("AVSync Sampler: the model carries '%s', so all frames are sampled in its windows.", CONTEXT_NODE)
        elif long_sound == "context":
            model = with_context_windows(model, frames, overlap, fuse_method)
        else:
            return self._chain(
                model,
                positive,
                negative,
                avsync_audio,
                seed,
                steps,
                audio_guidance,
                text_guidance,
                sampler,
                sigmas,
                first,
            )
        if windows == 1:
            log.info("AVSync Sampler: the sound fills one clip, so context windows sample that one clip.")
        latent = clip_latents(first, avsync_audio.total_frames)
        guider = AVSyncCFGGuider(model, avsync_audio, audio_guidance, text_guidance)
        guider.set_conds(positive, negative)
        out = guider.sample(
            comfy.sample.prepare_noise(latent, seed),
            latent,
            sampler,
            sigmas,
            callback=_progress(model, steps, 1, avsync_audio.total_frames)(0),
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
            seed=seed,
        )
        result = ({"samples": out.to(comfy.model_management.intermediate_device())},)
        preview = _context_preview(model, avsync_audio, guider.context_schedules)
        return result if preview is None else {"ui": save_preview(preview, "AVSyncContextWindows"), "result": result}

    def _chain(
        self,
        model,
        positive,
        negative,
        avsync_audio,
        seed,
        steps,
        audio_guidance,
        text_guidance,
        sampler,
        sigmas,
        first,
    ):
        """Clip after clip, each from the previous clip's last frame, hearing its own window with its own seed."""
        frames, windows = avsync_audio.frames, avsync_audio.num_windows
        progress = _progress(model, steps, windows, frames)

        def sample_clip(request: ClipRequest) -> torch.Tensor:
            latent = clip_latents(request.first_latents, frames)
            guider = AVSyncCFGGuider(model, avsync_audio, audio_guidance, text_guidance, window=request.window)
            guider.set_conds(positive, negative)
            out = guider.sample(
                comfy.sample.prepare_noise(latent, request.seed),
                latent,
                sampler,
                sigmas,
                callback=progress(request.window),
                disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
                seed=request.seed,
            ).to(comfy.model_management.intermediate_device())
            return out.view(-1, frames, *out.shape[1:])

        chained = sample_chained_clips(avsync_audio, first, sample_clip, seed)
        return ({"samples": chained.reshape(-1, *chained.shape[2:])},)


def _context_preview(model, audio: AudioCondition, schedules: list[list[list[int]]]) -> torch.Tensor | None:
    """The picture of the windows the run used (its first step's; schedules such as standard_uniform move them),
    with the handler's overlap and fuse method; None for one clip, or audio not from Encode Audio (no clips)."""
    if not schedules or not audio.windows:
        return None
    handler = context_handler(model.model_options)
    note = ""
    if len(schedules) > 1:
        note = f"first step's windows shown ({handler.context_schedule.name} moved them: {len(schedules)} schedules)"
    return context_preview_image(audio, schedules[0], handler.fuse_method.name, handler.context_overlap, note)


def _progress(model, steps: int, windows: int, frames: int):
    """One progress bar over all clips; previews show a middle frame (frame 0 is just the input image)."""
    previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)
    pbar = comfy.utils.ProgressBar(steps * windows)

    def for_window(window: int):
        def callback(step, x0, x, total_steps):
            preview = None
            if previewer:
                middle = x0.view(-1, frames, *x0.shape[1:])[:1, frames // 2]
                preview = previewer.decode_latent_to_preview_image("JPEG", middle)
            pbar.update_absolute(window * total_steps + step + 1, windows * total_steps, preview)

        return callback

    return for_window


class AVSyncGuider:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": TOOLTIPS["model"]}),
                "positive": ("CONDITIONING", {"tooltip": TOOLTIPS["positive"]}),
                "avsync_audio": (AUDIO_CONDITION, {"tooltip": TOOLTIPS["avsync_audio"]}),
                **GUIDANCE_INPUTS,
                "window": ("INT", {"default": 0, "min": 0, "max": 10000, "tooltip": TOOLTIPS["window"]}),
            },
            "optional": {
                "negative": ("CONDITIONING", {"tooltip": TOOLTIPS["guider_negative"]}),
            },
        }

    RETURN_TYPES = ("GUIDER",)
    OUTPUT_TOOLTIPS = ("A guider for SamplerCustomAdvanced; feed it the latent of 'AVSync Clip Latent'.",)
    FUNCTION = "get_guider"
    CATEGORY = f"{CATEGORY}/sampling"
    DESCRIPTION = (
        "AVSyncD's audio (and optional text) guidance for SamplerCustomAdvanced: any sampler, sigmas and noise."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, audio_guidance: float, text_guidance: float):
        return verdict(lambda: check_widgets(cls, audio_guidance=audio_guidance, text_guidance=text_guidance))

    def get_guider(
        self,
        model,
        positive,
        avsync_audio: AudioCondition,
        audio_guidance: float,
        text_guidance: float,
        window: int,
        negative=None,
    ):
        guider = AVSyncCFGGuider(model, avsync_audio, audio_guidance, text_guidance, window=window)
        guider.set_conds(positive, negative)
        return (guider,)


class AVSyncClipLatent:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": TOOLTIPS["latent_model"]}),
                "avsync_audio": (AUDIO_CONDITION, {"tooltip": TOOLTIPS["latent_audio"]}),
            },
            "optional": {
                **FIRST_FRAME_INPUTS,
                "whole_sound": ("BOOLEAN", {"default": False, "tooltip": TOOLTIPS["whole_sound"]}),
            },
        }

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = (
        "One clip (or the whole sound) per first frame: frame 0 is the first frame's latent, the rest is empty.",
    )
    FUNCTION = "make"
    CATEGORY = f"{CATEGORY}/latent"
    DESCRIPTION = "The starting latent of one clip for SamplerCustomAdvanced with the AVSync Guider."

    def make(
        self, model, avsync_audio: AudioCondition, image=None, vae=None, first_latent=None, whole_sound: bool = False
    ):
        first = first_frame_latents(model, image, vae, first_latent)
        frames = avsync_audio.total_frames if whole_sound else avsync_audio.frames
        return ({"samples": clip_latents(first, frames)},)
