"""`provision credentials`: new passwords for a site's database and SFTP accounts."""

import click

from provisioner.cli._common import config_option, json_option, load_config, open_store, print_json


@click.group()
def credentials():
    """A site's access data (stored encrypted, shown once in the credentials sheet)."""


@credentials.command()
@click.argument("fqdn")
@click.option("--only", type=click.Choice(["db", "sftp"]), help="Rotate only this account.")
@config_option
@json_option
def rotate(fqdn, only, config_path, as_json):
    """Make new passwords for FQDN, apply them, prove them by logging in, write a new sheet."""
    from provisioner.hosting import rotate_credentials

    config = load_config(config_path)
    result = rotate_credentials(config, open_store(config.resolved_state_url()), fqdn,
                                kinds=(only,) if only else ("db", "sftp"))
    if as_json:
        print_json(result)
    else:
        click.echo(f"{fqdn}: new {' and '.join(result['rotated'])} password(s) applied and verified "
                   f"({', '.join(result['verified'])}); credentials sheet (shown once): {result['sheet']}")
