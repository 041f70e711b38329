"""The command lines the docs show are ones the tools accept: every `rgbatch COMMAND --option`
in a code block names a command and options it has, every `python benchmarks/X.py --option` a
script and options it parses, every `make TARGET` a target of the Makefile. (Session 57 found
examples that had drifted: a benchmark's required option left out, `make gpu-wide`'s width.)
What the commands would do is not run here: only that they would be taken as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from rgbatch.cli import app

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def command_lines() -> list[tuple[str, str]]:
    """(where, line) of each command line in the docs' fenced code blocks: continuation lines
    joined, comments cut."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for block in FENCE.finditer(text):
            start = text.count("\n", 0, block.start()) + 2
            lines = block.group(1).split("\n")
            joined, first = "", None
            for number, line in enumerate(lines, start):
                first = first or number
                joined += line.rstrip().removesuffix("\\") + " "
                if not line.rstrip().endswith("\\"):
                    if joined.strip():
                        found.append((f"{doc.relative_to(ROOT)}:{first}", joined.split(" #")[0].strip()))
                    joined, first = "", None
    return found


def words(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:  # an unbalanced quote in prose-like lines: whitespace is enough here
        return line.split()


def options_after(tokens: list[str]) -> set[str]:
    return {t.split("=")[0] for t in tokens if t.startswith("--") and len(t) > 2}


CLI = typer.main.get_command(app)
CLI_COMMANDS = {name: {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
                for name, cmd in CLI.commands.items()}
LINES = command_lines()


def rgbatch_uses():
    for where, line in LINES:
        tokens = words(line)
        for i, token in enumerate(tokens):
            if token.endswith("rgbatch") and i + 1 < len(tokens) and re.fullmatch(r"[a-z][a-z-]*", tokens[i + 1]):
                rest = tokens[i + 2:]
                end = next((j for j, t in enumerate(rest) if t in ("|", "&&", ";", ">", "2>&1")), len(rest))
                yield where, tokens[i + 1], options_after(rest[:end])


def test_the_docs_show_commands_to_check():
    uses = list(rgbatch_uses())
    assert len(uses) > 50 and {c for _, c, _ in uses} >= {"compress", "report", "restore", "bench", "train"}


def test_every_rgbatch_command_line_in_the_docs_is_one_the_cli_takes():
    wrong = []
    for where, command, options in rgbatch_uses():
        if command not in CLI_COMMANDS:
            wrong.append(f"{where}: no command {command!r}")
        elif unknown := sorted(options - CLI_COMMANDS[command] - {"--help"}):
            wrong.append(f"{where}: rgbatch {command} has no {', '.join(unknown)}")
    assert not wrong, "\n".join(wrong)


def test_every_benchmark_command_line_in_the_docs_names_a_script_and_its_options():
    wrong = []
    common = (ROOT / "benchmarks" / "_common.py").read_text()
    for where, line in LINES:
        tokens = words(line)
        for i, token in enumerate(tokens):
            if token.startswith("benchmarks/") and token.endswith(".py"):
                script = ROOT / token
                if not script.is_file():
                    wrong.append(f"{where}: no script {token}")
                    continue
                source = script.read_text() + (common if "_common" in script.read_text() else "")
                for option in sorted(options_after(tokens[i + 1:])):
                    if f'"{option}"' not in source and f"'{option}'" not in source:
                        wrong.append(f"{where}: {token} has no {option}")
    assert not wrong, "\n".join(wrong)


def test_every_make_target_in_the_docs_is_in_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.M))
    used = [(where, m.group(1)) for where, line in LINES
            for m in re.finditer(r"(?:^|[;&]\s*)make(?:\s+[A-Z_]+=\S*)*\s+([a-z][a-z0-9-]*)", line)]
    assert len(used) > 5
    wrong = [f"{where}: make {t}" for where, t in used if t not in targets]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_fences_are_closed(doc):
    assert doc.read_text().count("\n```") % 2 == 0


@pytest.mark.parametrize("name", ["MIXING", "GROUPED"])
def test_the_mixers_starting_weights_in_the_docs_are_the_formats(name):
    """The mixing coders' starting weights are constants of the format (not in the weight file):
    docs/ENTROPY.md gives them for a decoder written from the docs alone (session 59)."""
    import numpy as np

    from rgbatch import mix

    text = (ROOT / "docs" / "ENTROPY.md").read_text()
    table = text.split(f"`mix.{name}.start` (`rgbatch/mix.py`")[1].split("\n\n")[1]
    rows = [line.strip().strip("|").split("|") for line in table.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    assert np.array_equal(np.array([[int(v) for v in r[1:]] for r in rows]), getattr(mix, name).start)
