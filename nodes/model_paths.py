"""Model folders of the pack, registered with ComfyUI's folder_paths so extra_model_paths.yaml works.

``models/avsyncd`` holds motion modules (our .safetensors) and official AVSyncD checkpoint folders;
``models/imagebind`` holds imagebind_huge.pth or the compact audio-only file. An official folder also provides
the ImageBind audio encoder (its ``audio_encoder/``). ``models/avsync_classifier`` holds the AVSync classifier
the synchronisation metrics use: the released folder or its converted .safetensors.
"""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from ..avsync_core.errors import CheckpointError

MOTION_FOLDER = "avsyncd"
IMAGEBIND_FOLDER = "imagebind"
CLASSIFIER_FOLDER = "avsync_classifier"
WEIGHT_EXTENSIONS = {".safetensors", ".pth", ".pt", ".ckpt", ".bin"}
OFFICIAL_SUFFIX = " [AVSyncD folder]"
CLASSIFIER_SUFFIX = " [classifier folder]"

HELP = {
    MOTION_FOLDER: (
        "Put an AVSyncD motion module (.safetensors) or an official AVSyncD checkpoint folder (the one holding "
        "unet/ and audio_encoder/, e.g. from the lzhangbj/ASVA release) into ComfyUI/models/avsyncd/; for the "
        "shipped workflows, download the AVSync15 checkpoint (the Google Drive link in the lzhangbj/ASVA README) "
        "and copy its avsync15_audio-cond_cfg/ckpts/checkpoint-37000/modules folder to "
        "ComfyUI/models/avsyncd/avsync15 (listed as 'avsync15 [AVSyncD folder]')"
    ),
    IMAGEBIND_FOLDER: (
        "Put Meta's imagebind_huge.pth (https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth; or the "
        "compact audio-only .safetensors this pack writes) into "
        "ComfyUI/models/imagebind/, or an official AVSyncD checkpoint folder into ComfyUI/models/avsyncd/"
    ),
    CLASSIFIER_FOLDER: (
        "Put the AVSync classifier into ComfyUI/models/avsync_classifier/: the 'AVSync Classifier (VGGSS)' checkpoint "
        "linked in the lzhangbj/ASVA README, as downloaded (its modules/ folder holds audio_encoder/, video_encoder/ "
        "and head/), or the single .safetensors that python -m avsync_core.evaluation.classifier makes of it"
    ),
}


def register() -> None:
    for name in (MOTION_FOLDER, IMAGEBIND_FOLDER, CLASSIFIER_FOLDER):
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name), is_default=True)
        paths, extensions = folder_paths.folder_names_and_paths[name]
        folder_paths.folder_names_and_paths[name] = (paths, set(extensions) | WEIGHT_EXTENSIONS)


def placeholder(folder: str) -> str:
    return f"(none found: see the tooltip) models/{folder}"


# (roots, marker) -> (folders found, modification time of every folder walked), like folder_paths' list cache.
_folder_cache: dict[tuple[tuple[str, ...], str], tuple[dict[str, Path], dict[str, int | None]]] = {}


def official_folders() -> dict[str, Path]:
    """Official AVSyncD checkpoint folders (holding ``unet/config.json``) at any depth of every models/avsyncd
    path, so the release can be dropped in as downloaded (``.../ckpts/checkpoint-37000/modules``)."""
    return _folders_holding(MOTION_FOLDER, os.path.join("unet", "config.json"), OFFICIAL_SUFFIX)


def classifier_folders() -> dict[str, Path]:
    """Released classifier folders (holding ``head/config.json``) at any depth of every models/avsync_classifier."""
    return _folders_holding(CLASSIFIER_FOLDER, os.path.join("head", "config.json"), CLASSIFIER_SUFFIX)


def _folders_holding(folder: str, marker: str, suffix: str) -> dict[str, Path]:
    """Dropdown entry -> folder, for every folder under the ``folder`` paths that holds ``marker``.

    The walk is cached and redone only when a folder it went through changed (as core folder_paths does for its
    file lists), so showing the node list does not walk the model tree each time. Links are followed, but every
    folder is entered once: a link loop cannot make the walk endless.
    """
    roots = tuple(folder_paths.get_folder_paths(folder))
    cached = _folder_cache.get((roots, marker))
    if cached is not None and _unchanged(cached[1]):
        return dict(cached[0])
    found: dict[str, Path] = {}
    walked: dict[str, int | None] = {}
    entered: set[tuple[int, int]] = set()
    for root in roots:
        if not os.path.isdir(root):
            walked[root] = None  # a folder made later is noticed
            continue
        for current, dirs, _files in os.walk(root, followlinks=True):
            stat = os.stat(current)
            if (stat.st_dev, stat.st_ino) in entered:
                dirs.clear()
                continue
            entered.add((stat.st_dev, stat.st_ino))
            walked[current] = stat.st_mtime_ns
            dirs.sort()
            if os.path.isfile(os.path.join(current, marker)):
                relative = Path(current).relative_to(root).as_posix()
                name = Path(current).name if relative == "." else relative
                found.setdefault(name + suffix, Path(current))
                dirs.clear()  # its parts are not separate entries
    _folder_cache[(roots, marker)] = (found, walked)
    return dict(found)


def _unchanged(walked: dict[str, int | None]) -> bool:
    for folder, mtime in walked.items():
        try:
            if os.stat(folder).st_mtime_ns != mtime:
                return False
        except OSError:
            if mtime is not None:
                return False
    return True


def _files(folder: str, exclude_under: set[str]) -> list[str]:
    names = folder_paths.get_filename_list(folder)
    return [n for n in names if not any(n.replace("\\", "/").startswith(prefix + "/") for prefix in exclude_under)]


def motion_choices() -> list[str]:
    official = official_folders()
    skip = {name[: -len(OFFICIAL_SUFFIX)] for name in official}
    return list(official) + _files(MOTION_FOLDER, skip) or [placeholder(MOTION_FOLDER)]


def imagebind_choices() -> list[str]:
    return _files(IMAGEBIND_FOLDER, set()) + list(official_folders()) or [placeholder(IMAGEBIND_FOLDER)]


def imagebind_file_choices() -> list[str]:
    """imagebind_huge.pth and compact files only: AVSyncD folders hold no vision branch."""
    return _files(IMAGEBIND_FOLDER, set()) or [placeholder(IMAGEBIND_FOLDER)]


def classifier_choices() -> list[str]:
    folders = classifier_folders()
    skip = {name[: -len(CLASSIFIER_SUFFIX)] for name in folders}
    files = [n for n in _files(CLASSIFIER_FOLDER, skip) if n.endswith(".safetensors")]
    return list(folders) + files or [placeholder(CLASSIFIER_FOLDER)]


def check_choice(name: str, folder: str, choice: str, choices: list[str]) -> bool | str:
    """A loader's VALIDATE_INPUTS: True for a listed entry, else what to put where. ComfyUI's own check would
    only say "Value not in list" for a shared workflow's model that is not installed yet (an official checkpoint
    folder cannot be named in a workflow's model list, so the page cannot tell either). ``name`` is the input's."""
    if choice in choices:
        return True
    return f"{name}: '{choice}' is not in models/{folder}. {HELP[folder]}."


def resolve(folder: str, choice: str) -> Path:
    """The file or official folder behind a dropdown entry, or an error that says what to download where."""
    if choice.startswith("(none found"):
        raise CheckpointError(f"No model found in models/{folder}. {HELP[folder]}.")
    folders = classifier_folders() if folder == CLASSIFIER_FOLDER else official_folders()
    if choice in folders:
        return folders[choice]
    path = folder_paths.get_full_path(folder, choice)
    if path is None:
        raise CheckpointError(f"{choice} is not in models/{folder} (anymore?). {HELP[folder]}.")
    return Path(path)
