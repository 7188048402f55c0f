"""Harness for host tests: run ComfyUI itself, in-process or as a real server, next to the plugin.

It lives outside conftest.py so that only the tests that ask for ComfyUI pay for importing it, and so
that nothing here leaks into the host-independent tests. Test modules build their own fixtures from
these plain functions.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.machinery
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
import urllib.error
import urllib.parse
import urllib.request
import uuid
import wave
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COMFYUI_PATH = Path("/opt/ComfyUI")
HOSTS_DIR = REPO_ROOT / ".hosts"  # the test hosts scripts/setup_env.sh provisions (docs/test-hosts.md)
PLUGIN_PACKAGE = "comfyui_avsync"
PLUGIN_FOLDER_NAME = "comfyui-avsync"  # the name the plugin gets under the server's custom_nodes/
SKIP_MESSAGE = (
    "No ComfyUI host: run scripts/setup_env.sh (it provisions the test hosts into .hosts/, see docs/test-hosts.md) "
    "or set COMFYUI_PATH to a ComfyUI checkout (the folder must hold comfy/ and main.py; without COMFYUI_PATH, "
    "{d} is tried)."
).format(d=DEFAULT_COMFYUI_PATH)

# Top-level module names a ComfyUI checkout provides; one imported from elsewhere would shadow ComfyUI's.
_COMFY_TOP_LEVEL = (
    "comfy",
    "comfy_extras",
    "comfy_execution",
    "comfy_api",
    "folder_paths",
    "nodes",
    "node_helpers",
    "latent_preview",
    "execution",
    "server",
    "utils",
    "app",
)


# --------------------------------------------------------------------------------------------------
# Finding ComfyUI
# --------------------------------------------------------------------------------------------------


def is_comfyui(folder: Path) -> bool:
    return (folder / "comfy").is_dir() and (folder / "main.py").is_file()


def configured_checkout() -> Path | None:
    """The checkout a developer points at: COMFYUI_PATH, else /opt/ComfyUI if it looks like one.

    A COMFYUI_PATH that is set but holds no ComfyUI is a mistake in the test setup, not a reason to skip: it fails.
    """
    env = os.environ.get("COMFYUI_PATH")
    if env:
        candidate = Path(env).expanduser()
        if not is_comfyui(candidate):
            pytest.fail(
                f"COMFYUI_PATH={env} holds no ComfyUI checkout (it needs comfy/ and main.py). "
                "Point it at a ComfyUI checkout, or unset it to test only the provisioned hosts.",
                pytrace=False,
            )
        return candidate.resolve()
    return DEFAULT_COMFYUI_PATH.resolve() if is_comfyui(DEFAULT_COMFYUI_PATH) else None


def comfyui_version(root: Path) -> str:
    text = (root / "comfyui_version.py").read_text() if (root / "comfyui_version.py").is_file() else ""
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
    return match.group(1) if match else "unknown"


def host_pins(root: Path) -> Path | None:
    """The host's own workflow-templates and embedded-docs packages, where they differ from the venv's.

    One venv serves every host and holds the newest host's pins; an older server needs its own (0.3.64 serves
    the templates folder that newer template packages no longer have), so scripts/provision_hosts.py installs them
    into .hosts/pins-<version> and the server starts with that folder first on its PYTHONPATH.
    """
    folder = HOSTS_DIR / f"pins-{comfyui_version(root)}"
    return folder if folder.is_dir() else None


_SELECTED_HOST: Path | None = None


def select_host(root: Path) -> None:
    """Make `root` the ComfyUI this process tests (host_matrix picks one host per process)."""
    global _SELECTED_HOST
    _SELECTED_HOST = Path(root).resolve()


def comfyui_path() -> Path | None:
    """The ComfyUI this process tests: the host host_matrix selected, else the configured checkout."""
    return _SELECTED_HOST if _SELECTED_HOST is not None else configured_checkout()


def require_comfyui() -> Path:
    """The host, or a pytest skip that says how to get one; under CI=true no host is a broken setup and fails."""
    root = comfyui_path()
    if root is None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(SKIP_MESSAGE + " (CI=true: the host tests must run)", pytrace=False)
        pytest.skip(SKIP_MESSAGE)
    return root


# --------------------------------------------------------------------------------------------------
# In-process ComfyUI
# --------------------------------------------------------------------------------------------------

_IN_PROCESS_BASE: Path | None = None
_IMPORTED_ROOT: Path | None = None


def _remove_tree_at_exit(path: Path) -> None:
    atexit.register(shutil.rmtree, path, ignore_errors=True)


def import_comfy() -> Path:
    """Import ComfyUI's own modules into this process, forced onto the CPU, and return the checkout.

    ComfyUI reads its settings from `comfy.cli_args.args`, which is built when that module is first
    imported. `comfy.options.args_parsing` is False unless main.py flips it, so the module parses an
    empty argv (never pytest's) and the defaults can be edited before the modules that read them load:
    `cpu` before comfy.model_management (which fixes the device at import), `base_directory` before
    folder_paths (which fixes models/, input/, output/ at import). The base directory is a throwaway
    temp folder, so in-process tests never write into the checkout and see empty model folders.
    """
    global _IN_PROCESS_BASE, _IMPORTED_ROOT
    root = require_comfyui()
    if _IMPORTED_ROOT == root:
        return root
    _check_not_shadowed(root)
    if str(root) in sys.path:
        sys.path.remove(str(root))
    sys.path.insert(0, str(root))

    # isort: off
    import comfy.options  # noqa: F401  (must precede comfy.cli_args; parsing stays off)
    import comfy.cli_args
    # isort: on

    args = comfy.cli_args.args
    if "comfy.model_management" not in sys.modules:
        args.cpu = True
    if "folder_paths" not in sys.modules:
        _IN_PROCESS_BASE = Path(tempfile.mkdtemp(prefix="avsync-comfy-inproc-"))
        _remove_tree_at_exit(_IN_PROCESS_BASE)
        args.base_directory = str(_IN_PROCESS_BASE)

    import comfy.model_management

    device = comfy.model_management.get_torch_device()
    if device.type != "cpu":
        raise RuntimeError(f"ComfyUI was imported before import_comfy() and runs on {device}; host tests need the CPU.")

    import comfy.model_base  # noqa: F401
    import comfy.model_detection  # noqa: F401
    import comfy.model_patcher  # noqa: F401
    import comfy.sample  # noqa: F401
    import comfy.samplers  # noqa: F401
    import comfy.supported_models  # noqa: F401
    import comfy.utils  # noqa: F401
    import folder_paths  # noqa: F401

    # isort: off
    import utils.extra_config  # noqa: F401  (before nodes, as in main.py: nodes puts comfy/ first on sys.path)
    import nodes  # noqa: F401
    # isort: on

    _check_not_shadowed(root)
    _IMPORTED_ROOT = root
    return root


def in_process_base_directory() -> Path | None:
    """The temp base directory the in-process folder_paths points at (None if ComfyUI was imported elsewhere)."""
    return _IN_PROCESS_BASE


def _check_not_shadowed(root: Path) -> None:
    """Fail loudly when e.g. the plugin's nodes/ package was imported as top-level `nodes` before ComfyUI's."""
    for name in _COMFY_TOP_LEVEL:
        module = sys.modules.get(name)
        if module is None:
            continue
        origin = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), None)
        if origin is None or not Path(origin).resolve().is_relative_to(root):
            raise RuntimeError(
                f"Module '{name}' was imported from {origin}, not from the ComfyUI checkout {root}; "
                "call import_comfy() before anything imports a module of that name."
            )


def load_plugin_package(
    name: str = PLUGIN_PACKAGE, root: Path = REPO_ROOT, *, with_comfy: bool = True
) -> types.ModuleType:
    """Import the repository root as package `name`, so `nodes/` can use `from ..avsync_core import x`.

    ComfyUI loads the plugin the same way (a package built from the folder's __init__.py), only under a
    name derived from its path. The root __init__.py runs only once `nodes/__init__.py` exists: before
    that (the nodes are not written yet) the folder is set up as a bare package, so `name.avsync_core`
    still imports. `with_comfy` imports ComfyUI first, because the plugin's __init__ and nodes import
    ComfyUI modules.
    """
    if with_comfy:
        import_comfy()
    root = Path(root).resolve()
    existing = sys.modules.get(name)
    if existing is not None:
        locations = [Path(p).resolve() for p in getattr(existing, "__path__", [])]
        if root in locations:
            return existing
        raise RuntimeError(f"A different module is already imported as '{name}': {locations}")

    init = root / "__init__.py"
    if init.is_file() and (root / "nodes" / "__init__.py").is_file():
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(root)])
    else:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(root)]
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        if spec.loader is not None:
            spec.loader.exec_module(module)
    except BaseException:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        raise
    return module


# --------------------------------------------------------------------------------------------------
# ComfyUI's own SD1.5-family model for the golden unet_tiny_c
# --------------------------------------------------------------------------------------------------


def is_avsync_only_key(name: str) -> bool:
    """The AVSyncD additions (conv_temp, *_temp, *_audio); everything else is SD1.5's own UNet."""
    return "_temp" in name or "_audio" in name


def comfy_unet_config_from_diffusers(config: Mapping[str, Any]) -> dict[str, Any]:
    """Translate a diffusers UNet config (the golden config.json) into ComfyUI's UNetModel kwargs.

    ComfyUI's UNetModel hard-codes GroupNorm(32) and takes one head count for every block, and
    diffusers' `attention_head_dim` is a head count (see golden/README.md), so both are checked here.
    """
    if config.get("norm_num_groups") != 32:
        raise ValueError(f"ComfyUI's UNetModel uses GroupNorm(32); this config has {config.get('norm_num_groups')}")
    heads = config["attention_head_dim"]
    if not isinstance(heads, int):
        raise ValueError(f"ComfyUI's UNetModel takes one head count for all blocks, got {heads}")
    channels = list(config["block_out_channels"])
    layers = config["layers_per_block"]
    model_channels = channels[0]

    def depth(block_type: str) -> int:
        return 1 if "CrossAttn" in block_type else 0

    down = [depth(t) for t in config["down_block_types"] for _ in range(layers)]
    # ComfyUI lists the output blocks shallowest first; diffusers' up_blocks go deepest first.
    up = [depth(t) for t in reversed(config["up_block_types"]) for _ in range(layers + 1)]
    return {
        "use_checkpoint": False,
        "image_size": 32,
        "use_spatial_transformer": True,
        "legacy": False,
        "adm_in_channels": None,
        "in_channels": config["in_channels"],
        "out_channels": config["out_channels"],
        "model_channels": model_channels,
        "num_res_blocks": [layers] * len(channels),
        "channel_mult": [c // model_channels for c in channels],
        "transformer_depth": down,
        "transformer_depth_output": up,
        "transformer_depth_middle": depth(config["mid_block_type"]),
        "use_linear_in_transformer": bool(config["use_linear_projection"]),
        "context_dim": config["cross_attention_dim"],
        "num_heads": heads,
        "num_head_channels": -1,
        "use_temporal_resblock": False,
        "use_temporal_attention": False,
    }


def sd15_model_config(unet_config: Mapping[str, Any], dtype: torch.dtype = torch.float32):
    """ComfyUI's SD15 model config with a replaced unet_config.

    SD15.__init__ copies `unet_extra_config` (num_heads 8, num_head_channels -1) over whatever it is
    given, so the head settings are put back afterwards.
    """
    import comfy.supported_models

    model_config = comfy.supported_models.SD15(dict(unet_config))
    model_config.unet_config["num_heads"] = unet_config["num_heads"]
    model_config.unet_config["num_head_channels"] = unet_config["num_head_channels"]
    model_config.set_inference_dtype(dtype, None)
    return model_config


def build_comfy_tiny_unet(golden_dir: Path):
    """ComfyUI's own SD1.5 BaseModel for golden/unet_tiny_c, holding only its 684 SD1.5 tensors, on CPU.

    Returns (ModelPatcher, unet_config). Keys go through comfy.utils.unet_to_diffusers, the map ComfyUI
    itself uses for diffusers-format UNets, and every model key must be filled exactly once.
    """
    import_comfy()
    import comfy.model_patcher
    import comfy.utils
    from safetensors.torch import load_file

    folder = Path(golden_dir) / "unet_tiny_c"
    config = json.loads((folder / "config.json").read_text())
    unet_config = comfy_unet_config_from_diffusers(config)
    model_config = sd15_model_config(unet_config)
    cpu = torch.device("cpu")
    model = model_config.get_model({}, device=cpu)

    diffusers_to_comfy = comfy.utils.unet_to_diffusers(model_config.unet_config)
    base = {k: v for k, v in load_file(str(folder / "unet_tiny_c.safetensors")).items() if not is_avsync_only_key(k)}
    unmapped = sorted(k for k in base if k not in diffusers_to_comfy)
    if unmapped:
        raise AssertionError(f"{len(unmapped)} golden tensors have no ComfyUI name, e.g. {unmapped[:5]}")
    comfy_sd = {diffusers_to_comfy[k]: v for k, v in base.items()}
    missing, unexpected = model.diffusion_model.load_state_dict(comfy_sd, strict=False)
    if missing or unexpected:
        raise AssertionError(f"tiny UNet load: missing {missing}, unexpected {unexpected}")
    model.eval()
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
    return patcher, dict(model_config.unet_config)


# --------------------------------------------------------------------------------------------------
# A random SD1.5 checkpoint under SD1.5's real key names
# --------------------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}


def sd15_checkpoint_layout() -> dict[str, tuple[tuple[int, ...], str]]:
    """Every key of a single-file SD1.5 checkpoint with its shape and init kind ("random", "one", "zero").

    Built from ComfyUI itself: the SD1.5 architecture from the LDM config ComfyUI ships
    (models/configs/v1-inference.yaml, converted by comfy.model_detection.convert_config and completed
    with the SD15 model config's fixed settings), the UNet, CLIP-L and VAE instantiated on the meta
    device, and the checkpoint names produced by BaseModel.state_dict_for_saving, the path
    CheckpointSave uses.
    """
    import yaml

    root = import_comfy()
    import comfy.model_detection
    import comfy.supported_models
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ldm = yaml.safe_load((root / "models" / "configs" / "v1-inference.yaml").read_text())["model"]["params"]
    unet_config = {
        **comfy.model_detection.convert_config(ldm["unet_config"]["params"]),
        **comfy.supported_models.SD15.unet_config,
        "use_checkpoint": False,
    }
    model_config = comfy.model_detection.model_config_from_unet_config(unet_config)
    if type(model_config) is not comfy.supported_models.SD15:
        raise AssertionError(f"v1-inference.yaml did not map to ComfyUI's SD15 config but to {type(model_config)}")
    vae_params = ldm["first_stage_config"]["params"]
    meta = torch.device("meta")
    with meta:
        model = model_config.get_model({}, device=meta)
        clip = model_config.clip_target().clip(device=meta)
        vae = AutoencoderKL(ddconfig=vae_params["ddconfig"], embed_dim=vae_params["embed_dim"])

    def kinds(module: torch.nn.Module) -> dict[str, str]:
        out = {}
        for module_name, sub in module.named_modules():
            is_norm = isinstance(sub, (torch.nn.GroupNorm, torch.nn.LayerNorm))
            for param_name, param in sub.named_parameters(recurse=False):
                key = f"{module_name}.{param_name}" if module_name else param_name
                if is_norm:
                    out[key] = "one" if param_name == "weight" else "zero"
                elif param.dim() >= 2:
                    out[key] = "random"
                else:
                    out[key] = "zero"  # biases
        return out

    # The same key transforms as state_dict_for_saving, applied to the init kinds.
    kind_of = {}
    kind_of.update(model_config.process_unet_state_dict_for_saving(kinds(model.diffusion_model)))
    kind_of.update(model_config.process_clip_state_dict_for_saving(kinds(clip)))
    kind_of.update(model_config.process_vae_state_dict_for_saving(kinds(vae)))
    saved = model.state_dict_for_saving(clip.state_dict(), vae.state_dict())
    if set(saved) != set(kind_of):
        raise AssertionError(f"layout mismatch: {sorted(set(saved) ^ set(kind_of))[:10]}")
    return {k: (tuple(saved[k].shape), kind_of[k]) for k in sorted(saved)}


def write_random_sd15_checkpoint(path: Path | str, dtype: torch.dtype = torch.float16, seed: int = 0) -> Path:
    """Write a random-weight SD1.5 checkpoint (.safetensors) that CheckpointLoaderSimple loads as SD15.

    Matrices and convs are N(0, 1/fan_in), norms weight 1 / bias 0, other biases 0, which keeps fp32
    activations finite through UNet, CLIP and VAE. About 1.07 B values: two threads generate tensors
    while they are written in order, so only a few tensors are in memory at once; each tensor has its
    own seeded generator, so the file is the same for the same seed.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"expected a .safetensors path, got {path}")
    layout = sd15_checkpoint_layout()
    item = torch.empty((), dtype=dtype).element_size()
    header: dict[str, Any] = {"__metadata__": {"format": "pt", "generator": "tests/comfy_host.py", "seed": str(seed)}}
    offset = 0
    for key, (shape, _kind) in layout.items():
        size = item * math.prod(shape)
        header[key] = {
            "dtype": _SAFETENSORS_DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)

    def make(index: int, shape: tuple[int, ...], kind: str) -> torch.Tensor:
        if kind == "one":
            return torch.ones(shape, dtype=dtype)
        if kind == "zero":
            return torch.zeros(shape, dtype=dtype)
        # One generator per tensor, so two worker threads give the same file as one.
        generator = torch.Generator().manual_seed(seed * 100_003 + index)
        return torch.randn(shape, generator=generator, dtype=dtype).mul_(math.prod(shape[1:]) ** -0.5)

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as f, ThreadPoolExecutor(max_workers=2) as pool:
            f.write(len(header_bytes).to_bytes(8, "little"))
            f.write(header_bytes)
            pending: deque = deque()
            for index, (shape, kind) in enumerate(layout.values()):
                pending.append(pool.submit(make, index, shape, kind))
                while len(pending) > 4 or (index == len(layout) - 1 and pending):
                    f.write(memoryview(pending.popleft().result().reshape(-1).view(torch.uint8).numpy()))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return path


_SESSION_CHECKPOINT: Path | None = None


def session_random_sd15_checkpoint() -> Path:
    """One random SD1.5 checkpoint per test session (about 2.1 GB in fp16), deleted when the process exits."""
    global _SESSION_CHECKPOINT
    if _SESSION_CHECKPOINT is None or not _SESSION_CHECKPOINT.is_file():
        folder = Path(tempfile.mkdtemp(prefix="avsync-sd15-"))
        _remove_tree_at_exit(folder)
        _SESSION_CHECKPOINT = write_random_sd15_checkpoint(folder / "random_sd15.safetensors")
    return _SESSION_CHECKPOINT


def checkpoint_meta_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """The checkpoint's keys as meta tensors (shape and dtype, no data): enough for ComfyUI's detection."""
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            sliced = f.get_slice(key)
            dtype = {v: k for k, v in _SAFETENSORS_DTYPES.items()}[sliced.get_dtype()]
            out[key] = torch.empty(sliced.get_shape(), dtype=dtype, device="meta")
    return out


# --------------------------------------------------------------------------------------------------
# A real ComfyUI server
# --------------------------------------------------------------------------------------------------


class ComfyServerError(RuntimeError):
    """The server did not start, rejected a prompt, or a prompt failed; the message carries the server's log."""


class ComfyServer:
    """A headless `main.py --cpu` on 127.0.0.1 with its own throwaway base directory.

    `plugin=True` links the repository into custom_nodes/ as `comfyui-avsync` and makes start() fail when
    ComfyUI reports that it could not import it; `plugin=False` leaves it out. `custom_nodes` links more
    node packs (name -> folder or .py file); ComfyUI logs their import failures, see import_failures(). `env`
    adds environment variables for the server process.
    """

    MODEL_FOLDERS = (
        "checkpoints",
        "avsyncd",
        "imagebind",
        "vae",
        "loras",
        "text_encoders",
        "diffusion_models",
        "audio_encoders",
        "configs",
    )

    def __init__(
        self,
        *,
        plugin: bool = True,
        boot_timeout: float = 180.0,
        extra_model_paths: Mapping[str, Mapping[str, str]] | None = None,
        custom_nodes: Mapping[str, Path] | None = None,
        extra_args: tuple[str, ...] = (),
        root: Path | None = None,
        env: Mapping[str, str] | None = None,
    ):
        self.root = root or require_comfyui()
        self.plugin = plugin
        self.custom_nodes = dict(custom_nodes or {})
        self.boot_timeout = boot_timeout
        self.extra_model_paths = extra_model_paths
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.base_dir: Path | None = None
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._log_file = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy

    # --- paths -------------------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self._base / "models"

    @property
    def input_dir(self) -> Path:
        return self._base / "input"

    @property
    def output_dir(self) -> Path:
        return self._base / "output"

    @property
    def user_dir(self) -> Path:
        return self._base / "user"

    @property
    def custom_nodes_dir(self) -> Path:
        return self._base / "custom_nodes"

    @property
    def log_path(self) -> Path:
        return self._base / "server.log"

    @property
    def _base(self) -> Path:
        if self.base_dir is None:
            raise RuntimeError("the server has not been started")
        return self.base_dir

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- life cycle --------------------------------------------------------------------------------
    def __enter__(self) -> ComfyServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="avsync-comfy-server-"))
        try:
            self._prepare_base()
            self._launch()
            self._wait_until_ready()
            if self.plugin:
                self._check_plugin_imported()
        except BaseException:
            self.stop()
            raise

    def _prepare_base(self) -> None:
        for sub in ("input", "output", "temp", "user/default", "custom_nodes"):
            (self._base / sub).mkdir(parents=True, exist_ok=True)
        for folder in self.MODEL_FOLDERS:
            (self.models_dir / folder).mkdir(parents=True, exist_ok=True)
        links = dict(self.custom_nodes)
        if self.plugin:
            links[PLUGIN_FOLDER_NAME] = REPO_ROOT
        for name, source in links.items():
            source = Path(source).resolve()
            (self.custom_nodes_dir / name).symlink_to(source, target_is_directory=source.is_dir())

    def _command(self) -> list[str]:
        command = [
            sys.executable,
            str(self.root / "main.py"),
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--base-directory",
            str(self._base),
            "--disable-api-nodes",
            "--disable-auto-launch",
            "--database-url",
            f"sqlite:///{self._base / 'user' / 'comfyui.db'}",
        ]
        if self.extra_model_paths:
            config = self._base / "extra_model_paths.yaml"
            config.write_text(json.dumps(self.extra_model_paths))  # JSON is valid YAML
            command += ["--extra-model-paths-config", str(config)]
        return command + list(self.extra_args)

    def _launch(self) -> None:
        self.port = _free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", DO_NOT_TRACK="1", TQDM_DISABLE="1")
        env.update(self.env)
        pins = host_pins(self.root)
        if pins is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pins), env.get("PYTHONPATH")]))
        self._log_file = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            self._command(),
            cwd=str(self.root),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.boot_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ComfyServerError(
                    f"ComfyUI exited with code {self.process.returncode} while starting.\n{self.log_tail()}"
                )
            try:
                self.get_json("/system_stats", timeout=2.0)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.25)
        raise ComfyServerError(f"ComfyUI did not answer within {self.boot_timeout:.0f} s.\n{self.log_tail()}")

    def _check_plugin_imported(self) -> None:
        failures = [line for line in self.import_failures() if PLUGIN_FOLDER_NAME in line]
        if failures:
            raise ComfyServerError(f"ComfyUI could not import the plugin ({failures[0].strip()}).\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server and everything it started (SIGTERM, then SIGKILL), then delete the base directory."""
        if self.process is not None and self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait(timeout=15)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # --- logs --------------------------------------------------------------------------------------
    def log_text(self) -> str:
        if self.base_dir is None or not self.log_path.is_file():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 120) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"--- ComfyUI log (last {lines} lines) ---\n{tail}\n--- end of log ---"

    def import_failures(self) -> list[str]:
        """ComfyUI's "N seconds (IMPORT FAILED): <path>" lines (custom nodes) and "IMPORT FAILED: <file>" lines."""
        return [line for line in self.log_text().splitlines() if "IMPORT FAILED" in line]

    # --- HTTP --------------------------------------------------------------------------------------
    def _request(
        self, path: str, data: bytes | None = None, timeout: float = 30.0, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, data=data, headers=dict(headers or {}))
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        status, body = self._request(path, timeout=timeout)
        if status != 200:
            raise ComfyServerError(f"GET {path} returned {status}: {body[:2000]!r}")
        return json.loads(body)

    def post_json(self, path: str, payload: Any, timeout: float = 30.0) -> tuple[int, Any]:
        status, body = self._request(path, json.dumps(payload).encode(), timeout, {"Content-Type": "application/json"})
        try:
            return status, json.loads(body) if body else None
        except json.JSONDecodeError:
            return status, body.decode(errors="replace")

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """/object_info (every node) or /object_info/<class> (one node; {} when unknown)."""
        path = "/object_info" if node_class is None else "/object_info/" + urllib.parse.quote(node_class)
        return self.get_json(path, timeout=60.0)

    def post_prompt(self, api_prompt: Mapping[str, Any]) -> str:
        """Queue an API-format prompt; a rejected prompt raises with ComfyUI's validation errors."""
        status, reply = self.post_json("/prompt", {"prompt": api_prompt, "client_id": uuid.uuid4().hex})
        if status != 200 or not isinstance(reply, dict) or "prompt_id" not in reply:
            raise ComfyServerError(
                f"ComfyUI rejected the prompt (HTTP {status}):\n"
                f"{json.dumps(reply, indent=1)[:6000]}\n{self.log_tail(40)}"
            )
        return reply["prompt_id"]

    def wait_for(self, prompt_id: str, timeout: float = 300.0) -> dict[str, Any]:
        """The prompt's history entry once it has run; raises with the node's error and the log if it failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ComfyServerError(f"ComfyUI exited with code {self.process.returncode}.\n{self.log_tail()}")
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") != "success":
                    raise ComfyServerError(
                        f"Prompt {prompt_id} failed:\n{_describe_failure(status)}\n{self.log_tail()}"
                    )
                return entry
            time.sleep(0.2)
        self.post_json("/interrupt", {"prompt_id": prompt_id})
        raise ComfyServerError(f"Prompt {prompt_id} did not finish within {timeout:.0f} s.\n{self.log_tail()}")

    def run_prompt(self, api_prompt: Mapping[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        return self.wait_for(self.post_prompt(api_prompt), timeout)

    # --- files -------------------------------------------------------------------------------------
    def upload_input(self, path: Path | str, name: str | None = None) -> str:
        """Put a file into the input folder; returns the name a LoadImage/LoadAudio widget takes."""
        target = self.input_dir / (name or Path(path).name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return target.relative_to(self.input_dir).as_posix()

    def add_model(self, folder: str, path: Path | str, name: str | None = None) -> str:
        """Make a model file (hard link, else symlink) or folder (symlink) visible in models/<folder>."""
        source = Path(path).resolve()
        target = self.models_dir / folder / (name or source.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            target.symlink_to(source, target_is_directory=True)
        else:
            try:
                os.link(source, target)
            except OSError:
                target.symlink_to(source)
        return target.relative_to(self.models_dir / folder).as_posix()

    def output_files(self, entry: Mapping[str, Any]) -> list[Path]:
        """The files a history entry reports as written (SaveImage-style outputs), as paths."""
        files = []
        for node_output in entry.get("outputs", {}).values():
            for items in node_output.values():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict) and "filename" in item and item.get("type") == "output":
                        files.append(self.output_dir / item.get("subfolder", "") / item["filename"])
        return files


def _describe_failure(status: Mapping[str, Any]) -> str:
    lines = []
    for event, data in status.get("messages", []):
        if event == "execution_error":
            lines.append(
                f"node {data.get('node_id')} ({data.get('node_type')}): "
                f"{data.get('exception_type')}: {data.get('exception_message', '').strip()}"
            )
            lines.append("".join(data.get("traceback", [])))
        elif event == "execution_interrupted":
            lines.append(f"interrupted in node {data.get('node_id')} ({data.get('node_type')})")
    return "\n".join(lines) or json.dumps(status)[:4000]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    """Signal the server and anything it started; only called while the server (the group leader) runs."""
    try:
        os.killpg(process.pid, sig)  # the server runs in its own session, so its group id is its pid
    except (ProcessLookupError, PermissionError):
        pass


def api_prompt_sd15_txt2img(
    ckpt_name: str, *, batch: int = 4, size: int = 64, steps: int = 2, prefix: str = "host_test"
) -> dict[str, Any]:
    """The default txt2img graph of core nodes in API format (node id -> class_type, inputs)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a drum being hit", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "seed": 0,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


# --------------------------------------------------------------------------------------------------
# Small random models and inputs for a server run (shared by the e2e and browser tests)
# --------------------------------------------------------------------------------------------------


def write_random_motion_module(path: Path, seed: int = 0) -> Path:
    """A full-size SD1.5 AVSyncD motion module with small random weights, in fp16 (about 620 MB)."""
    from avsync_core.model.motion_files import save_motion_module
    from avsync_core.model.motion_module import MotionConfig, MotionModule

    with torch.device("meta"):
        motion = MotionModule(MotionConfig())
    generator = torch.Generator().manual_seed(seed)
    state = {k: (0.02 * torch.randn(v.shape, generator=generator)).half() for k, v in motion.state_dict().items()}
    motion.load_state_dict(state, assign=True)
    save_motion_module(path, motion)
    return path


def write_small_imagebind(path: Path) -> Path:
    """ImageBind's audio branch with the real token width (768, what the motion module attends to), one block."""
    from avsync_core.audio import ImageBindAudioConfig, ImageBindAudioEncoder

    torch.manual_seed(0)
    ImageBindAudioEncoder(ImageBindAudioConfig(embed_dim=768, depth=1, num_heads=12, out_dim=32)).save_safetensors(path)
    return path


def write_image(path: Path) -> Path:
    from PIL import Image

    gradient = torch.linspace(0, 255, 96).to(torch.uint8)
    pixels = torch.stack(
        [
            gradient[None].expand(80, -1),
            gradient[:80, None].expand(-1, 96),
            torch.full((80, 96), 90, dtype=torch.uint8),
        ],
        -1,
    )
    Image.fromarray(pixels.numpy()).save(path)
    return path


def write_clicks(path: Path, seconds: float = 1.0, rate: int = 22050) -> Path:
    """Stereo 16-bit clicks, three per second."""
    n = int(seconds * rate)
    t = torch.arange(n)
    clicks = ((t % (rate // 3)) < rate // 50).float() * torch.sin(2 * math.pi * 440 * t / rate)
    samples = (torch.stack([clicks, 0.5 * clicks], 1) * 20000).to(torch.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.numpy().tobytes())
    return path
