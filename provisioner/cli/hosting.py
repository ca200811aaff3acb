"""`provision hosting`: plan (default) or apply the hosting of approved requests."""

from pathlib import Path

import click

from provisioner.cli._common import config_option, json_option, load_config, open_store, print_json
from provisioner.errors import NotFound, StateError, UserError


def _request_id(store, ref: str) -> str:
    """A request id, or the path of a request file that was submitted (its exact bytes)."""
    from provisioner import yamlsrc
    from provisioner.request import content_sha256, read_request_file
    from provisioner.store.models import RequestRow

    path = Path(ref)
    if not path.is_file():
        return ref
    raw = read_request_file(path)
    # The request file is user input: the same bounded, alias-free parser as validation.
    data = yamlsrc.load(raw.decode("utf-8", errors="replace")).data
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise StateError(f"{ref}: not a request file")
    request_id = data["id"]
    with store.session() as session:
        row = session.get(RequestRow, request_id)
        if row is None:
            raise NotFound(f"{ref}: request {request_id} was never submitted")
        if row.sha256 != content_sha256(raw):
            raise StateError(f"{ref}: differs from what was submitted as {request_id}; submit an edited "
                             "request under a new id")
    return request_id


@click.command()
@click.argument("requests", nargs=-1)
@click.option("--all-approved", is_flag=True,
              help="Every request whose SOP waits on provisioning (approved, not yet provisioned).")
@click.option("--apply", "do_apply", is_flag=True, help="Apply the plan (default: only show it).")
@click.option("--checksum", help="Apply only if the plan still has this checksum (from a reviewed plan).")
@config_option
@json_option
def hosting(requests, all_approved, do_apply, checksum, config_path, as_json):
    """Plan or apply hosting for approved REQUESTS (ids or submitted files).

    Several requests (or --all-approved) make one plan and one apply; each request's
    SOP then records its step and goes on to its letter. A site that fails is undone
    alone: the others go live, and the summary says which failed and why.
    """
    from provisioner.cli._progress import for_terminal
    from provisioner.hosting import Hosting
    from provisioner.sop.batch import provision_requests
    from provisioner.sop.engine import PROVISION_ACTION, Engine

    if all_approved and requests:
        raise UserError("give request ids or --all-approved, not both")
    if not all_approved and not requests:
        raise UserError("give the approved requests to provision (ids or submitted files), or --all-approved")
    config = load_config(config_path)
    store = open_store(config.resolved_state_url())
    engine = Engine(config, store)
    if all_approved:
        ids = engine.waiting_on(PROVISION_ACTION)
        if not ids:
            print_json({"requests": [], "applies": []}) if as_json else \
                click.echo("no approved request waits on provisioning: nothing to do")
            return
    else:
        ids = list(dict.fromkeys(_request_id(store, ref) for ref in requests))
    if not do_apply:
        plan, _ = Hosting(config, store, source="cli").plan(ids)
        if as_json:
            print_json(plan.as_dict())
        else:
            click.echo(plan.render(), nl=False)
            click.echo("dry run: nothing was changed; apply with --apply"
                       + (f" --checksum {plan.checksum}" if not plan.empty else ""))
        return
    # One site shows what it always showed; a batch gets a bar (or lines) and a summary table.
    batch = len(ids) > 1
    report = provision_requests(engine, ids, checksum=checksum,
                                progress=for_terminal(as_json) if batch else None, source="cli",
                                force=not all_approved)
    if as_json:
        print_json(report.as_dict())
    else:
        for applied in report.applies:
            if isinstance(applied, Exception):
                if batch:
                    click.echo(f"hosting apply stopped: {applied}")
                continue
            _report(applied)
        if batch:
            _summary(report)
    error = report.error()
    if error is not None:
        raise error


def _report(result) -> None:
    click.echo(result.plan.render(full=False), nl=False)
    if not result.changed:
        click.echo("already provisioned: nothing changed")
    for site in result.sites:
        checks = ", ".join(site["verified"])
        click.echo(f"{site['fqdn']}: provisioned at {site['public_ip']} on {site['web_host']}; verified: {checks}")
    for fqdn, sheet in result.sheets.items():
        click.echo(f"{fqdn}: credentials sheet (shown once) written to {sheet}")


def _summary(report) -> None:
    """The per-request table, then each failure's (or wait's) reason in full: a reason is too
    long for a cell of a terminal's width."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if not console.is_terminal:
        console = Console(width=300)  # a pipe or file has no width; keep rows on one line
    grid = Table(title=f"{len(report.rows)} requests, {len(report.failed)} failed")
    for column in ("request", "site", "result", "letter"):
        grid.add_column(column, no_wrap=True, overflow="fold")
    for row in report.rows:
        # Text, not markup: names are plain text to rich.
        grid.add_row(*(Text(str(row[key] or "")) for key in ("request", "fqdn", "result", "letter")),
                     style="red" if row["result"] == "failed" else None)
    console.print(grid)
    for row in report.rows:
        if row["result"] in ("failed", "waiting"):
            click.echo(f"{row['result']}: {row['request']} ({row['fqdn']}): {row['detail']}")
