"""`provision decide`: record the approval decision; an approval starts the bound actions."""

import click

from provisioner.cli._common import config_option, json_option, open_engine, parse_at, print_json, print_outcome


@click.command()
@click.argument("request_id")
@click.option("--approve/--reject", default=None, help="The decision.")
@click.option("--by", "role", required=True, help="Role key of who decides (the SOP's decision step).")
@click.option("--reason", help="Why; required to reject (it goes into the reply letter), kept with an "
                                "approval too.")
@click.option("--at", help="When it was decided (ISO 8601, office time if no zone); default now.")
@click.option("--sha256", help="Refuse unless the registered request has this content hash.")
@config_option
@json_option
def decide(request_id, approve, role, reason, at, sha256, config_path, as_json):
    """Approve or reject REQUEST_ID at its SOP's decision step."""
    if approve is None:
        raise click.UsageError("give --approve or --reject")
    outcome = open_engine(config_path).decide(request_id, approve, role, reason=reason,
                                              at=parse_at(at), expected_sha256=sha256)
    print_json(outcome.as_dict()) if as_json else print_outcome(outcome)
