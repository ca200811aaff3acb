"""`provision report`: the SOP's usage data and reports."""

import getpass

import click

from provisioner.cli._common import config_option, json_option, load_config, open_store, print_json, table


@click.group()
def report():
    """Reports of the hosting SOP."""


@report.command("usage")
@click.option("--month", help="YYYY-MM (default: this month, UTC).")
@click.option("--office", help="Only this office's sites (default: a report per office).")
@click.option("--out", type=click.Path(file_okay=False), help="Directory (default: reports/ in the state home).")
@config_option
@json_option
def usage_(month, office, out, config_path, as_json):
    """Disk against quota, database size, HTTP requests and bytes per site; CSV and PDF per office."""
    from provisioner import usage

    config = load_config(config_path)
    store = open_store(config.resolved_state_url())
    collected = usage.collect(config, store, usage.parse_month(month), office=office)
    written = usage.write(config, store, collected, out, source="cli", actor=getpass.getuser(),
                          offices=[office] if office else None)
    if as_json:
        print_json(collected.as_dict() | {"files": written})
        return
    table(f"Usage {collected.month}", ["FQDN", "State", "Quota MB", "Disk MB", "% quota", "DB MB", "Requests",
                                       "MB served", "Over quota"],
          [[r["fqdn"], r["state"], r["quota_mb"], r["disk_mb"], r["quota_used_percent"], r["db_mb"], r["requests"],
            r["mb_served"], "OVER" if r["over_quota"] == "yes" else ""]
           for r in usage.csv_rows(collected, collected.sites)])
    if not written:
        click.echo("no site to report on: nothing written (give --office for an empty report)")
    for entry in written:
        click.echo(f"{entry['office']}: {entry['sites']} sites; {entry['pdf']} and {entry['csv']}")
