"""Every piece of ComfyUI the pack relies on, in one inventory that is checked against the installed host.

Motion-module packs break when ComfyUI's internals move, so the pack does not assume: ``HOST_API`` lists each
symbol the nodes use (a test keeps the list complete by reading the node modules), with the parameters the pack
passes, and ``host_problem`` checks them by feature detection before any node is registered. A host that lacks
a piece gets one clear log line and no half-working nodes. Where ComfyUI versions differ in a way the pack
meets, the bridge is here too, chosen by what the host offers, never by its version string.

Tested with ComfyUI 0.3.64; the newest sources read (0.38.1) keep every form listed here, except that
``CFGGuider.inner_sample`` takes an extra ``latent_shapes`` keyword (the guider passes extra keywords on).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

TESTED = "0.3.64"
READ_UP_TO = "0.38.1"


@dataclass(frozen=True)
class Requirement:
    """A symbol at ``path`` (module path, then attributes); ``params`` must be among its parameters. With
    ``leading`` they must be its first parameters in this order, and any further ones must be optional, since
    the pack passes exactly these positionally (a subclass override must accept what the host passes too)."""

    path: str
    use: str
    params: tuple[str, ...] = ()
    leading: bool = False
    source_mentions: tuple[str, ...] = ()  # names the function's source must contain (patch hooks it calls)


HOST_API: tuple[Requirement, ...] = (
    # The model patcher: injection without monkeypatching (nodes/patching.py).
    Requirement(
        "comfy.model_patcher.ModelPatcher", "owns each model the pack loads", ("model", "load_device", "offload_device")
    ),
    Requirement("comfy.model_patcher.ModelPatcher.clone", "apply AVSyncD to a copy", ("self",), leading=True),
    Requirement("comfy.model_patcher.ModelPatcher.add_object_patch", "shadow convs and norms", ("name", "obj")),
    Requirement("comfy.model_patcher.ModelPatcher.get_model_object", "find the modules to shadow", ("name",)),
    Requirement(
        "comfy.model_patcher.ModelPatcher.set_model_patch", "audio attention (middle_patch)", ("patch", "name")
    ),
    Requirement("comfy.model_patcher.ModelPatcher.set_model_attn2_output_patch", "temporal attention", ("patch",)),
    Requirement(
        "comfy.model_patcher.ModelPatcher.add_wrapper_with_key",
        "frame 0 and audio per chunk",
        ("wrapper_type", "key", "wrapper"),
    ),
    Requirement("comfy.model_patcher.ModelPatcher.set_additional_models", "count the motion module", ("key", "models")),
    Requirement("comfy.model_patcher.ModelPatcher.get_additional_models_with_key", "is AVSyncD applied", ("key",)),
    Requirement("comfy.model_patcher.create_model_options_clone", "guider model options", ("orig_model_options",)),
    Requirement("comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL", "the wrapper kind"),
    Requirement("comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel", "SD1.5 UNet check"),
    Requirement(
        "comfy.ldm.modules.attention.BasicTransformerBlock.forward",
        "calls the transformer patches",
        source_mentions=("attn1_patch", "middle_patch", "attn2_output_patch"),
    ),
    # Sampling (nodes/guider.py, nodes/sampling_nodes.py).
    Requirement("comfy.samplers.CFGGuider", "base of the AVSync guider", ("model_patcher",)),
    Requirement("comfy.samplers.CFGGuider.inner_set_conds", "conditioning", ("conds",)),
    Requirement(
        "comfy.samplers.CFGGuider.inner_sample",
        "overridden: sets up the run",
        (
            "self",
            "noise",
            "latent_image",
            "device",
            "sampler",
            "sigmas",
            "denoise_mask",
            "callback",
            "disable_pbar",
            "seed",
        ),
        leading=True,
    ),
    Requirement(
        "comfy.samplers.CFGGuider.predict_noise",
        "overridden: AVSync guidance",
        ("self", "x", "timestep", "model_options", "seed"),
        leading=True,
    ),
    Requirement(
        "comfy.samplers.CFGGuider.sample",
        "the AVSync Sampler drives it",
        ("noise", "latent_image", "sampler", "sigmas", "callback", "disable_pbar", "seed"),
    ),
    Requirement(
        "comfy.samplers.calc_cond_batch",
        "evaluates the guidance branches",
        ("model", "conds", "x_in", "timestep", "model_options"),
        leading=True,
    ),
    Requirement(
        "comfy.samplers.cfg_function",
        "single-guidance step with CFG hooks",
        ("model", "cond_pred", "uncond_pred", "cond_scale", "x", "timestep", "model_options", "cond", "uncond"),
    ),
    Requirement("comfy.samplers.sampler_object", "sampler by name", ("name",)),
    Requirement(
        "comfy.samplers.KSAMPLER",
        "base of the official sampler",
        ("sampler_function", "extra_options", "inpaint_options"),
        leading=True,
    ),
    Requirement(
        "comfy.samplers.KSAMPLER.sample",
        "calls the official sampler's function",
        ("self", "model_wrap", "sigmas", "extra_args", "callback", "noise"),
        leading=True,
        source_mentions=("max_denoise", "noise_scaling", "sampler_function"),
    ),
    Requirement(
        "comfy.samplers.KSAMPLER.max_denoise",
        "overridden: the official start is pure noise",
        ("self", "model_wrap", "sigmas"),
        leading=True,
    ),
    Requirement(
        "comfy.samplers.KSampler",
        "sigmas for a sampler/scheduler",
        ("model", "steps", "device", "sampler", "scheduler", "denoise", "model_options"),
    ),
    Requirement("comfy.samplers.KSampler.SAMPLERS", "sampler dropdown"),
    Requirement("comfy.samplers.KSampler.SCHEDULERS", "scheduler dropdown"),
    # Context windows (nodes/context_windows.py): core's handler, given AVSyncD's anchored windows.
    Requirement(
        "comfy.context_windows.IndexListContextHandler",
        "context windows on long sound",
        (
            "context_schedule",
            "fuse_method",
            "context_length",
            "context_overlap",
            "context_stride",
            "closed_loop",
            "dim",
        ),
        leading=True,
    ),
    Requirement(
        "comfy.context_windows.IndexListContextHandler.set_step",
        "overridden: the step from one sigma",
        ("self", "timestep", "model_options"),
        leading=True,
    ),
    Requirement("comfy.context_windows.ContextSchedule", "anchored window schedule", ("name", "func"), leading=True),
    Requirement("comfy.context_windows.ContextFuseMethod", "AVSyncD's window weights", ("name", "func"), leading=True),
    Requirement("comfy.context_windows.ContextSchedules.STATIC_STANDARD", "the sampler's context schedule"),
    Requirement("comfy.context_windows.ContextSchedules.UNIFORM_LOOPED", "refused: wraps frames around"),
    Requirement(
        "comfy.context_windows.get_matching_context_schedule", "the sampler's context schedule", ("context_schedule",)
    ),
    Requirement("comfy.context_windows.get_matching_fuse_method", "the sampler's fuse method", ("fuse_method",)),
    Requirement(
        "comfy.context_windows.create_prepare_sampling_wrapper",
        "memory estimate per window, as core's node",
        ("model",),
    ),
    Requirement(
        "comfy.model_base.BaseModel.process_latent_in",
        "first frame in model space",
        ("self", "latent"),
        leading=True,
    ),
    Requirement(
        "comfy.model_sampling.EPS.calculate_input",
        "clean first frame",
        ("self", "sigma", "noise"),
        leading=True,
    ),
    Requirement(
        "comfy.model_sampling.ModelSamplingDiscrete.timestep",
        "official schedule",
        ("self", "sigma"),
        leading=True,
    ),
    Requirement("comfy.sample.prepare_noise", "noise per clip", ("latent_image", "seed"), leading=True),
    Requirement(
        "comfy.sample.fix_empty_latent_channels", "first-frame latents", ("model", "latent_image"), leading=True
    ),
    Requirement("comfy.model_management.get_torch_device", "where the pack's encoders and classifier run"),
    Requirement("comfy.model_management.unet_dtype", "the dtype the motion module is stored in"),
    Requirement(
        "comfy.ops.manual_cast.Linear", "motion-module and audio-encoder layers that cast per call, stream in low VRAM"
    ),
    Requirement("comfy.ops.manual_cast.LayerNorm", "motion-module and audio-encoder norms, cast per call"),
    Requirement("comfy.ops.manual_cast.Conv2d", "the audio encoder's patch stem, cast per call"),
    Requirement("comfy.model_management.unet_offload_device", "where the pack's encoders and classifier rest"),
    Requirement("comfy.model_management.intermediate_device", "sampler output device"),
    Requirement("comfy.model_management.throw_exception_if_processing_interrupted", "Cancel stops sampling"),
    Requirement(
        "comfy.model_management.load_models_gpu", "the pack's models to the GPU", ("models", "force_full_load")
    ),
    Requirement("comfy.utils.ProgressBar", "progress", ("total",)),
    Requirement("comfy.utils.ProgressBar.update_absolute", "progress and previews", ("value", "total", "preview")),
    Requirement("comfy.utils.PROGRESS_BAR_ENABLED", "console progress bar switch"),
    Requirement("latent_preview.get_previewer", "previews", ("device", "latent_format"), leading=True),
    Requirement("nodes.VAEEncode.encode", "first frame from an image", ("self", "vae", "pixels"), leading=True),
    Requirement(
        "nodes.PreviewImage.save_images",
        "in-node preview pictures (audio windows, sync plot)",
        ("self", "images", "filename_prefix"),
        leading=True,
    ),
    # Model folders and input files (nodes/model_paths.py, nodes/audio_nodes.py).
    Requirement(
        "folder_paths.add_model_folder_path",
        "models/avsyncd, models/imagebind, models/avsync_classifier",
        ("folder_name", "full_folder_path", "is_default"),
    ),
    Requirement("folder_paths.folder_names_and_paths", "weight extensions of the pack's folders"),
    Requirement("folder_paths.models_dir", "default model folder"),
    Requirement("folder_paths.get_folder_paths", "model roots", ("folder_name",)),
    Requirement("folder_paths.get_filename_list", "model dropdowns", ("folder_name",)),
    Requirement("folder_paths.get_full_path", "model file behind a choice", ("folder_name", "filename")),
    Requirement("folder_paths.get_input_directory", "audio dropdown"),
    Requirement("folder_paths.filter_files_content_types", "audio and video files", ("files", "content_types")),
    Requirement("folder_paths.get_annotated_filepath", "audio file path", ("name",)),
    Requirement("folder_paths.annotated_filepath", "audio file and the folder it must stay in", ("name",)),
)


def _resolve(path: str) -> Any:
    """The object at a dotted path: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)  # AttributeError: the piece is missing
        return obj
    raise ImportError(f"no module in {path}")


def _signature_problem(obj: Any, req: Requirement) -> str | None:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None  # builtins without a signature: existence is all that can be checked
    params = list(signature.parameters.values())
    names = [p.name for p in params]  # a class's signature is its __init__'s without self
    if req.leading:
        if names[: len(req.params)] != list(req.params):
            return f"takes ({', '.join(names)}), the pack needs ({', '.join(req.params)}, ...)"
        extra = params[len(req.params) :]
        required = [p.name for p in extra if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if required:
            return f"now requires {', '.join(required)}"
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    absent = [name for name in req.params if name not in names]
    return f"has no parameter {', '.join(absent)}" if absent else None


def missing_pieces() -> list[str]:
    """What the installed ComfyUI lacks of ``HOST_API``, one description per piece (empty when all is there)."""
    problems = []
    for req in HOST_API:
        try:
            obj = _resolve(req.path)
        except (ImportError, AttributeError):
            problems.append(f"{req.path} is missing")
            continue
        problem = _signature_problem(obj, req) if req.params else None
        if problem is None and req.source_mentions:
            try:
                source = inspect.getsource(obj)
            except (OSError, TypeError):
                source = None  # no source shipped: nothing to read, not a failure
            absent = [m for m in req.source_mentions if source is not None and m not in source]
            problem = f"no longer calls {', '.join(absent)}" if absent else None
        if problem:
            problems.append(f"{req.path} {problem}")
    return problems


def host_problem() -> str | None:
    """One log line when the host does not offer what the pack needs, else None."""
    problems = missing_pieces()
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return (
        f"[AVSync] The installed ComfyUI does not offer what this pack needs: {problems[0]}{more}. The AVSync nodes "
        f"are not loaded. Tested with ComfyUI {TESTED}, checked by reading up to {READ_UP_TO}: update ComfyUI, or "
        "update the pack if ComfyUI is newer."
    )


# -- bridges between ComfyUI versions --------------------------------------------------------------------------


def rgb(image):
    """IMAGE pixels without an alpha channel: older VAE Encode dropped it itself, newer passes it to the VAE."""
    return image[..., :3]
