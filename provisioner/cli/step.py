"""`provision step`: record a step a person did, in the SOP's order, by its role."""

import click

from provisioner.cli._common import config_option, json_option, open_engine, parse_at, print_json, print_outcome


@click.command()
@click.argument("request_id")
@click.argument("step")
@click.option("--by", "role", required=True, help="Role key of who did it (e.g. bagian_umum, kadis).")
@click.option("--note", help="A short note kept with the step.")
@click.option("--at", help="When it was done (ISO 8601, office time if no zone); default now.")
@click.option("--branch", help="For a decision step that is not the approval: the branch taken "
                                "(a step the records answer needs none).")
@click.option("--data", "data_file", type=click.Path(dir_okay=False),
              help="The step's data file (YAML), for a step whose SOP names one: analysis, kak, "
                   "delegation or handover.")
@config_option
@json_option
def step(request_id, step, role, note, at, branch, data_file, config_path, as_json):
    """Record STEP (key or number) of REQUEST_ID as done."""
    outcome = open_engine(config_path).record_step(request_id, step, role, note=note, at=parse_at(at),
                                                   branch=branch, data_file=data_file)
    print_json(outcome.as_dict()) if as_json else print_outcome(outcome)
