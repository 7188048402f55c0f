"""The host-test harness works against a real ComfyUI: its own UNet, its samplers, its server."""

from __future__ import annotations

import importlib
import json
import sys
import wave
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

import comfy_host
from comfy_host import ComfyServer, ComfyServerError

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def comfy():
    comfy_host.import_comfy()


@pytest.fixture(scope="module")
def tiny_unet(comfy, golden):
    return comfy_host.build_comfy_tiny_unet(golden)


def test_a_set_comfyui_path_without_comfyui_fails_instead_of_skipping(tmp_path, monkeypatch):
    (tmp_path / "main.py").write_text("")  # a main.py alone is not a checkout
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="holds no ComfyUI checkout"):
        comfy_host.configured_checkout()
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path / "missing"))
    with pytest.raises(pytest.fail.Exception, match="holds no ComfyUI checkout"):
        comfy_host.configured_checkout()
    monkeypatch.delenv("COMFYUI_PATH")
    assert comfy_host.configured_checkout() in (None, comfy_host.DEFAULT_COMFYUI_PATH.resolve())


def test_in_process_comfy_runs_on_cpu_in_a_throwaway_base(comfy):
    import comfy.model_management
    import folder_paths

    root = comfy_host.comfyui_path()
    assert comfy.model_management.get_torch_device().type == "cpu"
    assert Path(sys.modules["nodes"].__file__).resolve().parent == root
    base = comfy_host.in_process_base_directory()
    assert base is not None and Path(folder_paths.models_dir) == base / "models"
    assert Path(folder_paths.get_input_directory()) == base / "input"


def test_plugin_package_imports_subpackages_relatively(comfy):
    package = comfy_host.load_plugin_package()
    assert package.__name__ == comfy_host.PLUGIN_PACKAGE
    assert comfy_host.REPO_ROOT in [Path(p).resolve() for p in package.__path__]
    errors = importlib.import_module(f"{comfy_host.PLUGIN_PACKAGE}.avsync_core.errors")
    assert Path(errors.__file__).resolve() == comfy_host.REPO_ROOT / "avsync_core" / "errors.py"
    assert comfy_host.load_plugin_package() is package


def test_tiny_unet_config_is_the_documented_comfyui_config(tiny_unet):
    _, unet_config = tiny_unet
    # The values golden/README.md gives for unet_tiny_c "in ComfyUI's terms".
    expected = {
        "model_channels": 32,
        "channel_mult": [1, 1, 2, 2],
        "num_res_blocks": [2, 2, 2, 2],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "context_dim": 32,
        "num_heads": 4,
        "num_head_channels": -1,
    }
    assert {k: unet_config[k] for k in expected} == expected


def test_tiny_unet_holds_exactly_the_684_base_tensors(tiny_unet, golden):
    import comfy.model_detection
    import comfy.utils

    patcher, unet_config = tiny_unet
    state = patcher.model.diffusion_model.state_dict()
    assert len(state) == 684
    golden_sd = load_file(str(golden / "unet_tiny_c" / "unet_tiny_c.safetensors"))
    to_comfy = comfy.utils.unet_to_diffusers(unet_config)
    base = {k: v for k, v in golden_sd.items() if not comfy_host.is_avsync_only_key(k)}
    assert len(base) == 684 and len(golden_sd) - len(base) == 418
    for name, tensor in base.items():
        assert torch.equal(state[to_comfy[name]], tensor), name
    # ComfyUI's own detector reads the same architecture back from the loaded weights.
    detected = comfy.model_detection.detect_unet_config(state, "")
    assert {k: unet_config[k] for k in detected} == detected


def test_tiny_unet_forward_is_finite_and_uses_the_context(tiny_unet):
    patcher, _ = tiny_unet
    model = patcher.model
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(12, 4, 8, 8, generator=generator)
    context = torch.randn(12, 7, 32, generator=generator)
    sigma = model.model_sampling.sigma(torch.linspace(50, 950, 12))
    with torch.no_grad():
        out = model.apply_model(x, sigma, c_crossattn=context)
        out_other_context = model.apply_model(x, sigma, c_crossattn=context.flip(0))
    assert out.shape == (12, 4, 8, 8) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, out_other_context)


def test_sampler_custom_advanced_runs_two_steps(tiny_unet):
    import comfy.model_management
    from comfy_extras import nodes_custom_sampler as ncs

    patcher, unet_config = tiny_unet
    generator = torch.Generator().manual_seed(1)
    positive = [[torch.randn(1, 7, unet_config["context_dim"], generator=generator), {}]]
    negative = [[torch.zeros(1, 7, unet_config["context_dim"]), {}]]
    latent = {"samples": torch.randn(2, 4, 8, 8, generator=generator)}
    sampling = patcher.get_model_object("model_sampling")
    sigmas = torch.cat([sampling.sigma(torch.tensor([999.0, 500.0])), torch.zeros(1)])

    (guider,) = ncs.CFGGuider().get_guider(patcher, positive, negative, 3.0)
    (noise,) = ncs.DisableNoise().get_noise()
    (sampler,) = ncs.KSamplerSelect().get_sampler("euler")
    output, denoised = ncs.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, latent)

    samples = output["samples"]
    assert samples.shape == (2, 4, 8, 8)
    assert torch.isfinite(samples).all()
    assert not torch.allclose(samples, latent["samples"])
    assert torch.isfinite(denoised["samples"]).all()
    assert patcher in [m.model for m in comfy.model_management.current_loaded_models]


def test_random_sd15_checkpoint_is_detected_as_sd15(comfy):
    import comfy.model_detection
    import comfy.supported_models

    path = comfy_host.session_random_sd15_checkpoint()
    meta = comfy_host.checkpoint_meta_state_dict(path)
    layout = comfy_host.sd15_checkpoint_layout()
    assert {k: tuple(v.shape) for k, v in meta.items()} == {k: shape for k, (shape, _) in layout.items()}
    assert {v.dtype for v in meta.values()} == {torch.float16}
    for prefix in ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model."):
        assert any(k.startswith(prefix) for k in meta), prefix
    model_config = comfy.model_detection.model_config_from_unet(meta, "model.diffusion_model.")
    assert type(model_config) is comfy.supported_models.SD15

    with safe_open(str(path), framework="pt") as f:
        conv = f.get_tensor("model.diffusion_model.input_blocks.1.0.in_layers.2.weight").float()  # 320x320x3x3
        norm = f.get_tensor("model.diffusion_model.input_blocks.1.0.in_layers.0.weight")
        bias = f.get_tensor("first_stage_model.decoder.conv_out.bias")
    assert abs(conv.std().item() * (320 * 9) ** 0.5 - 1.0) < 0.02
    assert torch.equal(norm, torch.ones_like(norm)) and torch.equal(bias, torch.zeros_like(bias))


def _broken_node_pack(tmp_path):
    pack = tmp_path / "broken_pack"
    pack.mkdir()
    (pack / "__init__.py").write_text("raise ImportError('broken_pack cannot load: marker-7f3a')\n")
    return pack


def _silent_wav(path):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(b"\0\0" * 1600)
    return path


@pytest.mark.slow
def test_server_runs_core_txt2img_and_reports_import_failures(tmp_path):
    checkpoint = comfy_host.session_random_sd15_checkpoint()
    (tmp_path / "extra" / "ckpts").mkdir(parents=True)
    (tmp_path / "extra" / "ckpts" / "extra_dummy.safetensors").write_bytes(b"")
    extra_paths = {"host_test": {"base_path": str(tmp_path / "extra"), "checkpoints": "ckpts"}}
    with ComfyServer(
        plugin=False, custom_nodes={"broken_pack": _broken_node_pack(tmp_path)}, extra_model_paths=extra_paths
    ) as server:
        failures = server.import_failures()
        assert len(failures) == 1 and "broken_pack" in failures[0]
        assert "marker-7f3a" in server.log_tail()

        name = server.add_model("checkpoints", checkpoint)
        checkpoints = server.object_info("CheckpointLoaderSimple")["CheckpointLoaderSimple"]["input"]["required"]
        assert {name, "extra_dummy.safetensors"} <= set(checkpoints["ckpt_name"][0])
        audio_name = server.upload_input(_silent_wav(tmp_path / "click.wav"))
        assert audio_name in server.object_info("LoadAudio")["LoadAudio"]["input"]["required"]["audio"][0]

        with pytest.raises(ComfyServerError, match="ckpt_name"):
            server.post_prompt(comfy_host.api_prompt_sd15_txt2img("missing.safetensors"))

        entry = server.run_prompt(comfy_host.api_prompt_sd15_txt2img(name, batch=4, size=64, steps=2), timeout=600)
        files = server.output_files(entry)
        assert len(files) == 4
        assert sorted(p.name for p in server.output_dir.glob("*.png")) == sorted(p.name for p in files)
        for file in files:
            with Image.open(file) as image:
                assert image.format == "PNG" and image.size == (64, 64)
                assert json.loads(image.info["prompt"])["5"]["class_type"] == "KSampler"
        log = server.log_text()
        for complaint in ("unet missing", "clip missing", "Missing VAE keys", "unet unexpected"):
            assert complaint not in log
