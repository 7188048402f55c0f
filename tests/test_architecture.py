"""The architecture the project holds to, checked: the library never imports ComfyUI, the ComfyUI path never
imports diffusers, and modules stay small enough to read."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import comfy_host

REPO = Path(__file__).resolve().parents[1]
HOST_MODULES = {
    "comfy",
    "comfy_api",
    "comfy_extras",
    "comfy_execution",
    "execution",
    "folder_paths",
    "latent_preview",
    "node_helpers",
    "nodes",
    "server",
}
MAX_LINES = 400


def _absolute_imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file, wherever it sits (function bodies included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_library_never_imports_comfyui():
    offenders = {
        str(path.relative_to(REPO)): sorted(_absolute_imports(path) & HOST_MODULES)
        for path in (REPO / "avsync_core").rglob("*.py")
        if _absolute_imports(path) & HOST_MODULES
    }
    assert not offenders, f"avsync_core must stay host-independent: {offenders}"


def test_modules_stay_short_or_say_why():
    long = []
    for folder in ("avsync_core", "nodes"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            if text.count("\n") > MAX_LINES and "Longer than 400 lines because" not in text[:2000]:
                long.append(f"{path.relative_to(REPO)} ({text.count(chr(10))} lines)")
    assert not long, f"split these modules or say at their top why they are long: {long}"


DIFFUSERS_FREE_IMPORT = """
import sys
sys.modules["diffusers"] = None  # any `import diffusers` now raises ImportError
sys.path.insert(0, {tests!r})
import comfy_host
comfy_host.import_comfy()
pkg = comfy_host.load_plugin_package()
for node in pkg.NODE_CLASS_MAPPINGS.values():
    node.INPUT_TYPES()
print(len(pkg.NODE_CLASS_MAPPINGS))
print(" ".join(sorted(k for k in sys.modules if k.startswith("comfyui_avsync."))))
"""


@pytest.mark.host
def test_comfyui_entry_imports_without_diffusers():
    """diffusers is needed by the standalone model, sampling and training only; the nodes must not load it."""
    root = comfy_host.require_comfyui()
    script = DIFFUSERS_FREE_IMPORT.format(tests=str(REPO / "tests"))
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "COMFYUI_PATH": str(root)},
    )
    assert result.returncode == 0, f"the pack needs diffusers on the ComfyUI path:\n{result.stderr[-4000:]}"
    count, modules = result.stdout.strip().splitlines()[-2:]
    assert int(count) >= 8
    loaded = set(modules.split())
    assert {
        "comfyui_avsync.nodes.patching",
        "comfyui_avsync.nodes.guider",
        "comfyui_avsync.avsync_core.model.motion_files",
        "comfyui_avsync.avsync_core.sampling.run",
    } <= loaded
    assert not loaded & {"comfyui_avsync.avsync_core.model.unet", "comfyui_avsync.avsync_core.sampling.loop"}


DIFFUSERS_FREE_RUN = """
import sys
sys.modules["diffusers"] = None  # any `import diffusers` now raises ImportError, also while the nodes run
sys.path.insert(0, {tests!r})
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

import comfy_host
comfy_host.import_comfy()
comfy_host.load_plugin_package()
from conftest import golden_dir, load_golden, write_official_unet_folder
import test_comfy_nodes
import test_comfy_samplers
from comfyui_avsync.avsync_core.audio import ImageBindAudioEncoder
from comfyui_avsync.avsync_core.model.motion_files import load_motion_module
from comfyui_avsync.nodes.model_nodes import AVSyncApplyMotionModule

encoder = ImageBindAudioEncoder.from_file(
    golden_dir() / "imagebind_audio_tiny" / "imagebind_audio_tiny.safetensors", num_heads=4
)
audio = test_comfy_nodes.encode(encoder, seconds=1.0)
base, config = comfy_host.build_comfy_tiny_unet(golden_dir())
motion = load_motion_module(write_official_unet_folder("unet_tiny_c", Path(tempfile.mkdtemp())))
g = torch.Generator().manual_seed(3)
setup = SimpleNamespace(
    model=AVSyncApplyMotionModule().apply(base, motion)[0],
    audio=audio,
    positive=[[torch.randn(1, 7, config["context_dim"], generator=g), {{}}]],
    negative=[[torch.randn(1, 7, config["context_dim"], generator=g), {{}}]],
    first={{"samples": torch.randn(1, 4, 8, 8, generator=g)}},
)
for sampler in ("euler", "official_pndm"):
    test_comfy_samplers.run_sampler_node(setup, setup.model, "dual", sampler)
print("NODES RAN")
"""


@pytest.mark.host
@pytest.mark.slow
def test_comfyui_nodes_run_without_diffusers():
    """Encode Audio, Apply Motion Module and the AVSync Sampler (a ComfyUI sampler and an official one) run in a
    process where diffusers cannot be imported: no node imports it while it runs."""
    root = comfy_host.require_comfyui()
    script = DIFFUSERS_FREE_RUN.format(tests=str(REPO / "tests"))
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=REPO,
        env={**os.environ, "COMFYUI_PATH": str(root), "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, f"a node needs diffusers while it runs:\n{result.stderr[-4000:]}"
    assert "NODES RAN" in result.stdout
