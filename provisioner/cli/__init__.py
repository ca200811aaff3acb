"""The `provision` command: a thin layer that parses, calls plain functions, prints.

Only here are ProvisionerErrors turned into one-line messages and exit codes;
`--debug` keeps the traceback.
"""

import importlib
import signal
import sys
import textwrap
import threading

import click

from provisioner import __version__
from provisioner.errors import ProvisionerError


# Every command: name -> (module, attribute, short help). `provision --help` lists this table
# without importing the commands; a command's module, and with it SQLAlchemy, WeasyPrint or
# ansible-runner, is imported only when that command runs or shows its own help. The short help
# is the first sentence of the command's docstring (tests/unit/test_cli_startup.py keeps them equal).
COMMANDS = {
    "audit": ("provisioner.cli.audit", "audit",
              "Compare every configuration record with the live DNS, web and database hosts."),
    "backup": ("provisioner.cli.backup", "backup",
               "Backups with restic: every site's files and database, restores proven."),
    "credentials": ("provisioner.cli.credentials", "credentials",
                    "A site's access data (stored encrypted, shown once in the credentials sheet)."),
    "decide": ("provisioner.cli.decide", "decide", "Approve or reject REQUEST_ID at its SOP's decision step."),
    "host": ("provisioner.cli.host", "host", "The servers themselves: what they must have before sites go on them."),
    "hosting": ("provisioner.cli.hosting", "hosting",
                "Plan or apply hosting for approved REQUESTS (ids or submitted files)."),
    "import": ("provisioner.cli.import_", "import_",
               "List vhosts, pools, databases and A records no record explains, or adopt one site as it is."),
    "inventory": ("provisioner.cli.inventory", "inventory",
                  "The Ansible inventory: hosts, groups, addresses and key files the toolkit uses."),
    "lab": ("provisioner.cli.lab", "lab", "The local lab: isolated Debian 12 hosts on a bridge (root only)."),
    "letter": ("provisioner.cli.letter", "letter",
               "Render REQUEST_ID's letter as PDF and HTML: the configuration letter of a provisioned site, "
               "or the reply letter (surat balasan) of a rejected request."),
    "report": ("provisioner.cli.report", "report", "Reports of the hosting SOP."),
    "request": ("provisioner.cli.request", "request",
                "Requests: the agency's letter as a YAML file, and its SOP instance."),
    "resume": ("provisioner.cli.resume", "resume",
               "Run REQUEST_ID's due action again; it reads the live state and converges."),
    "serve": ("provisioner.cli.serve", "serve", "Accept signed approval decisions over HTTP (POST /v1/decisions)."),
    "site": ("provisioner.cli.site", "site", "Configuration records of sites, their history and maintenance."),
    "sla": ("provisioner.cli.sla", "sla", "List open steps whose deadline (in working time) has passed."),
    "sop": ("provisioner.cli.sop", "sop", "The office's SOPs (sop/*.yaml)."),
    "step": ("provisioner.cli.step", "step", "Record STEP (key or number) of REQUEST_ID as done."),
    "tls": ("provisioner.cli.tls", "tls", "Site certificates: what is served, and their renewal."),
    "website": ("provisioner.cli.website", "website",
                "A site's content in releases: deploy, list, roll back (see docs/website.md)."),
}


class _Group(click.Group):
    """The root group: commands from COMMANDS, imported on demand; toolkit errors become a
    message and an exit code."""

    def list_commands(self, ctx):
        return sorted(set(self.commands) | set(COMMANDS))

    def get_command(self, ctx, name):
        if name not in self.commands and name in COMMANDS:
            module, attribute, _ = COMMANDS[name]
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return self.commands.get(name)

    def format_commands(self, ctx, formatter):
        # click's own listing would call get_command, importing every command to read its help.
        names = [name for name in self.list_commands(ctx)
                 if name not in self.commands or not self.commands[name].hidden]
        if not names:
            return
        # The same cut as click's: one line per command, ending in "..." when it is too long.
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(limit)))
            else:
                rows.append((name, textwrap.shorten(COMMANDS[name][2], limit, placeholder="...",
                                                    break_on_hyphens=False)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ProvisionerError as err:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)


def _unwind(signum, _frame):
    # A terminated run unwinds like Ctrl-C: its secrets files are removed and its
    # locks released now (ansible-playbook dies with the process either way).
    raise SystemExit(128 + signum)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="provision")
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
@click.pass_context
def main(ctx, debug):
    """Provision hosting and subdomains for agencies, following the office's SOP."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _unwind)
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
