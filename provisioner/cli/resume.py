"""`provision resume`: after a crash or a failure, converge a request's due action."""

import click

from provisioner.cli._common import config_option, json_option, open_engine, print_json, print_outcome


@click.command()
@click.argument("request_id")
@config_option
@json_option
def resume(request_id, config_path, as_json):
    """Run REQUEST_ID's due action again; it reads the live state and converges.

    A run that died is taken over: hosting holds a lock per site, so a run
    still alive elsewhere is never overtaken.
    """
    outcome = open_engine(config_path).resume(request_id, force=True, source="cli")
    print_json(outcome.as_dict()) if as_json else print_outcome(outcome)
