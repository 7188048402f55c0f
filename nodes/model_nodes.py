"""Motion-module nodes: load AVSyncD's trained weights, and inject them into any SD1.5 MODEL."""

from __future__ import annotations

import comfy.model_management
import comfy.ops

from ..avsync_core.model.motion_files import MotionModuleInfo, load_motion_module
from ..avsync_core.model.motion_module import MotionModule
from . import model_paths
from .patching import apply_avsync
from .types import CATEGORY, MOTION_MODULE

MOTION_LOADER_TOOLTIPS = {
    "motion_module": (
        "An AVSyncD motion module (.safetensors) or an official AVSyncD checkpoint folder in models/avsyncd. "
        + model_paths.HELP[model_paths.MOTION_FOLDER]
        + "."
    ),
}
APPLY_TOOLTIPS = {
    "model": "A Stable Diffusion 1.5 model (any fine-tune; LoRAs may be applied before or after).",
    "motion_module": "From 'Load AVSyncD Motion Module'.",
}


class AVSyncMotionModuleLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "motion_module": (model_paths.motion_choices(), {"tooltip": MOTION_LOADER_TOOLTIPS["motion_module"]}),
            }
        }

    RETURN_TYPES = (MOTION_MODULE,)
    RETURN_NAMES = ("motion_module",)
    OUTPUT_TOOLTIPS = ("AVSyncD's trained layers (temporal convolutions and attention, audio cross-attention).",)
    FUNCTION = "load"
    CATEGORY = f"{CATEGORY}/loaders"
    DESCRIPTION = "Loads AVSyncD's trained weights, from this pack's files or from an official checkpoint."

    @classmethod
    def VALIDATE_INPUTS(cls, motion_module: str):
        return model_paths.check_choice(
            "motion_module", model_paths.MOTION_FOLDER, motion_module, model_paths.motion_choices()
        )

    def load(self, motion_module: str):
        """One copy, in the dtype ComfyUI stores UNet weights in, built from comfy.ops.manual_cast layers: they
        cast to each call's compute dtype and take part in ComfyUI's low-VRAM weight streaming."""
        path = model_paths.resolve(model_paths.MOTION_FOLDER, motion_module)
        dtype = comfy.model_management.unet_dtype()
        return (load_motion_module(path, dtype=dtype, operations=comfy.ops.manual_cast),)


class AVSyncApplyMotionModule:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": APPLY_TOOLTIPS["model"]}),
                "motion_module": (MOTION_MODULE, {"tooltip": APPLY_TOOLTIPS["motion_module"]}),
            }
        }

    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("A copy of the model that animates with sound; the input model is left as it was.",)
    FUNCTION = "apply"
    CATEGORY = CATEGORY
    DESCRIPTION = "Injects AVSyncD into an SD1.5 model. Sample the result with the AVSync Sampler or the AVSync Guider."

    def apply(self, model, motion_module: tuple[MotionModule, MotionModuleInfo]):
        motion, _info = motion_module  # shared, never copied: its layers cast to the model's dtype per call
        return (apply_avsync(model, motion),)
