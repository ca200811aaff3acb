"""`provision inventory check`: every problem of an Ansible inventory, before anything runs."""

import click

from provisioner.cli._common import config_option, json_option, load_config, print_json


@click.group()
def inventory():
    """The Ansible inventory: hosts, groups, addresses and key files the toolkit uses."""


@inventory.command()
@click.argument("path", required=False, type=click.Path())
@click.option("--offline", is_flag=True,
              help="Do not look at key files on this machine (checking an inventory away from the controller).")
@config_option
@json_option
def check(path, offline, config_path, as_json):
    """Check PATH (default: hosting.inventory of the configuration) and list every problem.

    Each problem reads file:line: host or group: key: rule. Exit 0 when clean, 2 otherwise.
    """
    from provisioner.inventory_check import check_inventory

    if path is None:
        path = load_config(config_path).hosting.inventory
    report = check_inventory(path, offline=offline)
    if as_json:
        print_json(report.as_dict())
    else:
        for warning in report.warnings:
            click.echo(f"warning: {warning}", err=True)
        for problem in report.problems:
            click.echo(str(problem), err=True)
        click.echo(report.summary(), err=not report.ok)
    if not report.ok:
        raise SystemExit(2)
