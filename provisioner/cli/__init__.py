"""The `provision` command: a thin layer that parses, calls plain functions, prints.

Only here are ProvisionerErrors turned into one-line messages and exit codes;
`--debug` keeps the traceback.
"""

import signal
import sys
import threading

import click

from provisioner import __version__
from provisioner.errors import ProvisionerError


class _Group(click.Group):
    """A click group that turns toolkit errors into a message and an exit code."""

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


def _register():
    # One module per command group; each adds itself here.
    from provisioner.cli import lab

    main.add_command(lab.lab)

    from provisioner.cli import decide, request, serve, sla, sop, step

    main.add_command(request.request)
    main.add_command(sop.sop)
    main.add_command(step.step)
    main.add_command(decide.decide)
    main.add_command(sla.sla)
    main.add_command(serve.serve)

    from provisioner.cli import credentials, hosting, resume

    main.add_command(hosting.hosting)
    main.add_command(resume.resume)
    main.add_command(credentials.credentials)

    from provisioner.cli import letter

    main.add_command(letter.letter)

    from provisioner.cli import audit

    main.add_command(audit.audit)

    from provisioner.cli import report, site

    main.add_command(site.site)
    main.add_command(report.report)

    from provisioner.cli import tls

    main.add_command(tls.tls)

    from provisioner.cli import inventory

    main.add_command(inventory.inventory)

    from provisioner.cli import host

    main.add_command(host.host)

    from provisioner.cli import import_

    main.add_command(import_.import_)

    from provisioner.cli import website

    main.add_command(website.website)


_register()
