"""A shorter studio day on one real ComfyUI server (benchmarks/soak.py is the long one): models switched, sounds
of speech and percussion, a LoRA, batch 2, dual guidance, a ComfyUI sampler, a run stopped mid-sampling, then every
hostile prompt of soak_session.HOSTILE, and the first prompt again.

In the default run on every host (alone: -m soak): 3 to 9 min a host on the 2-core machine, plus 1 to 2 min to
write the 5.5 GB of models unless AVSYNC_SOAK_MODELS names a folder that keeps them. Needs espeak-ng and sox
(scripts/setup_env.sh installs them); under CI=true their absence fails instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import soak_session
from soak_session import Shot

import comfy_host

pytestmark = [pytest.mark.host, pytest.mark.slow, pytest.mark.soak]

# RSS of the server may grow this much from the end of the first round of every model to the end of the day:
# the allocator keeps some freed memory, a leaked clip or model would be hundreds of MB to GB.
RSS_GROWTH_BOUND_MB = 300
FAST = {"sampler": "euler", "steps": 1}  # one step a prompt: the soak is about the session, not the sampling
SHOTS = [
    Shot(label="first", **FAST),
    Shot(ckpt="ckpt_b", motion="motion_2", lora=True, sound="word", frames=4, label="b_m2_lora_word", **FAST),
    Shot(sound="drums", steps=3, sampler="euler", interrupt=True, label="interrupt"),
    Shot(sound="claps", batch=2, text_guidance=4.0, label="batch2_dual", **FAST),
    Shot(ckpt="ckpt_b", motion="motion_2", lora=True, sound="word", frames=4, seed=2, label="b_m2_lora_again", **FAST),
    Shot(sound="drums", steps=3, sampler="euler", interrupt=True, label="interrupt_again"),
    Shot(label="first_again", **FAST),
]
WARM_PROMPTS = 4  # every model has been loaded once (and a run interrupted) by then


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    comfy_host.require_comfyui()
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        missing = "the soak test makes its sounds with espeak-ng and sox: apt-get install -y espeak-ng sox"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(missing)
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("soak")
    kept = os.environ.get("AVSYNC_SOAK_MODELS")
    models_dir = Path(kept) if kept else Path(tempfile.mkdtemp(prefix="avsync-soak-models-"))
    try:
        models = soak_session.write_models(models_dir)
        with comfy_host.ComfyServer(plugin=True, env=soak_session.SERVER_ENV) as server:
            sounds = soak_session.write_sounds(work / "sounds")
            session = soak_session.Session(server, models, sounds, comfy_host.write_image(work / "first.png"))
            soak_session.plant_hostile_files(server, sounds)
            try:
                day = soak_session.run_day(session, SHOTS, WARM_PROMPTS, hostile_after=0)
                print("\n".join(soak_session.summary(day)))  # shown with -s
                yield day
            finally:
                session.close()
    finally:
        if not kept:
            shutil.rmtree(models_dir, ignore_errors=True)


def test_every_good_prompt_runs_and_the_stopped_ones_stop(day):
    statuses = {o.label: o.status for o in day.good}
    assert statuses == {s.label: "interrupted" if s.interrupt else "success" for s in SHOTS}


def test_every_hostile_prompt_is_refused_at_queue_time_naming_the_input(day):
    not_refused = [(label, o.status) for label, _, _, o, _ in day.hostile if o.status != "refused"]
    unnamed = [(label, name, message) for label, name, named, o, message in day.hostile if not named]
    assert not not_refused and not unnamed, (not_refused, unnamed)


def test_no_model_is_read_again_without_a_change(day):
    """Each file is opened exactly as often as prompts switched to it: cached models are reused, and a refused
    prompt (whose models differ from the good prompt before it) opened none."""
    assert day.opens == {name: day.expected.get(name, 0) for name in day.opens}


def test_memory_stays_flat_after_warm_up(day):
    warm = day.good[WARM_PROMPTS - 1].rss_mb
    assert day.good[-1].rss_mb - warm < RSS_GROWTH_BOUND_MB, soak_session.summary(day)


def test_the_first_prompt_repeated_gives_identical_frames(day):
    assert day.identical_repeat and len(day.good[0].images) == 2


def test_no_file_is_left_behind_in_output_or_temp(day):
    assert day.stray_files == []
