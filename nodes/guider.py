"""The AVSync guider: ComfyUI's CFGGuider with AVSyncD's text/audio guidance and the pinned first frame.

Any ComfyUI sampler, scheduler and noise source drives it (SamplerCustomAdvanced, or the AVSync Sampler node).
Each guidance branch is a cond list handed to ``calc_cond_batch``, so ComfyUI batches branches as it sees fit;
the branch index of every chunk (``cond_or_uncond``) tells the injected model which audio that chunk hears.
A context handler on the model (core's Context Windows (Manual), or the AVSync Sampler's long_sound = context) makes
the guider sample whole sounds in AVSyncD's anchored windows (``context_windows.py``).
"""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.model_patcher
import comfy.samplers
import torch

from ..avsync_core.audio.condition import AudioCondition
from ..avsync_core.errors import AVSyncError, InvalidInputError
from ..avsync_core.sampling.guidance import cfg_terms, guidance_branches
from ..avsync_core.sampling.run import ContextRun, SamplingRun, check_fits_model
from ..avsync_core.sd15.family import check_text_width
from .context_windows import anchored_handler, check_handler, check_no_evolved_windows, context_handler
from .patching import RUN_KEY, avsync_motion, is_avsync_model

# What the user connects, named in the messages of checks on the model's inputs.
AUDIO_INPUT = "The avsync_audio input"
LATENT_INPUT = "The first frame (the image + vae or first_latent input, or the latent from 'AVSync Clip Latent')"
log = logging.getLogger(__name__)


class AVSyncCFGGuider(comfy.samplers.CFGGuider):
    """The guider object the 'AVSync Guider' node outputs and the 'AVSync Sampler' node drives."""

    def __init__(
        self,
        model: comfy.model_patcher.ModelPatcher,
        audio: AudioCondition,
        audio_scale: float = 4.0,
        text_scale: float = 1.0,
        window: int = 0,
    ) -> None:
        if not is_avsync_model(model):
            raise AVSyncError(
                "The AVSync guider needs a MODEL with AVSyncD applied (use the 'Apply AVSyncD' node first)."
            )
        audio.check_window(window)
        check_fits_model(audio.tokens.shape[-1], avsync_motion(model).config.audio_dim, audio_input=AUDIO_INPUT)
        super().__init__(model)
        self.branches = guidance_branches(audio_scale, text_scale)
        self.audio_scale, self.text_scale = audio_scale, text_scale
        self.audio = audio
        self.window = window
        self.run: SamplingRun | ContextRun | None = None
        self.context_handler = None  # the anchored handler of a context-window run, None for one clip
        self.context_schedules: list[list[list[int]]] = []  # the windows of the last run's steps (none for one clip)

    def set_conds(self, positive, negative=None) -> None:
        if any(not b.text for b in self.branches) and not negative:
            raise InvalidInputError("Text guidance above 1 needs a negative conditioning (e.g. an empty prompt).")
        conds = {"positive": positive}
        if negative:
            conds["negative"] = negative
        context_dim = self.model_patcher.model.model_config.unet_config.get("context_dim")
        for name, cond in conds.items():
            for encoding, _ in cond:
                check_text_width(encoding.shape[-1], context_dim, f"The {name} conditioning")
        self.inner_set_conds(conds)

    def sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
        if sigmas.shape[-1] < 2:  # ComfyUI would hand the empty clip back as if it were the animation
            raise InvalidInputError(
                f"SIGMAS holds {sigmas.shape[-1]} noise level(s); sampling needs at least 2 (a start and an end). "
                "Raise the scheduler's steps or denoise."
            )
        return super().sample(noise, latent_image, sampler, sigmas, *args, **kwargs)

    def inner_sample(
        self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed, **host_kwargs
    ):
        """``host_kwargs``: what newer ComfyUI passes besides (``latent_shapes``), handed on unchanged."""
        frames, total = self.audio.frames, self.audio.total_frames
        handler = context_handler(self.model_options)
        if handler is not None:
            check_handler(handler, frames)
        context = handler is not None and total > frames and latent_image.shape[0] % total == 0
        if not context and latent_image.shape[0] % frames:
            raise InvalidInputError(
                f"The latent holds {latent_image.shape[0]} frames, which is not a whole number of {frames}-frame clips "
                f"(the audio was encoded for {frames} frames) nor, with context windows on the model, of the sound's "
                f"{total} frames. Make the latent with the 'AVSync Clip Latent' node from the same audio condition "
                "(whole_sound on for context windows)."
            )
        if handler is not None and not context:
            log.info("AVSyncD: the latent is one clip per video, so the context windows are that clip: one window.")
        unet_channels = self.model_patcher.get_model_object("diffusion_model").in_channels
        check_fits_model(
            self.audio.tokens.shape[-1],
            avsync_motion(self.model_patcher).config.audio_dim,
            latent_image.shape[1],
            unet_channels,
            audio_input=AUDIO_INPUT,
            latent_input=LATENT_INPUT,
        )
        first = latent_image.view(-1, total if context else frames, *latent_image.shape[1:])[:, 0]
        first = self.inner_model.process_latent_in(first.to(device))
        branch_audio = [b.audio for b in self.branches]
        self.context_schedules = []
        if context:
            self.run = ContextRun(self.audio, first, tuple(branch_audio))
            self.context_handler = anchored_handler(handler, total, frames)
            self.context_schedules = self.context_handler.schedules
        else:
            self.run = SamplingRun.for_window(self.audio, self.window, first, branch_audio)
        try:
            samples = super().inner_sample(
                noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed, **host_kwargs
            )
            return self.run.pin_result(samples, latent_image)
        finally:
            self.run = None  # its first-frame latents (maybe on the GPU) are not kept alive by the guider
            self.context_handler = None

    def predict_noise(self, x, timestep, model_options=None, seed=None):
        comfy.model_management.throw_exception_if_processing_interrupted()
        x = self._clean_first_frame(x, timestep)
        conds = [self.conds["positive"] if b.text else self.conds["negative"] for b in self.branches]
        options = comfy.model_patcher.create_model_options_clone(model_options or {})
        options.setdefault("transformer_options", {})[RUN_KEY] = self.run
        if self.context_handler is not None:
            options["context_handler"] = self.context_handler
        else:  # one clip: the host must not cut it (or several videos' clips) into windows
            options.pop("context_handler", None)
        check_no_evolved_windows(options["transformer_options"], x.shape[0], self.audio.frames)
        out = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, options)
        # Every guidance mode is one ComfyUI CFG step (see cfg_terms), with the hooks ComfyUI's sampling_function
        # calls: pre-CFG functions, then cfg_function (sampler_cfg_function, post-CFG functions). So CFG-modifying
        # nodes and the CFG++ samplers (which read the unconditional prediction in a post-CFG hook) work in all.
        terms = cfg_terms([self.run.pin_denoised(o) for o in out], self.audio_scale, self.text_scale)
        cond, uncond = conds[-1], conds[0]
        preds = [terms.cond, terms.uncond]
        for fn in options.get("sampler_pre_cfg_function", []):
            args = {"conds": [cond, uncond], "conds_out": preds, "cond_scale": terms.scale, "timestep": timestep}
            preds = fn({**args, "input": x, "sigma": timestep, "model": self.inner_model, "model_options": options})
        denoised = comfy.samplers.cfg_function(
            self.inner_model, preds[0], preds[1], terms.scale, x, timestep, options, cond=cond, uncond=uncond
        )
        return self.run.pin_denoised(denoised)

    def _clean_first_frame(self, x, sigma):
        """The host's input scaling at each clip's sigma, handed to the run's first-frame rule."""
        run = self.run
        sigma = sigma.reshape(-1).expand(x.shape[0]).view(run.videos, run.frames)[:, 0]
        return run.pin_input(
            x, self.inner_model.model_sampling.calculate_input(sigma, torch.ones_like(run.first_latents))
        )
