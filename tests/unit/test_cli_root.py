"""The command's surface: help, version, and errors without tracebacks."""

import os

from click.testing import CliRunner

from provisioner import __version__
from provisioner.cli import main


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_help_lists_the_command_groups():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "lab" in result.output


def test_lab_needs_root_with_a_one_line_error(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for command in (["lab", "up"], ["lab", "down"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2
        assert "needs root" in result.output
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_debug_keeps_the_traceback(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(main, ["--debug", "lab", "up"])
    assert result.exit_code != 0
    assert result.exception is not None
    assert "needs root" in str(result.exception)
