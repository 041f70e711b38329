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


def test_search_steps_keeps_the_stream_format():
    result = runner.invoke(app, ["compress", "--help"], env={"COLUMNS": "200"})
    assert "the same stream format" in " ".join(result.output.split())


def test_version_names_the_package_and_the_default_model():
    result = runner.invoke(app, ["--version"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert __version__ in result.output and read_weight_file()[1] in result.output
