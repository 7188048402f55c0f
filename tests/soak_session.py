"""A studio day on one ComfyUI server, shared by benchmarks/soak.py and tests/test_soak.py.

Models are the random full-size ones the host tests use (two SD1.5 checkpoints, two motion modules, a LoRA, a
one-block ImageBind audio branch, the procedural sync classifier). Sounds are made with espeak-ng (speech) and
sox (percussion), from under 1 s to 12 s. Model reads are counted by the kernel: inotify reports every open of a
watched file, whoever opens it, so the server is neither patched nor traced.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import os
import shutil
import struct
import subprocess
import threading
import time
import urllib.error
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

import comfy_host

# -------------------------------------------------------------------------------------------- file opens


class OpenCounter:
    """How many times each watched file was opened (inotify IN_OPEN), by any process."""

    _IN_OPEN, _IN_NONBLOCK = 0x20, 0o4000
    _EVENT = struct.Struct("iIII")

    def __init__(self, paths: dict[str, Path]) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._fd = self._libc.inotify_init1(self._IN_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._names: dict[int, str] = {}
        for name, path in paths.items():
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(path), self._IN_OPEN)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch failed for {path}")
            self._names[wd] = name
        self._counts = dict.fromkeys(paths, 0)

    def counts(self) -> dict[str, int]:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return dict(self._counts)
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = self._EVENT.unpack_from(data, offset)
                offset += self._EVENT.size + length
                if mask & self._IN_OPEN and wd in self._names:
                    self._counts[self._names[wd]] += 1

    def close(self) -> None:
        os.close(self._fd)


class EventListener:
    """ComfyUI's websocket for one client id, read in a thread: tells when a node has made sampling progress."""

    def __init__(self, url: str, client_id: str) -> None:
        self._progress: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._listen(url, client_id),))
        self._thread.daemon = True
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the websocket did not connect")

    async def _listen(self, url: str, client_id: str) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{url.replace('http', 'ws', 1)}/ws?clientId={client_id}") as ws:
                self._ws = ws
                self._ready.set()
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(message.data)
                    if event.get("type") == "progress":
                        data = event["data"]
                        with self._lock:
                            self._progress[(data.get("prompt_id"), str(data.get("node")))] = data["value"]

    def wait_for_step(self, prompt_id: str, node: str, timeout: float) -> None:
        """Return once ``node`` of the prompt reported its first finished step (mid-sampling)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._progress.get((prompt_id, node), 0) >= 1:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"node {node} of {prompt_id} reported no progress in {timeout:.0f} s")

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._ws.close(), self._loop).result(10)
        self._thread.join(10)


# -------------------------------------------------------------------------------------------- models, sounds


def write_random_lora(path: Path, rank: int = 4) -> Path:
    """A kohya-style LoRA on the first down block's attention projections of SD1.5 (small random weights)."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(7)
    state = {}
    for attn, width in (("attn1", 320), ("attn2", 320)):
        for proj in ("to_q", "to_k", "to_v", "to_out_0"):
            key = f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_{attn}_{proj}"
            fan_in = 768 if attn == "attn2" and proj in ("to_k", "to_v") else width
            state[f"{key}.lora_down.weight"] = 0.05 * torch.randn(rank, fan_in, generator=generator)
            state[f"{key}.lora_up.weight"] = 0.05 * torch.randn(width, rank, generator=generator)
            state[f"{key}.alpha"] = torch.tensor(float(rank))
    save_file(state, str(path))
    return path


def write_models(folder: Path) -> dict[str, Path]:
    """The session's model files, written once into ``folder`` and reused when already there."""
    from eval_models import procedural_classifier

    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "ckpt_a": folder / "random_sd15_a.safetensors",
        "ckpt_b": folder / "random_sd15_b.safetensors",
        "motion_1": folder / "random_motion_1.safetensors",
        "motion_2": folder / "random_motion_2.safetensors",
        "lora": folder / "random_lora.safetensors",
        "encoder": folder / "imagebind_768_1block.safetensors",
        "classifier": folder / "avsync_classifier.safetensors",
    }
    makers = {
        "ckpt_a": lambda p: comfy_host.write_random_sd15_checkpoint(p, seed=0),
        "ckpt_b": lambda p: comfy_host.write_random_sd15_checkpoint(p, seed=1),
        "motion_1": lambda p: comfy_host.write_random_motion_module(p, seed=0),
        "motion_2": lambda p: comfy_host.write_random_motion_module(p, seed=1),
        "lora": write_random_lora,
        "encoder": comfy_host.write_small_imagebind,
        "classifier": lambda p: procedural_classifier().save_safetensors(p),
    }
    for name, path in files.items():
        if not path.is_file():
            makers[name](path)
    return files


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def write_sounds(folder: Path) -> dict[str, Path]:
    """Speech (espeak-ng) and percussion (sox) from 0.4 s to 12 s, and the hostile files."""
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        raise RuntimeError("The soak needs espeak-ng and sox: apt-get install -y espeak-ng sox")
    folder.mkdir(parents=True, exist_ok=True)
    f = {k: folder / v for k, v in {
        "word": "word.wav", "sentence": "sentence.wav", "drums": "drums.flac", "claps": "claps.wav",
        "long": "long_speech_drums.flac", "empty": "empty.wav", "cut": "cut.flac", "hour": "hour_silence.wav",
    }.items()}  # fmt: skip
    _run("espeak-ng", "-s", "170", "-w", str(f["word"]), "go now")  # 0.83 s
    _run("espeak-ng", "-w", str(f["sentence"]), "The drum starts, then the lion roars twice.")
    _run("sox", "-n", "-r", "22050", str(f["drums"]), "synth", "0.12", "sine", "90:40", "fade", "0", "0.12", "0.1",
         "pad", "0", "0.38", "repeat", "7")  # fmt: skip
    _run("sox", "-n", "-r", "16000", "-c", "2", str(f["claps"]), "synth", "0.03", "pinknoise", "fade", "0", "0.03",
         "0.02", "pad", "0", "0.47", "repeat", "5")  # fmt: skip
    speech = folder / "paragraph.wav"
    _run("espeak-ng", "-s", "110", "-w", str(speech), "Listen. " * 3 + "The hammer hits the anvil, the bell rings, "
         "and the crowd claps along with the beat until the music stops and the room is quiet again.")  # fmt: skip
    _run("sox", "-m", "-v", "0.8", str(speech), "-v", "0.6", str(f["drums"]), "-r", "22050", str(f["long"]),
         "remix", "1", "pad", "0", "12", "trim", "0", "12")  # fmt: skip
    speech.unlink()
    f["empty"].write_bytes(b"")
    f["cut"].write_bytes(f["drums"].read_bytes()[:60])  # cut inside the FLAC header
    rate, seconds = 16000, 3600  # an hour of 16-bit mono silence: a WAV header and a sparse data chunk
    data = rate * 2 * seconds
    header = (
        b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    )
    with open(f["hour"], "wb") as out:
        out.write(header + b"data" + struct.pack("<I", data))
        out.truncate(44 + data)
    return f


# -------------------------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class Shot:
    """One prompt of the session: what an artist would change between two renders."""

    ckpt: str = "ckpt_a"
    motion: str = "motion_1"
    lora: bool = False
    sound: str = "sentence"
    frames: int = 2  # 2 frames at 1 fps: the encoder's 2 s window at the least sampling cost on a CPU
    windows: int = 1
    audio_guidance: float = 4.0
    text_guidance: float = 1.0
    batch: int = 1
    sampler: str = "official_pndm"
    steps: int = 2
    seed: int = 0
    score: bool = False
    interrupt: bool = False
    label: str = field(default="", compare=False)


def graph(shot: Shot, names: dict[str, str], size: int = 64) -> dict[str, Any]:
    """The shipped image + sound workflow's graph at a quick size, saving PNG frames (lossless, comparable)."""
    model = ["1", 0]
    g: dict[str, Any] = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": names[shot.ckpt]}},
        "2": {"class_type": "AVSyncMotionModuleLoader", "inputs": {"motion_module": names[shot.motion]}},
        "4": {"class_type": "LoadImage", "inputs": {"image": names["image"]}},
        "5": {
            "class_type": "ImageScale",
            "inputs": {
                "upscale_method": "bilinear",
                "width": size,
                "height": size,
                "crop": "center",
                "image": ["4", 0],
            },
        },  # fmt: skip
        "6": {
            "class_type": "AVSyncLoadAudio",
            "inputs": {"audio": names[shot.sound], "start_seconds": 0.0, "duration_seconds": 0.0},
        },  # fmt: skip
        "7": {"class_type": "AVSyncImageBindLoader", "inputs": {"encoder_name": names["encoder"]}},
        "8": {
            "class_type": "AVSyncEncodeAudio",
            "inputs": {
                "frames": shot.frames,
                "fps": shot.frames / 2.0,
                "max_windows": shot.windows,
                "audio": ["6", 0],
                "audio_encoder": ["7", 0],
            },
        },  # fmt: skip
        "9": {"class_type": "CLIPTextEncode", "inputs": {"text": "a drum being hit", "clip": ["1", 1]}},
        "10": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "17": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["1", 2]}},
        "19": {"class_type": "SaveImage", "inputs": {"images": ["17", 0], "filename_prefix": f"soak/{shot.label}"}},
    }
    if shot.lora:
        g["12"] = {"class_type": "LoraLoaderModelOnly",
                   "inputs": {"model": model, "lora_name": names["lora"], "strength_model": 0.8}}  # fmt: skip
        model = ["12", 0]
    g["3"] = {"class_type": "AVSyncApplyMotionModule", "inputs": {"model": model, "motion_module": ["2", 0]}}
    image = ["5", 0]
    if shot.batch > 1:
        g["13"] = {"class_type": "RepeatImageBatch", "inputs": {"image": image, "amount": shot.batch}}
        image = ["13", 0]
    g["11"] = {"class_type": "AVSyncSampler", "inputs": {
        "seed": shot.seed, "steps": shot.steps, "audio_guidance": shot.audio_guidance,
        "text_guidance": shot.text_guidance, "sampler_name": shot.sampler, "scheduler": "normal", "denoise": 1.0,
        "model": ["3", 0], "positive": ["9", 0], "negative": ["10", 0], "avsync_audio": ["8", 0], "image": image,
        "vae": ["1", 2]}}  # fmt: skip
    if shot.score:
        g["14"] = {"class_type": "AVSyncClassifierLoader", "inputs": {"classifier_name": names["classifier"]}}
        g["15"] = {"class_type": "AVSyncSyncScore", "inputs": {"images": ["17", 0], "audio": ["6", 0],
                   "classifier": ["14", 0], "audio_start_seconds": 0.0}}  # fmt: skip
        g["16"] = {"class_type": "SaveImage", "inputs": {"images": ["15", 5], "filename_prefix": "soak/plot"}}
    return g


def studio_day(rounds: int = 1) -> list[Shot]:
    """The good prompts: every model in a first round, then variations an artist would queue (>= 40 for 3 rounds)."""
    first = Shot(label="first")
    fast = {"sampler": "euler", "steps": 1}  # one step where the sampler is not the point: the CPU is slow
    warm = [
        first,
        Shot(ckpt="ckpt_b", label="ckpt_b", **fast),
        Shot(ckpt="ckpt_b", motion="motion_2", label="motion_2", **fast),
        Shot(ckpt="ckpt_b", motion="motion_2", lora=True, label="lora", **fast),
    ]
    variations = [  # grouped by model, so a round switches each model about twice, as an artist would
        Shot(sound="word", frames=4, label="short_word", **fast),  # 0.83 s: one frame at 2 fps is 0.5 s
        Shot(sound="drums", audio_guidance=1.0, label="no_guidance", **fast),
        Shot(sound="claps", text_guidance=5.0, label="dual_guidance", **fast),
        Shot(batch=2, label="batch2", **fast),
        Shot(sound="drums", label="paper_pndm"),
        Shot(sound="long", windows=0, label="long_12s", **fast),
        Shot(sound="drums", frames=12, audio_guidance=1.0, score=True, label="sync_score", **fast),
        Shot(sound="claps", seed=3, steps=3, interrupt=True, label="interrupt_pndm"),
        Shot(motion="motion_2", steps=3, sampler="euler", interrupt=True, label="interrupt"),
        Shot(motion="motion_2", lora=True, batch=2, text_guidance=4.0, label="batch2_dual_lora", **fast),
        Shot(ckpt="ckpt_b", motion="motion_2", sound="word", frames=4, label="b_m2_word", **fast),
        Shot(ckpt="ckpt_b", lora=True, sampler="official_ddim", seed=5, label="ddim_lora"),
        Shot(ckpt="ckpt_b", sound="drums", steps=3, sampler="euler", interrupt=True, label="interrupt_euler"),
    ]
    return warm + [replace(s, seed=s.seed + r) for r in range(rounds) for s in variations] + [first]


# -------------------------------------------------------------------------------------------- the session

# The server's allocator: glibc raises its mmap threshold after the first large free (up to 32 MB), after which
# the freed weights of a switched-away model stay in the heap, counted in RSS, and are reused later (on 0.3.52 RSS
# stayed 800 MB up after the checkpoint with a LoRA was switched away). A fixed threshold hands every freed tensor
# of 64 KiB or more back to the kernel, so the server's RSS follows the memory it really holds and a leak is not
# hidden by allocator reuse.
SERVER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}


@dataclass
class Outcome:
    label: str
    status: str  # "success", "interrupted", "error", or "refused" (HTTP 400)
    seconds: float
    rss_mb: float
    vram_mb: float | None
    opens: dict[str, int]
    reply: Any = None
    images: list[Path] = field(default_factory=list)


class Session:
    """A started ComfyServer with the session's files, a websocket listener, and the open counter."""

    def __init__(self, server: comfy_host.ComfyServer, models: dict[str, Path], sounds: dict[str, Path], image: Path):
        self.server = server
        self.names = {k: server.add_model(_FOLDERS[k], p) for k, p in models.items()}
        self.names["image"] = server.upload_input(image)
        self.names.update({k: server.upload_input(p) for k, p in sounds.items()})
        self.counter = OpenCounter({k: server.models_dir / _FOLDERS[k] / self.names[k] for k in models})
        self.client_id = uuid.uuid4().hex
        self.events = EventListener(server.url, self.client_id)
        self.on_gpu = any(d.get("type") == "cuda" for d in server.get_json("/system_stats").get("devices", []))

    def rss_mb(self) -> float:
        """The server's anonymous resident memory (RssAnon): its heap and tensors, what a leak grows. Pages of files
        it maps are left out, since the kernel may drop and re-read them at any time."""
        for line in Path(f"/proc/{self.server.process.pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no RssAnon")

    def vram_mb(self) -> float | None:
        if not self.on_gpu:
            return None
        gpu = [d for d in self.server.get_json("/system_stats")["devices"] if d.get("type") == "cuda"]
        return (gpu[0]["vram_total"] - gpu[0]["vram_free"]) / 2**20

    def submit(self, prompt: dict[str, Any], label: str, interrupt: bool = False, timeout: float = 1800) -> Outcome:
        start = time.monotonic()
        status, reply = self.server.post_json("/prompt", {"prompt": prompt, "client_id": self.client_id})
        if status != 200:
            return self._outcome(label, "refused", start, reply)
        prompt_id = reply["prompt_id"]
        if interrupt:
            self.events.wait_for_step(prompt_id, "11", timeout)
            self.server.post_json("/interrupt", {"prompt_id": prompt_id})
        entry = self._history(prompt_id, timeout)
        kind = entry["status"]["status_str"]
        if any(event == "execution_interrupted" for event, _ in entry["status"].get("messages", [])):
            kind = "interrupted"
        images = [
            self.server.output_dir / i["subfolder"] / i["filename"]
            for i in entry.get("outputs", {}).get("19", {}).get("images", [])
        ]
        return self._outcome(label, kind, start, entry["status"], images)

    def _history(self, prompt_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                entry = self.server.get_json(f"/history/{prompt_id}").get(prompt_id)
            except (TimeoutError, urllib.error.URLError) as err:  # its loop can be held up while a model loads
                if not isinstance(getattr(err, "reason", err), TimeoutError):
                    raise
                entry = None  # ask again
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                return entry
            if self.server.process.poll() is not None:
                raise comfy_host.ComfyServerError(f"ComfyUI exited.\n{self.server.log_tail()}")
            time.sleep(0.2)
        raise comfy_host.ComfyServerError(f"{prompt_id} did not finish in {timeout:.0f} s\n{self.server.log_tail()}")

    def _outcome(self, label: str, status: str, start: float, reply: Any, images=()) -> Outcome:
        return Outcome(label, status, time.monotonic() - start, self.rss_mb(), self.vram_mb(), self.counter.counts(),
                       reply, list(images))  # fmt: skip

    def close(self) -> None:
        self.events.close()
        self.counter.close()


_FOLDERS = {"ckpt_a": "checkpoints", "ckpt_b": "checkpoints", "motion_1": "avsyncd", "motion_2": "avsyncd",
            "lora": "loras", "encoder": "imagebind", "classifier": "avsync_classifier"}  # fmt: skip


def expected_loads(shots: list[Shot]) -> dict[str, int]:
    """How often each model file must be read: once each time a prompt asks for another file in its loader than
    the prompt before (ComfyUI keeps the outputs of the last prompt; a refused prompt never runs)."""
    loads: dict[str, int] = {}
    previous: dict[str, str | None] = {}
    for shot in shots:
        slots = {"ckpt": shot.ckpt, "motion": shot.motion, "lora": "lora" if shot.lora else None,
                 "encoder": "encoder", "classifier": "classifier" if shot.score else None}  # fmt: skip
        for slot, name in slots.items():
            if name is not None and previous.get(slot) != name:
                loads[name] = loads.get(name, 0) + 1
        previous = slots
    return loads


def dump(outcomes: list[Outcome]) -> str:
    return json.dumps([{k: v for k, v in o.__dict__.items() if k != "images"} for o in outcomes], default=str)


# -------------------------------------------------------------------------------------------- hostile prompts

NAN, INF = float("nan"), float("inf")
# (label, node id, input, value, the input the refusal must name); applied to the graph of HOSTILE_BASE.
HOSTILE = [
    ("steps of wrong type", "11", "steps", "many", "steps"),
    ("guidance of wrong type", "11", "audio_guidance", "loud", "audio_guidance"),
    ("audio of wrong type", "6", "audio", 7, "audio"),
    ("NaN audio guidance", "11", "audio_guidance", NAN, "audio_guidance"),
    ("infinite text guidance", "11", "text_guidance", INF, "text_guidance"),
    ("-inf denoise", "11", "denoise", -INF, "denoise"),
    ("negative frames", "8", "frames", -4, "frames"),
    ("huge frames", "8", "frames", 10**9, "frames"),
    ("negative fps", "8", "fps", -2.0, "fps"),
    ("huge fps", "8", "fps", 1e12, "fps"),
    ("NaN fps", "8", "fps", NAN, "fps"),
    ("fps that drifts from the sound", "8", "fps", 3.0, "fps"),
    ("negative windows", "8", "max_windows", -1, "max_windows"),
    ("huge windows", "8", "max_windows", 10**12, "max_windows"),
    ("negative steps", "11", "steps", -5, "steps"),
    ("huge steps", "11", "steps", 10**9, "steps"),
    ("negative seed", "11", "seed", -1, "seed"),
    ("negative start seconds", "6", "start_seconds", -1.0, "start_seconds"),
    ("huge duration seconds", "6", "duration_seconds", 1e300, "duration_seconds"),
    ("NaN start seconds", "6", "start_seconds", NAN, "start_seconds"),
    ("start past the end", "6", "start_seconds", 5000.0, "start_seconds"),
    ("partial denoise with official PNDM", "11", "denoise", 0.5, "denoise"),
    ("audio ../ outside the input folder", "6", "audio", "../private/secret.wav", "audio"),
    ("symlink out of the input folder", "6", "audio", "escape.wav", "audio"),
    ("0-byte file", "6", "audio", "empty.wav", "audio"),
    ("truncated file", "6", "audio", "cut.flac", "audio"),
    ("an hour of silence", "6", "audio", "hour_silence.wav", "audio"),
    ("checkpoint not in the list", "1", "ckpt_name", "not_there.safetensors", "ckpt_name"),
    ("motion module ../ path", "2", "motion_module", "../../checkpoints/random_sd15_a.safetensors", "motion_module"),
    ("LoRA not in the list", "12", "lora_name", "missing_lora.safetensors", "lora_name"),
    ("NaN sync-score start", "15", "audio_start_seconds", NAN, "audio_start_seconds"),
]
SCORE_NODES = ("14", "15", "16")
# The hostile prompts ask for other models than the good prompt before them, so a model loaded before a refusal
# would show as a file open.
HOSTILE_BASE = Shot(ckpt="ckpt_b", motion="motion_2", lora=True, score=True, label="hostile")


def plant_hostile_files(server: comfy_host.ComfyServer, sounds: dict[str, Path]) -> None:
    """A sound outside the input folder, reachable by ../ and by a link planted inside it."""
    private = server.base_dir / "private"
    private.mkdir(exist_ok=True)
    shutil.copyfile(sounds["sentence"], private / "secret.wav")
    (server.input_dir / "escape.wav").symlink_to(private / "secret.wav")


def names_the_input(reply: Any, node: str, name: str) -> bool:
    """Whether ComfyUI's 400 reply holds an error on ``node`` that names ``name``: ComfyUI's own checks carry the
    input in extra_info; a VALIDATE_INPUTS message is repeated for each input it takes, so its text must name it."""
    if not isinstance(reply, dict):
        return False
    for error in reply.get("node_errors", {}).get(node, {}).get("errors", []):
        if error["type"] != "custom_validation_failed" and error.get("extra_info", {}).get("input_name") == name:
            return True
        if error["type"] == "custom_validation_failed" and name in error["details"].split(" - ", 1)[-1]:
            return True
    return False


def message_of(reply: Any, node: str, name: str) -> str:
    """The refusal of ``name`` as ComfyUI reports it (type: details)."""
    errors = reply.get("node_errors", {}).get(node, {}).get("errors", []) if isinstance(reply, dict) else []
    for error in errors:
        if error.get("extra_info", {}).get("input_name") == name:
            if error["type"] == "custom_validation_failed":
                return f"{error['type']}: {error['details'].split(' - ', 1)[-1]}"
            return f"{error['type']}: {error['message']} ({error['details']})"
    return json.dumps(reply)[:300]


# -------------------------------------------------------------------------------------------- the day


@dataclass
class Day:
    good: list[Outcome]
    hostile: list[tuple[str, str, bool, Outcome, str]]  # label, input, named, outcome, message
    rss_start_mb: float
    warm_index: int  # good[warm_index] is the last prompt of the first round of every model
    opens: dict[str, int]
    expected: dict[str, int]
    identical_repeat: bool
    stray_files: list[str]


def run_day(session: Session, shots: list[Shot], warm_prompts: int, hostile_after: int, say=print) -> Day:
    """The good prompts in order, the hostile ones after good prompt ``hostile_after``; one line printed per prompt."""
    import numpy as np
    from PIL import Image

    rss_start = session.rss_mb()
    good, hostile = [], []
    try:
        _send(session, shots, hostile_after, good, hostile, say)
    except KeyboardInterrupt:  # stopped early: the prompt in flight finishes on the server, then the first again
        say("stopped early (Ctrl-C): the first prompt is sent again, the summary covers the prompts above")
        shots = [*shots[: len(good) + 1], shots[0]]
        good.append(session.submit(graph(shots[0], session.names), shots[0].label))
        say(_line(len(good) + len(hostile), good[-1]))

    def frames(outcome: Outcome) -> list:
        return [np.asarray(Image.open(p)) for p in outcome.images]

    first, last = frames(good[0]), frames(good[-1])
    identical = bool(first) and len(first) == len(last) and all(np.array_equal(a, b) for a, b in zip(first, last))
    identical = identical and len(good) > 1 and shots[-1] == shots[0]  # the labels may differ
    return Day(good, hostile, rss_start, min(warm_prompts, len(good)) - 1, session.counter.counts(),
               expected_loads(shots), identical, stray_files(session.server))  # fmt: skip


def _send(session: Session, shots: list[Shot], hostile_after: int, good: list, hostile: list, say) -> None:
    for index, shot in enumerate(shots):
        outcome = session.submit(graph(shot, session.names), shot.label, interrupt=shot.interrupt)
        good.append(outcome)
        say(_line(len(good) + len(hostile), outcome))
        if index == hostile_after:
            for label, node, name, value, named in HOSTILE:
                prompt = graph(HOSTILE_BASE, session.names)
                prompt[node]["inputs"][name] = value
                if node in SCORE_NODES:  # ComfyUI runs the outputs that pass validation and ignores the others
                    del prompt["19"]
                outcome = session.submit(prompt, label)
                message = message_of(outcome.reply, node, name)
                hostile.append((label, named, names_the_input(outcome.reply, node, named), outcome, message))
                say(_line(len(good) + len(hostile), outcome, message))


def _line(number: int, o: Outcome, message: str = "") -> str:
    vram = "" if o.vram_mb is None else f" vram {o.vram_mb:8.0f} MB"
    tail = f"  {message[:150]}" if message else ""
    return f"{number:3d} {o.label:36s} {o.status:11s} {o.seconds:7.1f} s  anon rss {o.rss_mb:7.0f} MB{vram}{tail}"


def stray_files(server: comfy_host.ComfyServer) -> list[str]:
    """Files in output/ and temp/ that no prompt of the history reports (half-written or forgotten files)."""
    reported = set()
    for entry in server.get_json("/history").values():
        for node_output in entry.get("outputs", {}).values():
            for item in node_output.get("images", []):
                reported.add(Path(item["type"], item.get("subfolder", ""), item["filename"]).as_posix())
    present = {
        p.relative_to(server.base_dir).as_posix()
        for folder in ("output", "temp")
        for p in (server.base_dir / folder).rglob("*")
        if p.is_file()
    }
    return sorted(present - reported)


def summary(day: Day) -> list[str]:
    good = day.good
    failures = [o.label for o in good if o.status != ("interrupted" if "interrupt" in o.label else "success")]
    refused = sum(o.status == "refused" for _, _, _, o, _ in day.hostile)
    unnamed = [label for label, _, named, _, _ in day.hostile if not named]
    warm = good[day.warm_index].rss_mb
    rows = [
        ("prompts (good + hostile)", f"{len(good)} + {len(day.hostile)}"),
        ("interrupted mid-sampling", str(sum(o.status == "interrupted" for o in good))),
        ("failed good prompts", f"{len(failures)} {failures if failures else ''}".strip()),
        ("hostile prompts refused at queue time (HTTP 400)", f"{refused} of {len(day.hostile)}"),
        ("hostile refusals not naming the input", f"{len(unnamed)} {unnamed if unnamed else ''}".strip()),
        (
            "anon RSS at start / after warm-up / at end",
            f"{day.rss_start_mb:.0f} / {warm:.0f} / {good[-1].rss_mb:.0f} MB",
        ),
        ("anon RSS growth after warm-up", f"{good[-1].rss_mb - warm:+.0f} MB"),
        ("max anon RSS after warm-up", f"{max(o.rss_mb for o in good[day.warm_index :]):.0f} MB"),
    ]
    for name in sorted(day.opens):
        rows.append((f"opens of {name} (expected loads)", f"{day.opens[name]} ({day.expected.get(name, 0)})"))
    rows.append(("first prompt repeated at the end: identical frames", "yes" if day.identical_repeat else "NO"))
    rows.append(("stray files in output/ and temp/", str(day.stray_files or "none")))
    width = max(len(k) for k, _ in rows)
    return [f"{k:{width}s}  {v}" for k, v in rows]
