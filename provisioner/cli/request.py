"""`provision request`: validate, submit, list, show, resume requests, and spawn a linked hosting request."""

import click

from provisioner.cli._common import (config_option, json_option, load_config, localize, open_engine, open_reads,
                                     parse_at, print_json, print_outcome, table, when)
from provisioner.errors import ValidationError


@click.group()
def request():
    """Requests: the agency's letter as a YAML file, and its SOP instance."""


@request.command()
@click.argument("file", type=click.Path(dir_okay=False))
@config_option
@json_option
def validate(file, config_path, as_json):
    """Check a request file and list every problem (file:line: field: rule)."""
    from provisioner.request import load_request

    config = load_config(config_path)
    try:
        req = load_request(file, config)
    except ValidationError as err:
        if as_json:
            print_json({"ok": False, "file": file, "problems": [
                {"line": p.line, "field": p.field, "rule": p.rule} for p in err.problems]})
        else:
            for problem in err.problems:
                click.echo(f"{file}:{problem.line or 0}: {problem.field}: {problem.rule}", err=True)
        raise SystemExit(2)
    if as_json:
        print_json({"ok": True, "file": file, "request": req.summary()})
    else:
        click.echo(f"{file}: valid ({req.id}, {req.service}, {req.fqdn or 'no site'}, office {req.office})")


@request.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--at", help="When the letter arrived (ISO 8601, office time if no zone); default now.")
@config_option
@json_option
def submit(file, at, config_path, as_json):
    """Validate FILE, register it and start the SOP its `service` names."""
    from provisioner.request import read_request_file

    engine = open_engine(config_path)
    raw = read_request_file(file)
    outcome = engine.submit(raw, file, at=parse_at(at))
    print_json(outcome.as_dict()) if as_json else print_outcome(outcome)


@request.command("list")
@click.option("--state", type=click.Choice(["submitted", "approved", "rejected", "attention", "done"]))
@config_option
@json_option
def list_(state, config_path, as_json):
    """List requests and where each one is."""
    config = load_config(config_path)
    with open_reads(config) as reads:
        rows = reads.requests(state)
    if as_json:
        return print_json([localize(r, config.office(r["office"]).tz) for r in rows])
    table("Requests", ["id", "service", "office", "site", "state", "next step", "submitted"],
          [(r["id"], r["service"], r["office"], r["fqdn"], r["state"], r["current_step"] or "-",
            when(r["submitted_at"].astimezone(config.office(r["office"]).tz))) for r in rows])


@request.command()
@click.argument("request_id")
@click.option("--events", "with_events", is_flag=True, help="Also print the event log.")
@config_option
@json_option
def show(request_id, with_events, config_path, as_json):
    """A request's state and every step: actor, planned start, deadline, actual end, breach."""
    engine = open_engine(config_path)
    shown = engine.show(request_id)
    tz = engine.config.office(shown["office"]).tz
    shown = localize(shown, tz)
    if as_json or with_events:
        shown["events"] = localize(engine.events(request_id), tz)
    if as_json:
        return print_json(shown)
    click.echo(f"{shown['id']}  {shown['fqdn']}  SOP {shown['sop']}  office {shown['office']}  "
               f"state {shown['state']}")
    click.echo(f"sha256 {shown['sha256']}  (times in {tz.key})")
    table(shown["title"], ["no", "key", "activity", "actor", "waktu", "status", "start",
                           "deadline", "ended", "by", "breach"],
          [(s["number"], s["key"], s["activity"], s["actor"], s["waktu"]["text"] or "-",
            s["status"] + (f" ({s['branch']})" if s["branch"] else "")
            + (f", action {s['action_status']}" if s.get("action_status") not in (None, "done") else ""),
            when(s["planned_start"]),
            when(s["deadline"]), when(s["ended_at"]), s["by"], s["late"] or "")
           for s in shown["steps"]], long=("activity",))
    for event in shown.get("events", []):
        click.echo(f"{when(event['at'])}  {event['source']:<7} {event['actor']:<16} {event['kind']}"
                   f"  {event['payload']}")


@request.command()
@click.argument("request_id")
@click.option("--force", is_flag=True, help="Take over an action left running by a process that died.")
@config_option
@json_option
def resume(request_id, force, config_path, as_json):
    """Run the actions that are due for a request (after a failure or a crash)."""
    outcome = open_engine(config_path).resume(request_id, force=force)
    print_json(outcome.as_dict()) if as_json else print_outcome(outcome)


@request.command("spawn-hosting")
@click.argument("request_id")
@config_option
@json_option
def spawn_hosting_(request_id, config_path, as_json):
    """Make and submit the hosting request REQUEST_ID needs (website.hosting or application.hosting).

    Once; a second run names the request the first made. The hosting SOP then
    runs for it, and its provisioning resumes REQUEST_ID.
    """
    from provisioner.sop.spawn import linked_child, spawn_hosting, requests_dir

    engine = open_engine(config_path)
    before = linked_child(engine.store, request_id)
    child = spawn_hosting(engine.config, engine.store, request_id)
    made = before is None
    if as_json:
        return print_json({"request": request_id, "hosting_request": child, "created": made,
                           "file": str(requests_dir(engine.config) / f"{child}.yaml")})
    click.echo(f"{request_id}: hosting request {child} " + ("submitted; its hosting SOP started" if made
                                                            else "was made earlier; nothing done"))
