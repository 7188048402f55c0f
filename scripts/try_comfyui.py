"""Try the pack in ComfyUI with one command: start a ComfyUI with this checkout as a custom node and open the address.

    .venv/bin/python scripts/try_comfyui.py [--port 8188] [--listen 127.0.0.1] [-- more ComfyUI arguments]

The ComfyUI is COMFYUI_PATH's checkout, else the newest one scripts/setup_env.sh provisioned into .hosts/comfyui-*.
It runs from its own folder with ComfyUI's --base-directory set to .hosts/try-comfyui/ of this checkout (or
--base-directory): models, inputs, outputs, settings and the custom_nodes/ link to this checkout live there, so
the ComfyUI checkout itself is never written to. The shipped workflows are copied into the page's workflow list
(user/default/workflows/), the pack's model folders are created with a note of what goes where, and the address is
printed once the server answers. Ctrl-C stops it. Bad input (no ComfyUI, a busy port) gives one line and status 2.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from avsync_core.cli import run_command  # noqa: E402
from avsync_core.errors import InvalidInputError  # noqa: E402

PROG = "try_comfyui"
HOSTS = REPO / ".hosts"
PACK_LINK = "comfyui-avsync"  # the pack's folder name under custom_nodes/
BOOT_TIMEOUT_S = 300.0
# What goes into each model folder (models/<folder>/), as the shipped workflows select it.
MODEL_NOTES = {
    "checkpoints": "a Stable Diffusion 1.5 checkpoint, e.g. v1-5-pruned-emaonly.safetensors "
    "(https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5)",
    "avsyncd": "the AVSyncD weights: the AVSync15 checkpoint (Google Drive link in the lzhangbj/ASVA README); copy its "
    "avsync15_audio-cond_cfg/ckpts/checkpoint-37000/modules folder here as avsync15/",
    "imagebind": "Meta's imagebind_huge.pth (https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth)",
    "avsync_classifier": "optional, for the sync score: the AVSync classifier folder (lzhangbj/ASVA README)",
}


def is_comfyui(folder: Path) -> bool:
    return (folder / "main.py").is_file() and (folder / "comfy").is_dir()


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def find_comfyui(environ: dict[str, str], hosts: Path) -> Path:
    """COMFYUI_PATH's checkout, else the newest provisioned .hosts/comfyui-<version>[/ComfyUI]."""
    chosen = environ.get("COMFYUI_PATH")
    if chosen:
        folder = Path(chosen).expanduser().resolve()
        if not is_comfyui(folder):
            raise InvalidInputError(f"COMFYUI_PATH={chosen} holds no ComfyUI (it needs main.py and comfy/).")
        return folder
    found = [
        folder
        for host in sorted(hosts.glob("comfyui-*"), key=lambda p: _version(p.name), reverse=True)
        for folder in (host, host / "ComfyUI")
        if is_comfyui(folder)
    ]
    if not found:
        raise InvalidInputError(
            f"No ComfyUI found: run scripts/setup_env.sh (it provisions one into {hosts}) "
            "or set COMFYUI_PATH to a ComfyUI checkout."
        )
    return found[0].resolve()


def check_port_free(listen: str, port: int) -> None:
    host = "127.0.0.1" if listen in ("", "0.0.0.0", "::") else listen.split(",")[0]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise InvalidInputError(
                f"Port {port} on {host} is not free ({exc.strerror}): stop what uses it or choose another with --port."
            ) from None


def prepare_base(base: Path) -> list[str]:
    """Folders, the link to this checkout and the workflows; returns what the user should know about the copies."""
    notes = []
    for sub in ("input", "output", "temp", "custom_nodes", "user/default/workflows"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for folder in MODEL_NOTES:
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
    (base / "models" / "WHAT_GOES_WHERE.txt").write_text(
        "".join(f"{folder}/: {what}\n" for folder, what in MODEL_NOTES.items())
    )
    link = base / "custom_nodes" / PACK_LINK
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise InvalidInputError(f"{link} exists and is not a link to this checkout: move it away.")
    link.symlink_to(REPO, target_is_directory=True)
    for workflow in sorted((REPO / "workflows").glob("*.json")):
        target = base / "user" / "default" / "workflows" / workflow.name
        if not target.exists():
            shutil.copyfile(workflow, target)
        elif not filecmp.cmp(workflow, target, shallow=False):
            notes.append(f"kept your edited {target.name} (the shipped one is {workflow})")
    return notes


def host_pins(root: Path, hosts: Path) -> Path | None:
    """The host's own pinned packages that scripts/setup_env.sh put into .hosts/pins-<version>: the shared venv holds
    the newest host's, on which an older ComfyUI's server can stop."""
    version_file = root / "comfyui_version.py"
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_file.read_text() if version_file.is_file() else "")
    pins = hosts / f"pins-{match.group(1)}" if match else None
    return pins if pins is not None and pins.is_dir() else None


def comfyui_command(root: Path, base: Path, listen: str, port: int, extra: list[str]) -> list[str]:
    command = [sys.executable, str(root / "main.py"), "--base-directory", str(base), "--listen", listen]
    command += ["--port", str(port), "--database-url", f"sqlite:///{base / 'user' / 'comfyui.db'}"]
    if "--cpu" not in extra and not _has_accelerator():
        command.append("--cpu")
    return command + extra


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())


def wait_until_answering(process: subprocess.Popen, url: str) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise InvalidInputError(f"ComfyUI stopped while starting (exit status {process.returncode}; log above).")
        try:
            with opener.open(url + "/system_stats", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise InvalidInputError(f"ComfyUI did not answer at {url} within {BOOT_TIMEOUT_S:.0f} s (log above).")


def stop(process: subprocess.Popen) -> None:
    """Ask ComfyUI to stop as Ctrl-C would, then make sure it and what it started are gone."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (also read by tests/test_docs.py)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=int, default=8188, help="the port the page is served on (default 8188)")
    parser.add_argument(
        "--listen", default="127.0.0.1", help="the address to listen on (default 127.0.0.1; 0.0.0.0 for all)"
    )
    parser.add_argument(
        "--base-directory",
        type=Path,
        default=HOSTS / "try-comfyui",
        help="where models, inputs, outputs and settings live (default .hosts/try-comfyui of this checkout)",
    )
    parser.add_argument("comfyui_args", nargs="*", help="after --: more arguments for ComfyUI's main.py")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        root = find_comfyui(dict(os.environ), HOSTS)
        check_port_free(args.listen, args.port)
        base = args.base_directory.expanduser().resolve()
        notes = prepare_base(base)
        command = comfyui_command(root, base, args.listen, args.port, args.comfyui_args)
        print(f"Starting ComfyUI from {root} with this pack (base directory {base})", flush=True)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        # Ctrl-C (SIGINT) stops it even when started where SIGINT is ignored, as in a shell's background job; a
        # handled signal is reset to the default in ComfyUI's process, so its own Ctrl-C handling works too.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        env = dict(os.environ)
        pins = host_pins(root, HOSTS)
        if pins is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pins), env.get("PYTHONPATH")]))
        process = subprocess.Popen(command, cwd=root, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            host = "127.0.0.1" if args.listen in ("0.0.0.0", "::") else args.listen.split(",")[0]
            url = f"http://{host}:{args.port}"
            wait_until_answering(process, url)
            print(f"\nAVSync in ComfyUI: {url}", flush=True)
            print("  Workflows (left bar): " + ", ".join(p.name for p in sorted((REPO / "workflows").glob("*.json"))))
            print(f"  Models go into {base / 'models'}:")
            for folder, what in MODEL_NOTES.items():
                print(f"    {folder}/  {what}")
            for note in notes:
                print(f"  Note: {note}")
            print("  Ctrl-C stops it.\n", flush=True)
            return process.wait()
        except KeyboardInterrupt:
            print(f"{PROG}: stopping ComfyUI", file=sys.stderr)
            return 0
        finally:
            stop(process)

    return run_command(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
