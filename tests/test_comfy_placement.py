"""Low-VRAM placement, checked on a CPU-only machine: the meta device stands in for the GPU.

Under ComfyUI's weight streaming a model's weights rest on the offload device while it runs on the load device.
On a CPU-only machine both are the CPU, so nothing could show a wrong device; here the owner is given the meta
device as its load device (weights stay on the CPU), and the audio encoder, built from comfy.ops.manual_cast
layers as the loader node builds it, must run there: its input goes to the execution device the owner set, and
its raw parameters (cls token, position embedding, attention projections) are cast to the input's device.
Host test: ComfyUI in-process (COMFYUI_PATH or /opt/ComfyUI).
"""

from __future__ import annotations

import pytest
import torch

import comfy_host

pytestmark = pytest.mark.host

META = torch.device("meta")


@pytest.fixture(scope="module")
def encoder():
    comfy_host.load_plugin_package()
    import comfy.ops
    from comfyui_avsync.avsync_core.audio import ImageBindAudioConfig, ImageBindAudioEncoder

    torch.manual_seed(0)
    config = ImageBindAudioConfig(embed_dim=32, depth=1, num_heads=2, out_dim=8)
    return ImageBindAudioEncoder(config, operations=comfy.ops.manual_cast)


def test_the_owner_sets_the_execution_device_and_the_encoder_runs_there_with_its_weights_offloaded(encoder):
    from comfyui_avsync.nodes.ownership import owner

    patcher = owner(encoder, load_device=META, offload_device=torch.device("cpu"))
    assert patcher.load_device == META and encoder.execution_device == META
    mel = torch.zeros(2, 1, 128, 204)
    with torch.no_grad():
        out = encoder(mel)
    assert all(p.device.type == "cpu" for p in encoder.parameters()), "the weights stay on the offload device"
    assert out.tokens.device == META and out.cls_normalized.device == META, "the encoder ran on the load device"
