"""The official PNDM and DDIM in sigma space (avsync_core/sampling/official_schedule.py) against diffusers'
schedulers with SD1.5's config, on a synthetic noise predictor, for many step counts."""

import pytest
import torch

from avsync_core import InvalidInputError
from avsync_core.sampling import make_scheduler
from avsync_core.sampling import official_schedule as official


def _eps_model(x: torch.Tensor, t: int) -> torch.Tensor:
    """A smooth, timestep-dependent stand-in for a UNet's noise prediction."""
    return torch.tanh(0.7 * x + 0.3 * x.roll(1, -1)) + 0.01 * t**0.5


def _official_loop(method: str, steps: int, noise: torch.Tensor, official_pndm_warmup: bool = True):
    """The official loop on diffusers: in-place latent updates (PNDM keeps a reference to the first sample)."""
    scheduler = make_scheduler(method)
    scheduler.set_timesteps(steps)
    latents = noise.clone()
    calls = []
    for t in scheduler.timesteps:
        calls.append(int(t))
        kwargs = {"eta": 0.0} if method == "ddim" else {}
        prev = scheduler.step(_eps_model(latents, int(t)), t, latents, **kwargs).prev_sample
        if official_pndm_warmup:
            latents.copy_(prev)
        else:
            latents = prev
    return latents, calls


def _sigma_space(method: str, steps: int, noise: torch.Tensor, official_pndm_warmup: bool = True):
    sigmas = official.official_sigmas(steps)
    timesteps = official.official_timesteps(steps) + [0]
    calls = []

    def denoise(x, sigma):
        t = timesteps[int((sigmas - sigma).abs().argmin())]
        calls.append(t)
        return x - sigma * _eps_model(x / (1 + sigma**2).sqrt(), t)

    steps_seen = []
    out = official.sample_official(
        method,
        denoise,
        noise * (1 + sigmas[0] ** 2).sqrt(),
        sigmas,
        callback=lambda i, *_: steps_seen.append(i),
        official_pndm_warmup=official_pndm_warmup,
    )
    assert steps_seen == list(range(steps))
    return out, calls


def test_alphas_cumprod_are_diffusers_values_bit_for_bit():
    assert torch.equal(official.alphas_cumprod(), make_scheduler("pndm").alphas_cumprod)
    assert torch.equal(official.alphas_cumprod(), make_scheduler("ddim").alphas_cumprod)


@pytest.mark.parametrize("steps", [1, 2, 3, 6, 7, 25, 50, 333, 501, 999])
def test_timesteps_and_unet_calls_are_diffusers(steps):
    for method in official.METHODS:
        scheduler = make_scheduler(method)
        scheduler.set_timesteps(steps)
        assert official.unet_timesteps(method, steps) == scheduler.timesteps.tolist(), (method, steps)
    assert official.official_timesteps(steps) == official.unet_timesteps("ddim", steps)


def test_sigmas_end_at_the_final_alpha_of_timestep_zero():
    sigmas = official.official_sigmas(6).double()
    abar = make_scheduler("ddim").alphas_cumprod.double()
    expected = [((1 - abar[t]) / abar[t]).sqrt() for t in [831, 665, 499, 333, 167, 1, 0]]
    assert torch.allclose(sigmas, torch.stack(expected), rtol=1e-7, atol=0)
    assert official.official_sigmas(6).dtype == torch.float32


@pytest.mark.parametrize("method", official.METHODS)
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 6, 50])
def test_sigma_space_sampler_reproduces_the_official_loop(method, steps):
    noise = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(steps))
    expected, expected_calls = _official_loop(method, steps, noise)
    actual, calls = _sigma_space(method, steps, noise)
    assert calls == expected_calls
    err = (actual - expected).abs().max() / expected.abs().max()
    assert err < 1e-5, f"{method} {steps} steps: relative error {err:.2e}"


def test_textbook_pndm_warmup_is_the_diffusers_scheduler_without_the_in_place_quirk():
    noise = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    expected, _ = _official_loop("pndm", 6, noise, official_pndm_warmup=False)
    actual, _ = _sigma_space("pndm", 6, noise, official_pndm_warmup=False)
    quirk, _ = _sigma_space("pndm", 6, noise)
    assert (actual - expected).abs().max() < 1e-5 * expected.abs().max()
    assert (quirk - actual).abs().max() > 1e-3 * expected.abs().max(), "the quirk must make a difference"


@pytest.mark.parametrize("steps", [0, -3, 1000, 2.5])
def test_step_counts_outside_the_schedule_are_refused(steps):
    with pytest.raises(InvalidInputError, match=rf"steps must be a whole number from 1 to 999.*got {steps}"):
        official.official_sigmas(steps)


def test_unknown_method_is_refused():
    with pytest.raises(InvalidInputError, match="Unknown official sampler 'plms'; choose one of pndm, ddim"):
        official.unet_timesteps("plms", 6)


@pytest.mark.parametrize(
    "sigmas,message",
    [
        (official.official_sigmas(5), "set up for 6 steps and needs 7 sigmas, but SIGMAS holds 6"),
        (torch.tensor([]), "needs 7 sigmas, but SIGMAS holds 0"),
        (official.official_sigmas(6).flip(0), r"must decrease step by step, but sigma 0 is 0\.0291"),
        (torch.tensor([5.0, 4.0, 4.0, 3.0, 2.0, 1.0, 0.5]), "sigma 1 is 4 and sigma 2 is 4"),
        (torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.0]), "ends at the level of timestep 0.*not at 0"),
    ],
)
def test_sigmas_that_do_not_fit_are_refused_with_what_fits(sigmas, message):
    with pytest.raises(InvalidInputError, match=message):
        official.check_sigmas(sigmas, 6, "pndm")
