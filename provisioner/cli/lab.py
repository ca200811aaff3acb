"""`provision lab`: build, start, inspect and stop the local lab of real hosts."""

import json
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # the lab's module brings in the store's migrations: imported when a command runs
    from provisioner.lab.lifecycle import LabStatus


@click.group()
def lab():
    """The local lab: isolated Debian 12 hosts on a bridge (root only)."""


@lab.command()
def up():
    """Build (first time) and start the lab; a running lab is left as it is."""
    from provisioner.lab import lifecycle

    _print_status(lifecycle.up(log=click.echo), as_json=False)


@lab.command()
def down():
    """Stop every lab process; remove namespaces, mounts and the bridge."""
    from provisioner.lab import lifecycle

    lifecycle.down(log=click.echo)
    click.echo("the lab is down")


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(as_json):
    """Show each host, its address and the health of its services."""
    from provisioner.lab import lifecycle

    current = lifecycle.status()
    _print_status(current, as_json)
    if not current.up:
        raise SystemExit(1)


def _print_status(current: "LabStatus", as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(current.as_dict(), indent=2))
        return
    click.echo(f"lab: {'up' if current.up else 'down'} (bridge {'present' if current.bridge else 'absent'})")
    for h in current.hosts:
        services = " ".join(f"{name}:{'ok' if alive else 'FAIL'}" for name, alive in h.services.items())
        state = "up" if h.healthy else ("running" if h.running else "stopped")
        click.echo(f"  {h.name:<7} {h.address:<12} {h.role:<13} {state:<8} {services}")
