"""The paper's sampling inside ComfyUI: the official PNDM and DDIM as a ComfyUI SAMPLER with their SIGMAS.

The step math is avsync_core's (``sampling/official_schedule.py``); this module runs it as a ComfyUI KSAMPLER in
ComfyUI's sigma space. The SIGMAS are those of the official timesteps, so ComfyUI's sigma -> timestep map
(nearest log-sigma) hands the UNet the official integer timestep.
"""

from __future__ import annotations

import comfy.samplers
import torch

from ..avsync_core.errors import InvalidInputError
from ..avsync_core.sampling import official_schedule as official
from .types import CATEGORY

# The AVSync Sampler's extra sampler_name entries: the official samplers on the official schedule.
OFFICIAL_SAMPLER_NAMES = {"official_pndm": "pndm", "official_ddim": "ddim"}
# ComfyUI's sigma -> timestep map picks the nearest of the model's sigmas; neighbouring timesteps are at least
# 0.5 % apart, so a sigma further than this from the model's own value is not on the model's schedule.
SCHEDULE_REL_TOLERANCE = 1e-4

TOOLTIPS = {
    "sampler": (
        "pndm: the paper's sampler (diffusers' PNDM with skip_prk_steps, including the official warm-up). "
        "ddim: the official DDIM (eta 0)."
    ),
    "steps": "Denoising steps (the paper used 50 PNDM steps). PNDM calls the model once more than this.",
}


class OfficialSampler(comfy.samplers.KSAMPLER):
    """A KSAMPLER that runs the official PNDM or DDIM over the SIGMAS of ``official_sigmas(steps)``."""

    def __init__(self, method: str, steps: int) -> None:
        self.method = official.check_method(method)
        self.steps = official.check_steps(steps)
        super().__init__(self._sample)

    def max_denoise(self, model_wrap, sigmas) -> bool:
        """The official pipelines start from unit-variance noise at their first timestep, whatever its sigma
        (ComfyUI does so only at the schedule's top), so the noise is always scaled to a pure-noise sample."""
        return True

    def _sample(self, model, x, sigmas, extra_args=None, callback=None, disable=None):
        official.check_sigmas(sigmas, self.steps, self.method)
        _check_model_schedule(model.inner_model.inner_model.model_sampling, sigmas)
        extra_args = extra_args or {}
        s_in = x.new_ones([x.shape[0]])

        def denoise(sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return model(sample, sigma * s_in, **extra_args)

        def report(i: int, sigma: torch.Tensor, sample: torch.Tensor, denoised: torch.Tensor) -> None:
            callback({"x": sample, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})

        return official.sample_official(
            self.method, denoise, x, sigmas, callback=report if callback is not None else None
        )


def _check_model_schedule(model_sampling, sigmas: torch.Tensor) -> None:
    """Each sigma must be one of the model's own (SD1.5's) sigmas, so the UNet gets the official timestep."""
    table = model_sampling.sigmas.to(sigmas.device)
    t = model_sampling.timestep(sigmas)
    off = ((table[t] - sigmas).abs() / sigmas).max()
    if not off <= SCHEDULE_REL_TOLERANCE:
        raise InvalidInputError(
            "The official schedule fits SD1.5's noise schedule (1000 scaled-linear steps, 0.00085 to 0.012), but "
            f"this model's sigmas differ by up to {float(off):.2%} (a ModelSampling node or a non-SD1.5 model?). "
            "Use the model without ModelSampling nodes, or a ComfyUI sampler and scheduler."
        )


def official_sampler_and_sigmas(method: str, steps: int) -> tuple[OfficialSampler, torch.Tensor]:
    return OfficialSampler(method, steps), official.official_sigmas(steps)


def check_official_denoise(sampler_name: str, denoise: float) -> None:
    if sampler_name in OFFICIAL_SAMPLER_NAMES and denoise < 1.0:
        raise InvalidInputError(
            f"{sampler_name} runs the official schedule from pure noise, so denoise must be 1 (got {denoise}). "
            "For partial denoising pick a ComfyUI sampler."
        )


def sampler_and_sigmas(model, sampler_name: str, scheduler: str, steps: int, denoise: float):
    """The SAMPLER and SIGMAS of the AVSync Sampler's choices: an official sampler, or any ComfyUI one."""
    if steps < 1:
        raise InvalidInputError(f"steps must be 1 or more, got {steps}.")
    check_official_denoise(sampler_name, denoise)
    if sampler_name in OFFICIAL_SAMPLER_NAMES:
        return official_sampler_and_sigmas(OFFICIAL_SAMPLER_NAMES[sampler_name], steps)
    sigmas = comfy.samplers.KSampler(
        model, steps, model.load_device, sampler_name, scheduler, denoise, model.model_options
    ).sigmas
    if len(sigmas) < 2:
        raise InvalidInputError(
            f"The {scheduler} scheduler gives {len(sigmas)} sigma(s) for {steps} steps at denoise {denoise}; "
            "sampling needs at least 2. Raise denoise above 0 or the steps."
        )
    return comfy.samplers.sampler_object(sampler_name), sigmas


class AVSyncOfficialSchedule:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "sampler": (list(official.METHODS), {"default": "pndm", "tooltip": TOOLTIPS["sampler"]}),
                "steps": (
                    "INT",
                    {"default": 50, "min": 1, "max": official.MAX_STEPS, "tooltip": TOOLTIPS["steps"]},
                ),
            }
        }

    RETURN_TYPES = ("SAMPLER", "SIGMAS")
    OUTPUT_TOOLTIPS = (
        "The official sampler, for SamplerCustomAdvanced with the AVSync Guider.",
        "The official noise levels for these steps; connect them to the same SamplerCustomAdvanced.",
    )
    FUNCTION = "get"
    CATEGORY = f"{CATEGORY}/sampling"
    DESCRIPTION = (
        "The paper's exact sampling (PNDM, 50 steps) or the official DDIM, with SD1.5's official schedule, for "
        "SamplerCustomAdvanced."
    )

    def get(self, sampler: str, steps: int):
        return official_sampler_and_sigmas(sampler, steps)
