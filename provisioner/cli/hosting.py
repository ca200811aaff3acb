"""`provision hosting`: plan (default) or apply the hosting of approved requests."""

from pathlib import Path

import click

from provisioner import yamlsrc
from provisioner.cli._common import config_option, json_option, print_json
from provisioner.config import load_config
from provisioner.errors import NotFound, StateError
from provisioner.hosting import Hosting
from provisioner.request import content_sha256, read_request_file
from provisioner.sop.engine import Engine
from provisioner.store import open_store
from provisioner.store.models import RequestRow


def _request_id(store, ref: str) -> str:
    """A request id, or the path of a request file that was submitted (its exact bytes)."""
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
@click.argument("requests", nargs=-1, required=True)
@click.option("--apply", "do_apply", is_flag=True, help="Apply the plan (default: only show it).")
@click.option("--checksum", help="Apply only if the plan still has this checksum (from a reviewed plan).")
@config_option
@json_option
def hosting(requests, do_apply, checksum, config_path, as_json):
    """Plan or apply hosting for approved REQUESTS (ids or submitted files)."""
    config = load_config(config_path)
    store = open_store(config.resolved_state_url())
    ids = [_request_id(store, ref) for ref in requests]
    work = Hosting(config, store, source="cli")
    if not do_apply:
        plan, _ = work.plan(ids)
        if as_json:
            print_json(plan.as_dict())
        else:
            click.echo(plan.render(), nl=False)
            click.echo("dry run: nothing was changed; apply with --apply"
                       + (f" --checksum {plan.checksum}" if not plan.empty else ""))
        return
    engine = Engine(config, store)
    # A request whose SOP waits on this step goes through the engine, so the
    # step is recorded done and the SOP moves on to the letter; others (already
    # provisioned) are applied again, which converges or changes nothing.
    due = [i for i in ids if _waits_on_provisioning(engine, store, i)]
    results = []
    for request_id in due:
        engine.resume(request_id, force=True, options={"checksum": checksum, "results": results}, source="cli")
    rest = [i for i in ids if i not in due]
    if rest:
        results.append(work.apply(rest, checksum=checksum))
    for result in results:
        _report(result, as_json)


def _waits_on_provisioning(engine, store, request_id: str) -> bool:
    with store.session() as session:
        row = session.get(RequestRow, request_id)
    if row is None:
        raise NotFound(f"no request {request_id!r}")
    if not row.current_step:
        return False
    return engine.sop_for(row.office, row.service).step(row.current_step).action == "provision_site"


def _report(result, as_json: bool) -> None:
    if as_json:
        print_json(result.as_dict())
        return
    click.echo(result.plan.render(full=False), nl=False)
    if not result.changed:
        click.echo("already provisioned: nothing changed")
    for site in result.sites:
        checks = ", ".join(site["verified"])
        click.echo(f"{site['fqdn']}: provisioned at {site['public_ip']} on {site['web_host']}; verified: {checks}")
    for fqdn, sheet in result.sheets.items():
        click.echo(f"{fqdn}: credentials sheet (shown once) written to {sheet}")
