"""diffusers schedulers with SD1.5's noise schedule, by name; the paper samples with PNDM, 50 steps."""

from __future__ import annotations

import inspect

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from ..errors import InvalidInputError

SD15_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "clip_sample": False,
    "skip_prk_steps": True,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
}

SCHEDULERS: dict[str, tuple[type, dict]] = {
    "ddim": (DDIMScheduler, {}),
    "pndm": (PNDMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_ancestral": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": (UniPCMultistepScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
}


def make_scheduler(name: str = "pndm", **overrides: object):
    """A diffusers scheduler with SD1.5's noise schedule; the paper samples with PNDM, 50 steps."""
    if name not in SCHEDULERS:
        raise InvalidInputError(f"Unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}.")
    cls, extra = SCHEDULERS[name]
    keys = set(inspect.signature(cls.__init__).parameters)
    config = {k: v for k, v in {**SD15_SCHEDULER_CONFIG, **extra, **overrides}.items() if k in keys}
    return cls(**config)
