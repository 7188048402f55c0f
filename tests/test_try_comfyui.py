"""scripts/try_comfyui.py: the one command that starts a ComfyUI with the pack, its workflows and model folders."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import comfy_host

SCRIPT = comfy_host.REPO_ROOT / "scripts" / "try_comfyui.py"
MODEL_FOLDERS = ("checkpoints", "avsyncd", "imagebind", "avsync_classifier")


def load_script():
    spec = importlib.util.spec_from_file_location("try_comfyui", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_comfyui(folder: Path) -> Path:
    (folder / "comfy").mkdir(parents=True)
    (folder / "main.py").write_text("raise SystemExit('not a real ComfyUI')\n")
    return folder


def run(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_newest_provisioned_host_is_chosen_unless_comfyui_path_names_one(tmp_path):
    script = load_script()
    hosts = tmp_path / ".hosts"
    for version, nested in (("0.3.64", False), ("0.3.75", True), ("0.3.9", False)):
        fake_comfyui(hosts / f"comfyui-{version}" / ("ComfyUI" if nested else ""))
    (hosts / "comfyui-0.4.0").mkdir()  # an unfinished provisioning holds no ComfyUI
    assert script.find_comfyui({}, hosts) == (hosts / "comfyui-0.3.75" / "ComfyUI").resolve()
    chosen = fake_comfyui(tmp_path / "mine")
    assert script.find_comfyui({"COMFYUI_PATH": str(chosen)}, hosts) == chosen.resolve()
    with pytest.raises(script.InvalidInputError, match="No ComfyUI found: run scripts/setup_env.sh"):
        script.find_comfyui({}, tmp_path / "nothing")


def test_an_older_hosts_own_pins_are_found_by_its_version(tmp_path):
    script = load_script()
    root = fake_comfyui(tmp_path / "comfyui-0.3.52")
    (root / "comfyui_version.py").write_text('__version__ = "0.3.52"\n')
    assert script.host_pins(root, tmp_path) is None
    (tmp_path / "pins-0.3.52").mkdir()
    (tmp_path / "pins-0.3.75").mkdir()
    assert script.host_pins(root, tmp_path) == tmp_path / "pins-0.3.52"


def test_a_comfyui_path_without_comfyui_is_one_line_and_status_2(tmp_path):
    env = dict(os.environ, COMFYUI_PATH=str(tmp_path))
    result = run("--base-directory", str(tmp_path / "base"), env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"try_comfyui: error: COMFYUI_PATH={tmp_path} holds no ComfyUI (it needs main.py and comfy/)."
    ]
    assert not (tmp_path / "base").exists(), "nothing is prepared for a ComfyUI that is not there"


def test_a_busy_port_is_one_line_and_status_2(tmp_path):
    env = dict(os.environ, COMFYUI_PATH=str(fake_comfyui(tmp_path / "ComfyUI")))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("--port", str(port), "--base-directory", str(tmp_path / "base"), env=env)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"try_comfyui: error: Port {port} on 127.0.0.1 is not free")
    assert "--port" in line


@pytest.mark.host
@pytest.mark.slow
def test_it_serves_the_pack_its_workflows_and_model_folders_and_ctrl_c_stops_it(tmp_path):
    root = comfy_host.require_comfyui()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = tmp_path / "base"
    env = dict(os.environ, COMFYUI_PATH=str(root), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", DO_NOT_TRACK="1")
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--port", str(port), "--base-directory", str(base), "--", "--disable-api-nodes"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        address = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while f"AVSync in ComfyUI: {address}\n" not in lines:
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines[-60:])
            time.sleep(0.5)

        def get(path: str):
            with opener.open(address + path, timeout=60) as response:
                return json.loads(response.read())

        nodes = get("/object_info")
        assert {"AVSyncLoadAudio", "AVSyncMotionModuleLoader", "AVSyncSampler"} <= set(nodes)
        assert not [line for line in lines if "IMPORT FAILED" in line]
        shipped = sorted(p.name for p in (comfy_host.REPO_ROOT / "workflows").glob("*.json"))
        assert sorted(get("/userdata?dir=workflows&recurse=true&split=false")) == shipped  # the page's list
        for folder in MODEL_FOLDERS:
            assert (base / "models" / folder).is_dir()
            assert f"    {folder}/  " in "".join(lines), "the printed note says what goes there"
        assert (base / "custom_nodes" / "comfyui-avsync").resolve() == comfy_host.REPO_ROOT

        os.kill(process.pid, signal.SIGINT)  # what Ctrl-C sends to the command
        assert process.wait(timeout=60) == 0
        reader.join(timeout=10)
        with pytest.raises(OSError):
            opener.open(address + "/system_stats", timeout=5)
    finally:
        if process.poll() is None:  # the command stops its ComfyUI on SIGINT; kill only what is left after that
            os.kill(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
