"""Node ID -> class and display name. IDs are stable: saved workflows refer to them."""

from . import model_paths
from .audio_nodes import AVSyncEncodeAudio, AVSyncImageBindLoader, AVSyncLoadAudio
from .evaluation_nodes import AVSyncClassifierLoader, AVSyncImageBindVisionAudioLoader, AVSyncSyncScore
from .model_nodes import AVSyncApplyMotionModule, AVSyncMotionModuleLoader
from .official_sampling import AVSyncOfficialSchedule
from .sampling_nodes import AVSyncClipLatent, AVSyncGuider, AVSyncSampler

model_paths.register()

NODE_CLASS_MAPPINGS = {
    "AVSyncLoadAudio": AVSyncLoadAudio,
    "AVSyncImageBindLoader": AVSyncImageBindLoader,
    "AVSyncEncodeAudio": AVSyncEncodeAudio,
    "AVSyncMotionModuleLoader": AVSyncMotionModuleLoader,
    "AVSyncApplyMotionModule": AVSyncApplyMotionModule,
    "AVSyncSampler": AVSyncSampler,
    "AVSyncGuider": AVSyncGuider,
    "AVSyncClipLatent": AVSyncClipLatent,
    "AVSyncClassifierLoader": AVSyncClassifierLoader,
    "AVSyncImageBindVisionAudioLoader": AVSyncImageBindVisionAudioLoader,
    "AVSyncSyncScore": AVSyncSyncScore,
    "AVSyncOfficialSchedule": AVSyncOfficialSchedule,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "AVSyncLoadAudio": "AVSync Load Audio",
    "AVSyncImageBindLoader": "Load ImageBind Audio Encoder",
    "AVSyncEncodeAudio": "AVSync Encode Audio",
    "AVSyncMotionModuleLoader": "Load AVSyncD Motion Module",
    "AVSyncApplyMotionModule": "Apply AVSyncD",
    "AVSyncSampler": "AVSync Sampler",
    "AVSyncGuider": "AVSync Guider",
    "AVSyncClipLatent": "AVSync Clip Latent",
    "AVSyncClassifierLoader": "Load AVSync Classifier",
    "AVSyncImageBindVisionAudioLoader": "Load ImageBind (Vision + Audio)",
    "AVSyncSyncScore": "AVSync Sync Score",
    "AVSyncOfficialSchedule": "AVSync Official Schedule",
}
