"""The paper's samplers without diffusers: PNDM (``skip_prk_steps``) and DDIM (eta 0) on SD1.5's scheduler config,
written in sigma space so that a host's sampler loop (ComfyUI's) runs them step for step.

SD1.5's config: 1000 training steps, ``scaled_linear`` betas 0.00085-0.012, ``leading`` timestep spacing with
``steps_offset`` 1, ``set_alpha_to_one`` False. ``steps`` inference steps visit the timesteps ``k * (1000 // steps)
+ 1`` (k = steps-1 ... 0); the last step goes to ``alphas_cumprod[0]``, the level of timestep 0. In sigma space
(``sigma(t) = sqrt((1 - abar_t) / abar_t)``, sample ``x = x_ddpm * sqrt(1 + sigma^2)``) a DDIM step with eta 0 is
``x + (sigma_next - sigma) * eps``, and a PNDM step is the same with PLMS's multistep ``eps``.

The official loop writes each PNDM step back into its latents in place, and PNDM keeps a reference to the first
call's sample for its warm-up (second) call, so that call restarts from the already-updated latents. The paper's
results were sampled that way, so it is the default here (``official_pndm_warmup``); see ``loop.py``.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import InvalidInputError

Tensor = torch.Tensor

METHODS = ("pndm", "ddim")
TRAIN_TIMESTEPS = 1000
MAX_STEPS = TRAIN_TIMESTEPS - 1  # 1000 steps would start at timestep 1000, beyond the schedule's 0..999
BETA_START, BETA_END = 0.00085, 0.012
STEPS_OFFSET = 1

Denoiser = Callable[[Tensor, Tensor], Tensor]  # (x, sigma) -> the denoised estimate, as a k-diffusion model
StepCallback = Callable[[int, Tensor, Tensor, Tensor], None]  # (step, sigma, x after the step, denoised)


def alphas_cumprod() -> Tensor:
    """SD1.5's cumulative alphas in float32, computed as diffusers computes them (the values its steps use)."""
    betas = torch.linspace(BETA_START**0.5, BETA_END**0.5, TRAIN_TIMESTEPS, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def check_steps(steps: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        raise InvalidInputError(
            f"steps must be a whole number from 1 to {MAX_STEPS} for the official schedule, got {steps!r} "
            "(the paper uses 50)."
        )
    return steps


def check_method(method: str) -> str:
    if method not in METHODS:
        raise InvalidInputError(f"Unknown official sampler {method!r}; choose one of {', '.join(METHODS)}.")
    return method


def official_timesteps(steps: int) -> list[int]:
    """The timesteps of ``steps`` inference steps, first to last (both samplers; leading spacing, offset 1)."""
    ratio = TRAIN_TIMESTEPS // check_steps(steps)
    return [k * ratio + STEPS_OFFSET for k in reversed(range(steps))]


def unet_timesteps(method: str, steps: int) -> list[int]:
    """The timesteps the official loop calls the UNet at: DDIM once per step; PNDM once more, at the second
    timestep (its warm-up), so ``steps + 1`` calls for 2 steps or more."""
    timesteps = official_timesteps(steps)
    if check_method(method) == "pndm" and steps > 1:
        return timesteps[:2] + timesteps[1:]
    return timesteps


def official_sigmas(steps: int) -> Tensor:
    """``steps + 1`` float32 sigmas: one per official timestep, then the final level ``alphas_cumprod[0]``."""
    abar = alphas_cumprod().double()[official_timesteps(steps) + [0]]
    return ((1 - abar) / abar).sqrt().float()


def check_sigmas(sigmas: Tensor, steps: int, method: str) -> None:
    """The SIGMAS a sampler built for ``steps`` steps can run: ``steps + 1`` strictly decreasing positive values."""
    values = [float(s) for s in sigmas.reshape(-1)]
    name = f"The official {method.upper()} sampler"
    if len(values) != steps + 1:
        raise InvalidInputError(
            f"{name} was set up for {steps} steps and needs {steps + 1} sigmas, but SIGMAS holds {len(values)}. "
            "Connect the SIGMAS output of the same 'AVSync Official Schedule' node (or set its steps to "
            f"{max(len(values) - 1, 1)})."
        )
    bad = next((i for i in range(steps) if not values[i] > values[i + 1]), None)
    if bad is not None:
        raise InvalidInputError(
            f"SIGMAS must decrease step by step, but sigma {bad} is {values[bad]:.6g} and sigma {bad + 1} is "
            f"{values[bad + 1]:.6g}. Connect the SIGMAS output of 'AVSync Official Schedule'."
        )
    if not values[-1] > 0:
        raise InvalidInputError(
            f"{name} ends at the level of timestep 0 (sigma {float(official_sigmas(1)[-1]):.6g}), not at "
            f"{values[-1]:.6g}. Connect the SIGMAS output of 'AVSync Official Schedule'."
        )


def sample_official(
    method: str,
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    callback: StepCallback | None = None,
    official_pndm_warmup: bool = True,
) -> Tensor:
    """Run the official sampler from ``x`` (sigma-space sample at ``sigmas[0]``) through ``sigmas``.

    Returns the official pipeline's final latent, the one it hands to the VAE: the sample at the last level,
    in DDPM scale (``x / sqrt(1 + sigma_last^2)``), not a further denoised estimate.
    """
    check_method(method)
    n = len(sigmas) - 1
    if n < 1:
        raise InvalidInputError(f"The official {method.upper()} sampler needs at least 2 sigmas, got {n + 1}.")
    history: list[Tensor] = []
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        eps = (x - denoised) / sigma
        if method == "ddim":
            x = _step(x, sigma, sigma_next, eps)
        elif i == 0 and n > 1:
            x = _pndm_warmup(denoise, x, sigma, sigma_next, eps, official_pndm_warmup)
            history = [eps]
        else:
            history = history[-3:] + [eps]
            x = _step(x, sigma, sigma_next, _plms_eps(history))
        if callback is not None:
            callback(i, sigma, x, denoised)
    return x / (1 + sigmas[-1] ** 2).sqrt()


def _step(x: Tensor, sigma: Tensor, sigma_next: Tensor, eps: Tensor) -> Tensor:
    """DDIM with eta 0 (and PNDM's transfer) from ``sigma`` to ``sigma_next``: an Euler step in sigma space."""
    return x + (sigma_next - sigma) * eps


def _pndm_warmup(
    denoise: Denoiser, x: Tensor, sigma: Tensor, sigma_next: Tensor, eps: Tensor, official: bool
) -> Tensor:
    """PNDM's first step: a trial step, a second evaluation there, then the step again with the mean slope.

    The official loop restarts from the trial result (the in-place quirk): that sample, read at the first level
    in DDPM scale, is ``x_trial * sqrt((1 + sigma^2) / (1 + sigma_next^2))`` in sigma space."""
    trial = _step(x, sigma, sigma_next, eps)
    eps_trial = (trial - denoise(trial, sigma_next)) / sigma_next
    start = trial * ((1 + sigma**2) / (1 + sigma_next**2)).sqrt() if official else x
    return _step(start, sigma, sigma_next, (eps + eps_trial) / 2)


def _plms_eps(history: list[Tensor]) -> Tensor:
    """PLMS's linear multistep noise estimate from up to the last four evaluations (diffusers' coefficients)."""
    e = history[::-1]  # newest first
    if len(e) == 1:
        return e[0]
    if len(e) == 2:
        return (3 * e[0] - e[1]) / 2
    if len(e) == 3:
        return (23 * e[0] - 16 * e[1] + 5 * e[2]) / 12
    return (1 / 24) * (55 * e[0] - 59 * e[1] + 37 * e[2] - 9 * e[3])
