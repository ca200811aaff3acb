"""A quick start: help and version without the heavy libraries, and the lazy command table kept true."""

import importlib
import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from provisioner.cli import COMMANDS, _Group, main

# Each is imported only by the commands that use it; none is needed to print help or the version.
HEAVY = ("sqlalchemy", "alembic", "weasyprint", "ansible_runner", "paramiko", "dns", "jinja2", "requests",
         "pydantic", "cryptography", "acme")

# Runs in a fresh interpreter: this test process has imported everything already.
PROBE = """
import json, sys
from provisioner.cli import COMMANDS, main

def run(args):
    try:
        main.main(args, prog_name="provision", standalone_mode=False)
    except SystemExit:
        pass

run(["--version"])
run(["--help"])
for name in COMMANDS:
    run([name, "--help"])
    command = main.get_command(None, name)
    for sub in getattr(command, "commands", {}):
        run([name, sub, "--help"])
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))))
"""


def _group_commands():
    for name, (module, attribute, _) in sorted(COMMANDS.items()):
        yield name, getattr(importlib.import_module(module), attribute)


def test_help_and_version_import_none_of_the_heavy_libraries():
    done = subprocess.run([sys.executable, "-c", PROBE, *HEAVY], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_the_module_entry_point_prints_the_version():
    done = subprocess.run([sys.executable, "-m", "provisioner.cli", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("provision, version ")


@pytest.mark.parametrize("name, command", list(_group_commands()))
def test_the_table_names_each_command_with_its_own_short_help(name, command):
    assert isinstance(command, click.Command)
    assert command.name == name
    assert command.get_short_help_str(limit=10_000) == COMMANDS[name][2], (
        f"COMMANDS[{name!r}] in provisioner/cli/__init__.py: the short help must be the first sentence "
        "of the command's docstring")


def test_help_lists_every_command_with_its_help_line():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = {}
    for line in result.output.split("Commands:\n", 1)[1].splitlines():
        name, _, text = line.strip().partition(" ")
        listed[name] = text.strip()
    assert set(listed) == set(COMMANDS)
    for name, text in listed.items():
        full = COMMANDS[name][2]
        assert text == full or (text.endswith("...") and full.startswith(text.removesuffix("...")))


@pytest.mark.parametrize("name, command", list(_group_commands()))
def test_every_command_and_subcommand_shows_its_help(name, command):
    paths = [[name]] + [[name, sub] for sub in getattr(command, "commands", {})]
    for path in paths:
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert result.output.startswith("Usage: ") and f" {' '.join(path)} " in result.output.splitlines()[0]


def test_an_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command 'no-such-command'" in result.output


def test_a_command_added_directly_is_listed_beside_the_table():
    group = _Group(name="provision")

    @click.command()
    def extra():
        """An extra command added the eager way."""

    group.add_command(extra)
    result = CliRunner().invoke(group, ["--help"])
    assert result.exit_code == 0
    assert "extra" in result.output and "An extra command added the eager way." in result.output
    assert all(f"  {name} " in result.output for name in COMMANDS)
    assert group.get_command(None, "extra") is extra


def test_site_export_offers_exactly_the_formats_and_records_that_records_knows():
    from provisioner import records
    from provisioner.cli import site

    assert site.EXPORT_FORMATS == tuple(records.FORMATS)
    assert site.EXPORT_RECORDS == tuple(records.RECORDS)
