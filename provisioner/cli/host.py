"""`provision host prepare`: fresh Debian 12 servers made into the toolkit's name, database and web servers."""

import click

from provisioner.cli._common import config_option, json_option, load_config, print_json


@click.group()
def host():
    """The servers themselves: what they must have before sites go on them."""


@host.command()
@click.argument("target", required=False)
@click.option("--apply", "do_apply", is_flag=True,
              help="Make the changes, then check that a second look finds none (default: only show the plan).")
@click.option("--inventory", "inventory_path", type=click.Path(),
              help="Ansible inventory (default: hosting.inventory of the configuration).")
@config_option
@json_option
def prepare(target, do_apply, inventory_path, config_path, as_json):
    """Install and configure what the toolkit expects on TARGET: a host or a group of the inventory (default: all).

    Name servers get PowerDNS (primary with its API, or secondary) and their zones, database servers MariaDB
    listening for the web servers, web servers Apache, PHP-FPM and the SFTP chroot, backup hosts the
    SFTP-only account of the backup repositories. Without --apply this is a plan: check mode with diff, nothing
    changes. A second --apply changes nothing.
    """
    from provisioner import host_prepare

    config = load_config(config_path)
    inventory_path = inventory_path or config.hosting.inventory
    timeout = config.hosting.step_timeout
    if do_apply:
        result = host_prepare.apply(inventory_path, target, timeout=timeout)
        if as_json:
            print_json(result.as_dict())
            return
        for line in result.applied.lines():
            click.echo(line)
        click.echo("checked again: nothing left to change")
        return
    plan = host_prepare.plan(inventory_path, target, timeout=timeout)
    if as_json:
        print_json(plan.as_dict())
        return
    for line in plan.lines():
        click.echo(line)
    if plan.changed:
        click.echo("plan only: run again with --apply to make these changes")
