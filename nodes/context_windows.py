"""Core's context windows (``comfy/context_windows.py``, the *Context Windows (Manual)* node) on an AVSyncD model.

The host's ``IndexListContextHandler`` cuts the latent's frames into windows, runs the model on each and fuses the
results. An AVSyncD window must be one clip: the picture's latent as frame 0 plus ``F - 1`` consecutive new frames,
hearing its own 2 s. Hosts without a retain list (0.3.64) cannot keep frame 0 in every window, so the guider hands
the host a handler of the host's own class whose schedule is the user's schedule run over the new frames, each
window then given its video's frame 0 (``avsync_core.sampling.context``), and whose weights are AVSyncD's for the
new frames. The host still runs the windows, sets ``transformer_options["context_window"]`` (which tells the
DIFFUSION_MODEL wrapper which audio the window hears), calls its callbacks and fuses. AnimateDiff-Evolved's own
context options cannot make such windows and are refused with a message saying what to use instead.
"""

from __future__ import annotations

import copy

import comfy.context_windows

from ..avsync_core.errors import AVSyncError, InvalidInputError
from ..avsync_core.sampling.context import (
    FUSE_METHODS,
    anchored_windows,
    check_fuse,
    check_overlap,
    fuse_weights,
)

NODE = "Context Windows (Manual)"
EVOLVED_STATE = "ADGS"  # where AnimateDiff-Evolved's outer sampling wrapper keeps its run state in transformer_options
STATIC = comfy.context_windows.ContextSchedules.STATIC_STANDARD
LOOPED = comfy.context_windows.ContextSchedules.UNIFORM_LOOPED


class _AnchoredHandler(comfy.context_windows.IndexListContextHandler):
    """The host's handler, finding the step from one sigma: with frames in the batch (dim 0) the sampler's
    timestep has one entry per frame, which the host's step lookup cannot compare with the schedule (it fails
    with a size mismatch). All frames share the step's sigma."""

    schedules: list[list[list[int]]]  # every different schedule the run used, in order (for the node's picture)

    def set_step(self, timestep, model_options):
        super().set_step(timestep.reshape(-1)[:1], model_options)


def context_handler(model_options: dict):
    """The context handler a node such as Context Windows (Manual) put on the model, or None."""
    return model_options.get("context_handler")


def check_handler(handler, frames: int) -> None:
    """Refuse settings the pack cannot honour, naming the node and the values that fit."""
    if not isinstance(handler, comfy.context_windows.IndexListContextHandler):
        raise AVSyncError(
            f"The model carries a context handler ({type(handler).__name__}) that AVSyncD cannot give the picture "
            f"and audio of each window. Use core's '{NODE}' node or the AVSync Sampler's long_sound = context."
        )
    fits = (
        f"With AVSyncD set context_length = {frames} (one clip: the picture + {frames - 1} new frames), dim = 0 "
        f"(frames), context_overlap 0..{frames - 2}, schedule {STATIC} (or standard_uniform with context_stride 1) "
        f"and fuse_method one of {', '.join(FUSE_METHODS)}."
    )
    problems = []
    if handler.dim != 0:
        problems.append(f"dim = {handler.dim} is not the frames of an SD1.5 latent batch")
    if handler.context_length != frames:
        problems.append(f"context_length = {handler.context_length} is not the model's clip of {frames} frames")
    try:
        check_overlap(handler.context_overlap, frames)
    except InvalidInputError:
        problems.append(f"context_overlap = {handler.context_overlap} leaves windows no new frame to advance by")
    if handler.context_schedule.name == LOOPED or handler.closed_loop:
        problems.append("a looped schedule wraps the last frames around to the first")
    if handler.fuse_method.name not in FUSE_METHODS:
        problems.append(f"fuse_method = {handler.fuse_method.name} weighs the anchor like a frame")
    if problems:
        raise AVSyncError(f"'{NODE}' cannot be used with AVSyncD as set: {'; '.join(problems)}. {fits}")


def check_no_evolved_windows(transformer_options: dict, latent_frames: int, frames: int) -> None:
    """Refuse AnimateDiff-Evolved's own context windows. Its calc_cond_batch wrapper cuts the latent into windows
    that neither hold the picture as frame 0 nor say which sound they hear, and (as of its d8d163c) fails inside
    with KeyError 'ad_params', because the AVSync guider does not run the sampling function it replaces. Its run
    state says whether it will window; when it will not (context_length not below the latent), nothing changes."""
    sliding = getattr(transformer_options.get(EVOLVED_STATE), "is_using_sliding_context", None)
    if sliding is not None and sliding():
        raise InvalidInputError(
            f"AnimateDiff-Evolved's context options (the context_options input of 'Use Evolved Sampling') would cut "
            f"this {latent_frames}-frame latent into their own windows, which neither keep the picture as frame 0 "
            "nor tell AVSyncD which 2 s of sound each window hears. Disconnect context_options from 'Use Evolved "
            f"Sampling' (a context_length of {latent_frames} or more, with use_on_equal_length off, also leaves "
            "sampling unchanged). For sound longer than one clip use the AVSync Sampler's long_sound = context, or "
            f"core's '{NODE}' node with context_length = {frames}."
        )


def anchored_handler(handler, total_frames: int, frames: int):
    """A host handler with ``handler``'s settings whose windows are AVSyncD clips of ``total_frames``-frame videos."""
    check_handler(handler, frames)
    inner = copy.copy(handler)  # the user's schedule, run over the new frames with windows of F - 1 of them
    inner.context_length = frames - 1
    overlap, fuse = handler.context_overlap, handler.fuse_method.name
    schedules = []

    def schedule(num_frames: int, outer, model_options: dict) -> list[list[int]]:
        inner._step = outer._step
        new = handler.context_schedule.func(total_frames - 1, inner, model_options)
        try:
            windows = anchored_windows(new, total_frames, frames, num_frames // total_frames)
        except InvalidInputError as err:
            raise AVSyncError(f"'{NODE}': {err}") from None
        if windows not in schedules:
            schedules.append(windows)
        return windows

    def weights(length: int, idxs: list[int], **_host_args) -> list[float]:
        video = idxs[0] // total_frames
        return fuse_weights(fuse, [i - video * total_frames for i in idxs], total_frames, overlap).tolist()

    anchored = _AnchoredHandler(
        comfy.context_windows.ContextSchedule(handler.context_schedule.name, schedule),
        comfy.context_windows.ContextFuseMethod(fuse, weights),
        context_length=frames,
        context_overlap=overlap,
        context_stride=handler.context_stride,
        closed_loop=handler.closed_loop,
        dim=0,
    )
    anchored.callbacks = handler.callbacks
    anchored.schedules = schedules
    return anchored


def with_context_windows(model, frames: int, overlap: int, fuse: str):
    """A clone of ``model`` with the handler core's Context Windows (Manual) makes for one clip's length, the
    standard_static schedule and these overlap and fuse settings (the AVSync Sampler's long_sound = context)."""
    check_overlap(overlap, frames)
    check_fuse(fuse)
    model = model.clone()
    model.model_options["context_handler"] = comfy.context_windows.IndexListContextHandler(
        context_schedule=comfy.context_windows.get_matching_context_schedule(STATIC),
        fuse_method=comfy.context_windows.get_matching_fuse_method(fuse),
        context_length=frames,
        context_overlap=overlap,
        dim=0,
    )
    comfy.context_windows.create_prepare_sampling_wrapper(model)
    return model
