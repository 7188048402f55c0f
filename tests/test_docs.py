"""The documentation stays true: every ``python -m avsync_core...`` command it shows (and every
``python benchmarks/...`` or ``scripts/...`` script) has the flags, subcommands and choices it uses, read from the
command's own argument parser; a flag named in the prose belongs to a command of its page (or to a named outside
tool); every relative link and picture exists, and every ``scripts/...`` file a code block names exists.

Fast and weight-free: the parsers are built, never run.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted(
    [REPO / "README.md", REPO / "ARCHITECTURE.md", *(REPO / "docs").rglob("*.md"), REPO / "workflows/README.md"]
)

FENCE = re.compile(r"^```([\w+-]*)\s*$")
INLINE_CODE = re.compile(r"`([^`]+)`")  # may wrap onto the next line, as in a paragraph
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
LAUNCHERS = {"python", "python3", "torchrun"}
FLAG = re.compile(r"(?<![\w-])--[a-z][\w-]*")
# Flags the prose names that belong to tools outside this repository (not checkable here).
OUTSIDE_FLAGS = {
    "--lowvram": "ComfyUI's main.py",
    "--novram": "ComfyUI's main.py",
    "--cpu": "ComfyUI's main.py",
    "--preview-method": "ComfyUI's main.py",
    "--logdir": "tensorboard",
    "--disable-api-nodes": "ComfyUI's main.py",
    "--front-end-root": "ComfyUI's main.py",
    "--no-deps": "pip",
    "--target": "pip",
}


@dataclass(frozen=True)
class Command:
    doc: str
    line: str
    module: str  # a module (python -m) or a repository script path (python benchmarks/x.py)
    args: list[str]

    @property
    def script(self) -> bool:
        return self.module.endswith(".py")

    @property
    def has_parser(self) -> bool:
        """Modules always; a script only when flags are shown with it (named bare, it only has to exist)."""
        shown_flags = [a for a in self.args if a.strip("[").startswith("-")]
        return not self.script or bool(shown_flags)


def relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def blocks(text: str) -> list[tuple[str, list[str]]]:
    """Fenced code blocks as (language, lines); backslash continuations joined into one line."""
    found, lang, lines = [], None, []
    for raw in text.splitlines():
        fence = FENCE.match(raw.strip())
        if fence and lang is None:
            lang, lines = fence.group(1).lower(), []
        elif raw.strip() == "```" and lang is not None:
            found.append((lang, lines))
            lang = None
        elif lang is not None:
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1] + " " + raw.strip()
            else:
                lines.append(raw.strip())
    return found


def prose(text: str) -> str:
    """The text outside fenced code blocks (where links and inline code live)."""
    keep, inside = [], False
    for raw in text.splitlines():
        if FENCE.match(raw.strip()) or (inside and raw.strip() == "```"):
            inside = not inside
        elif not inside:
            keep.append(raw)
    return "\n".join(keep)


def parse_command(doc: str, line: str) -> Command | None:
    """``[.venv/bin/]python[3] ... -m M``, ``torchrun ... -m M``, ``accelerate launch ... -m M``, or
    ``python benchmarks/x.py`` / ``python scripts/x.py``; else None."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return None
    for start, token in enumerate(tokens):
        name = Path(token).name
        launcher = name in LAUNCHERS or (name == "accelerate" and tokens[start + 1 : start + 2] == ["launch"])
        if launcher and "-m" in tokens[start + 1 :]:
            at = tokens.index("-m", start + 1)
            if at + 1 < len(tokens):
                return Command(doc, line, tokens[at + 1], tokens[at + 2 :])
        script = tokens[start + 1] if start + 1 < len(tokens) else ""
        if name in LAUNCHERS and re.fullmatch(r"(benchmarks|scripts)/\w+\.py", script):
            return Command(doc, line, script, tokens[start + 2 :])
    return None


def doc_commands() -> list[Command]:
    found = []
    for path in DOCS:
        text = path.read_text()
        lines = [line for lang, block in blocks(text) if lang in SHELL_LANGS for line in block]
        lines += [" ".join(code.split()) for code in INLINE_CODE.findall(prose(text)) if "python" in code]
        for line in lines:
            command = parse_command(relative(path), line)
            real = command and re.fullmatch(r"avsync_core(\.\w+)*|\w+/\w+\.py", command.module)  # not a <cmd>
            if real:
                found.append(command)
    return found


def command_parser(module: str) -> argparse.ArgumentParser:
    """The command's parser: ``build_parser()`` of the module (of its ``__main__`` for a package), or of the
    repository script."""
    if module.endswith(".py"):
        spec = importlib.util.spec_from_file_location("docs_" + module.replace("/", "_")[:-3], REPO / module)
        imported = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(imported)
    else:
        imported = importlib.import_module(module)
    if hasattr(imported, "__path__"):
        imported = importlib.import_module(module + ".__main__")
    assert hasattr(imported, "build_parser"), f"{module} exposes no build_parser() for the docs test"
    return imported.build_parser()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def problems(command: Command, parser: argparse.ArgumentParser) -> list[str]:
    """Flags the parser does not know, a missing or unknown subcommand, option values outside their choices."""
    args = [a.strip("[]") for a in command.args if a.strip("[]") not in ("", "|", "...")]
    if "--" in args:  # what follows a bare -- goes to another program (try_comfyui passes it to ComfyUI)
        args = args[: args.index("--")]
    found = []
    choices = subcommands(parser)
    if choices and args:  # a bare `python -m M` names the command; it needs no subcommand there
        positional = [a for a in args if not a.startswith("-")]
        if not positional or positional[0] not in choices:
            return [f"subcommand {positional[:1]} is not one of {sorted(choices)}"]
        parser = choices[positional[0]]
    options = parser._option_string_actions
    for at, arg in enumerate(args):
        if not arg.startswith("-") or re.fullmatch(r"-\d.*", arg):
            continue
        flag = arg.split("=", 1)[0]
        if flag not in options:
            found.append(f"unknown flag {flag}")
            continue
        action = options[flag]
        if action.choices is None or action.nargs == 0:
            continue
        if "=" in arg:
            values = [arg.split("=", 1)[1]]
        else:  # the words after the flag: one, or every one up to the next flag for nargs + and *
            following = args[at + 1 :]
            ends = [i for i, v in enumerate(following) if v.startswith("-")]
            values = following[: ends[0] if ends else None]
            values = values if action.nargs in ("+", "*") else values[:1]
        found += [f"{flag} {v}: not one of {list(action.choices)}" for v in values if v not in action.choices]
    return found


COMMANDS = doc_commands()


def test_the_docs_show_commands():
    """The scan finds the commands (a broken scanner would pass every check below vacuously)."""
    modules = {c.module for c in COMMANDS}
    assert {"avsync_core.animate", "avsync_core.generate", "avsync_core.evaluate", "avsync_core.train"} <= modules


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.doc}:{c.module}" for c in COMMANDS])
def test_every_documented_command_has_its_flags(command):
    if command.script:
        assert (REPO / command.module).is_file(), f"{command.doc}: {command.module} does not exist"
    if command.has_parser:
        assert problems(command, command_parser(command.module)) == [], f"{command.doc}: {command.line}"


@pytest.mark.parametrize("doc", DOCS, ids=[relative(d) for d in DOCS])
def test_every_flag_in_the_prose_belongs_to_a_command_of_its_page(doc):
    """`--steps 50` in a sentence about animate must be one of animate's flags (or an outside tool's, named above)."""
    shown = {c.module for c in COMMANDS if c.doc == relative(doc) and c.has_parser}
    known = set(OUTSIDE_FLAGS)
    for module in shown:
        parser = command_parser(module)
        for sub in [parser, *subcommands(parser).values()]:
            known |= set(sub._option_string_actions)
    flags = {flag for code in INLINE_CODE.findall(prose(doc.read_text())) for flag in FLAG.findall(code)}
    assert sorted(flags - known) == [], f"flags in {relative(doc)}'s text that no command of the page has"


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#{1,6} +(.+?) *$", prose(page.read_text()), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_picture_and_anchor_exists():
    broken = []
    for path in DOCS:
        for target in LINK.findall(prose(path.read_text())):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # a web address
            file, _, anchor = target.partition("#")
            linked = path.parent / file if file else path
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
                broken.append(f"{relative(path)}: {target}")
    assert broken == []


def test_every_script_a_code_block_names_exists():
    named = set()
    for path in DOCS:
        for _, lines in blocks(path.read_text()):
            for line in lines:
                named |= {(relative(path), m) for m in re.findall(r"(?<![\w/.])(scripts/[\w./-]*\w)", line)}
    assert named, "no scripts/ path found in the docs' code blocks"
    missing = sorted(f"{doc}: {script}" for doc, script in named if not (REPO / script).exists())
    assert missing == []
