"""Help pages read as a user reads them: no rendering artefacts of the CLI library, and the
version line names the default model."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from rgbatch import __version__
from rgbatch.cli import app
from rgbatch.weights import read_weight_file

runner = CliRunner()
COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)
# what typer >= 0.27 prints: "{sources}...", "--json <bool>", "<list[str]>" (pinned below it in pyproject.toml)
ARTEFACTS = re.compile(r"\{\w+\}|<bool>|<list\[|<str>|<int>")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_pages_show_no_rendering_artefacts(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--help" in result.output
    assert not ARTEFACTS.search(result.output), ARTEFACTS.findall(result.output)


@pytest.mark.parametrize("command", ["compress", "encode", "decode", "restore", "compact", "bench", "report"])
def test_depth_and_iterations_name_the_same_option(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert re.search(r"--(iterations|depth)\s*,?\s*--(depth|iterations)", result.output), result.output


def test_version_names_the_package_and_the_default_model():
    result = runner.invoke(app, ["--version"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert __version__ in result.output and read_weight_file()[1] in result.output
    # one line in a pipe of 80 columns too (until session 61 a result line was wrapped there: a script reads it)
    assert len(runner.invoke(app, ["--version"], env={"COLUMNS": "80"}).output.splitlines()) == 1


@pytest.mark.parametrize("command", [[], ["report"]])
def test_h_is_help(command):
    assert runner.invoke(app, command + ["-h"]).output == runner.invoke(app, command + ["--help"]).output


def test_restore_and_compact_say_their_targets_cut_stored_streams():
    """They took compress's words: "part of the next where that measures better (--partial)", an
    option neither has (until session 61)."""
    for command in ("restore", "compact"):
        said = _words(runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output)
        assert "--partial" not in said and "the first stored depth whose recorded MS-SSIM reaches this" in said


def _words(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_help_is_shown_whole(command):
    # markdown rendering drops what looks like HTML (`<name>`): every help text must come through
    import typer.main

    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "1000"})
    shown = _words(result.output)
    click_command = typer.main.get_command(app).commands[command]
    for parameter in click_command.params:
        text = getattr(parameter, "help", None)
        if text:
            assert _words(text.replace("`", "")) in shown, (parameter.name, text)


def test_command_list_shows_each_summary_as_one_paragraph():
    # a docstring's line breaks must not break the command list's sentences
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "1000"})
    line = next(line for line in result.output.splitlines() if " encode " in line)
    assert "An image that cannot be read exits 1" in line
