"""The shipped workflows say where their models come from the way ComfyUI's page reads it: a `models` list (name, url,
directory) in the loader node's properties, for the model file the node has selected. tests/test_browser_hint.py
checks that the page's missing-models list shows them; an official checkpoint folder cannot be described so, and
the loader's own check says what to put where instead."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

import comfy_host

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
# The file names the page treats as model files (a selected value ending so is looked up in the model folders).
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".onnx", ".gguf")
BYPASSED, MUTED = 4, 2


def pack_folders() -> dict[str, str]:
    """The model folders nodes/model_paths.py registers (read from its source: importing it needs ComfyUI)."""
    tree = ast.parse((REPO / "nodes" / "model_paths.py").read_text())
    return {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if target.id.endswith("_FOLDER")
    }


# Folder each loader reads, for the loaders of the shipped workflows.
LOADER_FOLDERS = {
    "CheckpointLoaderSimple": "checkpoints",
    "AVSyncImageBindLoader": pack_folders()["IMAGEBIND_FOLDER"],
    "AVSyncClassifierLoader": pack_folders()["CLASSIFIER_FOLDER"],
}


def model_entries(path: Path) -> list[tuple[dict, dict]]:
    return [(n, m) for n in json.loads(path.read_text())["nodes"] for m in n.get("properties", {}).get("models", [])]


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_each_declared_model_is_the_selected_file_with_a_public_url_and_the_loaders_folder(path):
    entries = model_entries(path)
    assert entries, "the workflow declares its models"
    for node, model in entries:
        assert set(model) <= {"name", "url", "directory", "hash", "hash_type"}, model
        assert model["name"] in node["widgets_values"], "the page lists an entry only for the selected file"
        assert model["directory"] == LOADER_FOLDERS[node["type"]]
        url = urlparse(model["url"])
        assert url.scheme == "https" and url.netloc and url.path.endswith("/" + model["name"]), model["url"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_every_active_model_file_the_workflow_selects_is_declared(path):
    """What the page would otherwise show without a source: a selected model file with no entry. The motion
    module's placeholder is an official folder ('avsync15 [AVSyncD folder]'), which the page does not look up."""
    workflow = json.loads(path.read_text())
    declared = {(n["id"], m["name"]) for n, m in model_entries(path)}
    selected = {
        (n["id"], value)
        for n in workflow["nodes"]
        if n.get("mode", 0) not in (BYPASSED, MUTED)
        for value in n.get("widgets_values") or []
        if isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES)
    }
    assert selected == declared
    assert {v for _, v in selected} == {"v1-5-pruned-emaonly.safetensors", "imagebind_huge.pth"}


@pytest.fixture(scope="module")
def loaders():
    comfy_host.load_plugin_package()  # imports ComfyUI first
    from comfyui_avsync.nodes import model_paths
    from comfyui_avsync.nodes.audio_nodes import AVSyncImageBindLoader
    from comfyui_avsync.nodes.model_nodes import AVSyncMotionModuleLoader

    return model_paths, AVSyncMotionModuleLoader, AVSyncImageBindLoader


def comfy_validation(loader_id: str, inputs: dict) -> list[dict]:
    """ComfyUI's own check of one node before a run (what the page shows when Run is refused)."""
    import asyncio

    import execution

    valid, errors, _ = asyncio.run(
        execution.validate_inputs("test", {"1": {"class_type": loader_id, "inputs": inputs}}, "1", {})
    )
    return [] if valid else errors


@pytest.mark.host
def test_a_missing_official_folder_is_refused_before_running_with_what_to_put_where(
    loaders, official_tiny_c, tmp_path, monkeypatch
):
    import nodes as comfy_nodes
    from test_comfy_nodes import model_folders

    model_paths, motion_loader, imagebind_loader = loaders
    for loader in (motion_loader, imagebind_loader):
        monkeypatch.setitem(comfy_nodes.NODE_CLASS_MAPPINGS, loader.__name__, loader)
    placeholder = "avsync15 [AVSyncD folder]"  # what the shipped workflows select
    with model_folders(avsyncd=[tmp_path / "avsyncd"], imagebind=[tmp_path / "imagebind"]):
        (error,) = comfy_validation("AVSyncMotionModuleLoader", {"motion_module": placeholder})
        message = error["details"]
        assert error["type"] == "custom_validation_failed"
        assert f"motion_module: '{placeholder}' is not in models/avsyncd." in message
        assert "lzhangbj/ASVA" in message and "checkpoint-37000/modules" in message
        assert "ComfyUI/models/avsyncd/avsync15" in message
        (error,) = comfy_validation("AVSyncImageBindLoader", {"encoder_name": "imagebind_huge.pth"})
        assert "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth" in error["details"]
        assert "encoder_name: 'imagebind_huge.pth' is not in models/imagebind." in error["details"]

        (tmp_path / "avsyncd").mkdir()
        (tmp_path / "avsyncd" / "avsync15").symlink_to(official_tiny_c, target_is_directory=True)
        (tmp_path / "imagebind").mkdir()
        (tmp_path / "imagebind" / "imagebind_huge.pth").write_bytes(b"")
        assert comfy_validation("AVSyncMotionModuleLoader", {"motion_module": placeholder}) == [], "put as told: ok"
        assert comfy_validation("AVSyncImageBindLoader", {"encoder_name": "imagebind_huge.pth"}) == []
        assert isinstance(
            model_paths.check_choice(
                "motion_module", "avsyncd", "other [AVSyncD folder]", model_paths.motion_choices()
            ),
            str,
        )
