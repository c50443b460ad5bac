"""Every `python train.py ...` / `python eval.py ...` command README.md and docs/ show composes.

Each command is composed with Hydra's compose API exactly as written (no training): an override
that names a key the config tree lacks, a group option that does not exist, or a required value
(`${required:...}`, `???`) that the command does not give fails here instead of in a user's shell.
Multirun sweeps (`-m a=1,2`) compose their first point. Placeholders stay plain strings
(`/path/sam3.pt`; `<run>` becomes `run`, a shell would read `<` as a redirection): composing
does not open files.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CONF_DIR, REPO_ROOT
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from region_sam3.utils.run_config import check_missing_values
from region_sam3.workflow.eval_config import addable_split_overrides

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
SCRIPTS = {"train.py": "train", "eval.py": "eval"}
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_INLINE = re.compile(r"`(?:[A-Z_]+=\S+ )*(python3? (?:train|eval)\.py\b[^`]*)`")
_SHELL_START = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(python3?|hf|huggingface-cli)\b")
_PLACEHOLDER = re.compile(r"<([A-Za-z_ ]+)>")  # <run>, <date_time>, <distill run>


def _shell_lines(block: str) -> list[str]:
    """Logical lines of a fenced block: `\\` continuations joined, comments kept for shlex."""
    return block.replace("\\\n", " ").splitlines()


def shown_commands(text: str) -> list[str]:
    """Shell commands of a Markdown text: lines of fenced blocks and inline `python *.py` spans."""
    commands = []
    for block in _FENCE.findall(text):
        commands += [line.strip() for line in _shell_lines(block)
                     if _SHELL_START.match(line.strip())]
    prose = _FENCE.sub("", text)
    commands += [m.group(1).strip() for m in _INLINE.finditer(prose)]
    return commands


def _tokens(command: str) -> list[str]:
    command = _PLACEHOLDER.sub(lambda m: m.group(1).replace(" ", "_"), command)
    tokens = shlex.split(command, comments=True)
    while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):  # PYTHONPATH=. python ...
        tokens.pop(0)
    return tokens


def hydra_commands() -> list[tuple[str, str]]:
    """(source file name, command) for every train.py / eval.py command of the docs."""
    found = []
    for doc in DOCS:
        for command in shown_commands(doc.read_text()):
            tokens = _tokens(command)
            if len(tokens) >= 2 and tokens[0] in ("python", "python3") and tokens[1] in SCRIPTS:
                found.append((doc.name, command))
    return found


def first_sweep_point(args: list[str]) -> list[str]:
    """Overrides of the first job of `python train.py -m ...` (Hydra's own override grammar)."""
    overrides = []
    for override in OverridesParser.create().parse_overrides(args):
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()))
            overrides.append(f"{override.get_key_element()}={value}")
        else:
            overrides.append(override.input_line)
    return overrides


def compose_command(command: str, tmp_path: Path):
    """Compose a shown command as its script would; returns the config without `hydra`."""
    tokens = _tokens(command)
    config_name = SCRIPTS[tokens[1]]
    args = [t for t in tokens[2:] if t not in ("-m", "--multirun", "...")]
    assert all(not a.startswith("-") for a in args), f"unhandled flag in: {command}"
    overrides = first_sweep_point(args)
    if tokens[1] == "eval.py":  # what eval.py's __main__ does to its command line
        overrides = addable_split_overrides(overrides)
    # where the run would write; a command that sets them itself wins (later override)
    base = [f"paths.output_dir={tmp_path}", f"paths.work_dir={tmp_path}",
            f"paths.log_dir={tmp_path / 'logs'}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=base + overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # eval reads its command-line overrides from here
    with open_dict(cfg):
        cfg.pop("hydra")
    return cfg


COMMANDS = hydra_commands()
_IDS = [" ".join(shlex.split(c, comments=True)) for _, c in COMMANDS]


def test_the_docs_show_train_and_eval_commands():
    # the extractor finds the README's commands (an empty list would pass every check below)
    scripts = {_tokens(c)[1] for _, c in COMMANDS}
    assert scripts == {"train.py", "eval.py"}
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=_IDS)
def test_shown_command_composes(doc, command, tmp_path):
    try:
        cfg = compose_command(command, tmp_path)
        # `${required:...}` / `???`: what train_task / eval_task check before building anything
        check_missing_values(cfg)
    except Exception as exc:  # noqa: BLE001 - report which shown command fails, and why
        pytest.fail(f"{doc}: `{command}` fails as written: {type(exc).__name__}: {exc}")


def test_first_sweep_point_keeps_lists_and_takes_first_choice():
    assert first_sweep_point(["a=1,2", "b=[x,y]", "~c", "d=x"]) == ["a=1", "b=[x,y]", "~c", "d=x"]


def test_hub_login_command_works_with_the_installed_huggingface_hub():
    """The CLI commands the docs give for the gated SAM3 weights exist (`huggingface-cli` is
    deprecated and no longer works in huggingface_hub >= 1.0)."""
    shown = [c for doc in DOCS for c in shown_commands(doc.read_text())]
    text = "\n".join(doc.read_text() for doc in DOCS)
    assert "huggingface-cli" not in text
    assert "hf auth login" in text
    hf = Path(sys.executable).with_name("hf")
    for command in [c for c in shown if _tokens(c)[:1] == ["hf"]] + ["hf auth login"]:
        tokens = _tokens(command)
        result = subprocess.run([str(hf), *tokens[1:], "--help"], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, f"`{command} --help`: {result.stderr}"
