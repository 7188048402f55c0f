"""The pack checks the installed ComfyUI before registering nodes, and bridges the versions it knows of.

Host tests: they need a ComfyUI checkout (COMFYUI_PATH or /opt/ComfyUI).
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import comfy_host
from conftest import golden_dir, load_golden

pytestmark = pytest.mark.host
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compat():
    comfy_host.load_plugin_package()
    from comfyui_avsync.nodes import compat

    return compat


def test_the_tested_host_offers_every_piece(compat):
    assert compat.missing_pieces() == []
    assert compat.host_problem() is None


def _host_symbols_used_by(path: Path) -> set[str]:
    """Dotted paths of the module-level ComfyUI symbols a node module reads (``comfy.samplers.KSampler``, ...)."""
    tree = ast.parse(path.read_text())
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in comfy_host._COMFY_TOP_LEVEL:
                    aliases[alias.asname or alias.name.split(".")[0]] = (
                        alias.asname and alias.name or alias.name.split(".")[0]
                    )
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module.split(".")[0] in comfy_host._COMFY_TOP_LEVEL
        ):
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    used = set()
    for node in ast.walk(tree):
        chain = []
        while isinstance(node, ast.Attribute):
            chain.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in aliases and chain:
            used.add(".".join([aliases[node.id], *reversed(chain)]))
        elif isinstance(node, ast.Name) and node.id in aliases and "." in aliases[node.id] and not chain:
            used.add(aliases[node.id])
    return used


def test_the_inventory_lists_every_comfyui_symbol_the_nodes_use(compat):
    import inspect

    listed = {req.path for req in compat.HOST_API}
    unlisted = set()
    for path in (REPO / "nodes").glob("*.py"):
        if path.name == "compat.py":
            continue
        for symbol in _host_symbols_used_by(path):
            if inspect.ismodule(compat._resolve(symbol)):
                continue
            if symbol not in listed and not any(entry.startswith(symbol + ".") for entry in listed):
                unlisted.add(f"{symbol} ({path.name})")
    assert not unlisted, f"add these to nodes/compat.py HOST_API: {sorted(unlisted)}"


def test_a_host_without_a_piece_gets_one_clear_line(compat, monkeypatch):
    import comfy.samplers

    monkeypatch.delattr(comfy.samplers, "calc_cond_batch")
    problem = compat.host_problem()
    assert problem.startswith("[AVSync]") and "\n" not in problem
    assert "comfy.samplers.calc_cond_batch is missing" in problem
    assert f"Tested with ComfyUI {compat.TESTED}" in problem


def test_a_changed_signature_is_reported_and_the_newer_optional_form_accepted(compat, monkeypatch):
    import comfy.samplers

    def requires_more(
        self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed, latent_shapes
    ):
        pass

    def newer(
        self,
        noise,
        latent_image,
        device,
        sampler,
        sigmas,
        denoise_mask,
        callback,
        disable_pbar,
        seed,
        latent_shapes=None,
    ):
        pass

    monkeypatch.setattr(comfy.samplers.CFGGuider, "inner_sample", requires_more)
    assert compat.missing_pieces() == ["comfy.samplers.CFGGuider.inner_sample now requires latent_shapes"]
    monkeypatch.setattr(comfy.samplers.CFGGuider, "inner_sample", newer)
    assert compat.missing_pieces() == []


def test_a_missing_parameter_that_is_not_leading_is_reported(compat, monkeypatch):
    """add_object_patch is listed with its parameters (name, obj), not leading: a host that renames one is refused."""
    import comfy.model_patcher

    def add_object_patch(self, name, value):
        pass

    monkeypatch.setattr(comfy.model_patcher.ModelPatcher, "add_object_patch", add_object_patch)
    assert compat.missing_pieces() == ["comfy.model_patcher.ModelPatcher.add_object_patch has no parameter obj"]


def test_a_host_that_stopped_calling_a_transformer_patch_is_refused(compat, monkeypatch):
    import comfy.ldm.modules.attention as attention

    def forward(self, x, context=None, transformer_options={}):  # noqa: B006 (the host's own signature)
        return x

    monkeypatch.setattr(attention.BasicTransformerBlock, "forward", forward)
    problems = compat.missing_pieces()
    assert problems == [
        "comfy.ldm.modules.attention.BasicTransformerBlock.forward no longer calls attn1_patch, middle_patch, "
        "attn2_output_patch"
    ]


PACK_ON_A_HOST_WITHOUT = """
import sys
sys.path.insert(0, {tests!r})
import comfy_host
comfy_host.import_comfy()
import comfy.samplers
del comfy.samplers.calc_cond_batch
pkg = comfy_host.load_plugin_package()
print("MAPPINGS", len(pkg.NODE_CLASS_MAPPINGS), len(pkg.NODE_DISPLAY_NAME_MAPPINGS))
"""


def test_the_pack_registers_no_node_on_a_host_without_a_piece():
    root = comfy_host.require_comfyui()
    result = subprocess.run(
        [sys.executable, "-c", PACK_ON_A_HOST_WITHOUT.format(tests=str(REPO / "tests"))],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "COMFYUI_PATH": str(root)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MAPPINGS 0 0" in result.stdout
    lines = [line for line in result.stderr.splitlines() if "[AVSync]" in line]
    assert len(lines) == 1 and "comfy.samplers.calc_cond_batch is missing" in lines[0]


def test_the_guider_hands_newer_host_keywords_on(compat, official_tiny_c, monkeypatch):
    """Newer ComfyUI calls inner_sample(..., latent_shapes=...); the override must pass it to the base class."""
    import comfy.samplers
    from comfyui_avsync.avsync_core.audio import AudioCondition
    from comfyui_avsync.avsync_core.model.motion_files import load_motion_module
    from comfyui_avsync.nodes.guider import AVSyncCFGGuider
    from comfyui_avsync.nodes.patching import apply_avsync

    base, _ = comfy_host.build_comfy_tiny_unet(golden_dir())
    motion, _ = load_motion_module(official_tiny_c)
    t = load_golden("samplers", "sampler_c_ddim_audio_cfg.safetensors")
    audio = AudioCondition(t["in.audio_tokens"], t["in.null_audio_tokens"], t["in.audio_masks"][0], frames=6, fps=6.0)
    guider = AVSyncCFGGuider(apply_avsync(base, motion), audio)
    guider.inner_model = base.model
    seen = {}

    def base_inner_sample(self, noise, latent_image, *args, latent_shapes=None):
        seen["latent_shapes"] = latent_shapes
        return torch.zeros_like(latent_image)

    monkeypatch.setattr(comfy.samplers.CFGGuider, "inner_sample", base_inner_sample)
    latent = torch.randn(6, 4, 8, 8)
    out = guider.inner_sample(
        torch.zeros_like(latent), latent, "cpu", None, None, None, None, True, 0, latent_shapes=[(6, 4, 8, 8)]
    )
    assert seen == {"latent_shapes": [(6, 4, 8, 8)]}
    assert torch.equal(out[0], latent[0])  # and the first-frame rule still applies to what comes back


def test_rgb_drops_alpha_so_vae_encode_sees_the_same_pixels_on_every_host(compat):
    image = torch.rand(1, 8, 8, 4)
    assert torch.equal(compat.rgb(image), image[..., :3])
