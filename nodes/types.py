"""The pack's own ComfyUI socket types and menu category (stable names: saved workflows refer to them)."""

CATEGORY = "AVSync"
AUDIO_CONDITION = "AVSYNC_AUDIO"
AUDIO_ENCODER = "AVSYNC_AUDIO_ENCODER"
MOTION_MODULE = "AVSYNC_MOTION_MODULE"
