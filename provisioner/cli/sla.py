"""`provision sla`: the steps that are past their time standard now."""

import click

from provisioner.cli._common import (config_option, json_option, load_config, localize, open_reads, parse_at,
                                     print_json, table, when)


@click.command()
@click.option("--at", help="Judge as of this time instead of now (ISO 8601).")
@config_option
@json_option
def sla(at, config_path, as_json):
    """List open steps whose deadline (in working time) has passed."""
    from provisioner.listing import overdue

    config = load_config(config_path)
    moment = parse_at(at)
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=next(iter(config.offices.values())).tz)
    with open_reads(config) as reads:
        found = overdue(config, reads, moment)
    rows = [localize(r, config.office(r["office"]).tz) for r in found]
    if as_json:
        return print_json(rows)
    if not rows:
        return click.echo("nothing is overdue")
    table("Overdue steps", ["request", "site", "step", "activity", "actor", "deadline", "late"],
          [(r["request"], r["fqdn"], f"{r['number']} {r['key']}", r["activity"], r["actor"],
            when(r["deadline"]), r["late"]) for r in rows])
