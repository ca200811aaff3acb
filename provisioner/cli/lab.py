"""`provision lab`: build, start, inspect and stop the local lab of real hosts."""

import json

import click

from provisioner.lab import lifecycle


@click.group()
def lab():
    """The local lab: four isolated Debian 12 hosts on a bridge (root only)."""


@lab.command()
def up():
    """Build (first time) and start the lab; a running lab is left as it is."""
    _print_status(lifecycle.up(log=click.echo), as_json=False)


@lab.command()
def down():
    """Stop every lab process; remove namespaces, mounts and the bridge."""
    lifecycle.down(log=click.echo)
    click.echo("the lab is down")


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(as_json):
    """Show each host, its address and the health of its services."""
    current = lifecycle.status()
    _print_status(current, as_json)
    if not current.up:
        raise SystemExit(1)


def _print_status(current: lifecycle.LabStatus, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(current.as_dict(), indent=2))
        return
    click.echo(f"lab: {'up' if current.up else 'down'} (bridge {'present' if current.bridge else 'absent'})")
    for h in current.hosts:
        services = " ".join(f"{name}:{'ok' if alive else 'FAIL'}" for name, alive in h.services.items())
        state = "up" if h.healthy else ("running" if h.running else "stopped")
        click.echo(f"  {h.name:<5} {h.address:<12} {h.role:<13} {state:<8} {services}")
