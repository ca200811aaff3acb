"""`provision site`: the configuration records, their history and exports; suspend, unsuspend, remove."""

import click

from provisioner.cli._common import config_option, json_option, load_config, open_reads, open_store, print_json, table

# records' FORMATS and RECORDS keys, written out so that `provision site --help` need not import
# records and SQLAlchemy (tests/unit/test_cli_startup.py keeps them equal).
EXPORT_FORMATS = ("csv", "xlsx")
EXPORT_RECORDS = ("configuration", "ip")


def _open(config_path):
    config = load_config(config_path)
    return config, open_store(config.resolved_state_url())


@click.group()
def site():
    """Configuration records of sites, their history and maintenance."""


@site.command("list")
@click.option("--state", help="Only sites in this state (provisioned, suspended, removed, ...).")
@config_option
@json_option
def list_(state, config_path, as_json):
    """Every recorded site, removed ones included."""
    with open_reads(load_config(config_path)) as reads:
        rows = reads.sites(state)
    if as_json:
        print_json(rows)
        return
    table("Sites", ["FQDN", "State", "Request", "Office", "IP", "Web", "DB", "Quota MB", "Updated (UTC)", "Reason"],
          [[r["fqdn"], r["state"], r["request_id"], r["office"],
            f"{r['public_ip']}{' (dedicated)' if r['dedicated_ip'] else ''}", r["web_host"], r["db_host"],
            r["quota_mb"], r["updated_at"], r["reason"]] for r in rows], long=("Reason",))


@site.command()
@click.argument("fqdn")
@config_option
@json_option
def show(fqdn, config_path, as_json):
    """A site's configuration record and every event of its history."""
    from provisioner import records

    config, store = _open(config_path)
    shown = records.site_show(store, fqdn, config)
    if as_json:
        print_json(shown)
        return
    record = shown["record"]
    width = max(len(k) for k in record)
    click.echo(f"{fqdn}")
    for key, value in record.items():
        click.echo(f"  {key:<{width}}  {'' if value is None else value}")
    click.echo(f"  {'ip_held':<{width}}  {shown['ip']['ip_held']}")
    click.echo(f"history ({len(shown['history'])} events):")
    for event in shown["history"]:
        payload = {k: v for k, v in event["payload"].items() if k not in ("record", "fqdn")}
        details = ", ".join(f"{k}={v}" for k, v in payload.items() if v not in (None, "", [], {}))
        click.echo(f"  {event['at']}  {event['kind']:<22} {event['actor']:<12} {event['source']:<7} {details}")


@site.command()
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="csv", show_default=True)
@click.option("--records", "which", type=click.Choice(EXPORT_RECORDS), default="configuration",
              show_default=True, help="configuration: the configuration records; ip: IP and subdomain records.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="File to write.")
@config_option
@json_option
def export(fmt, which, out, config_path, as_json):
    """Export the configuration or the IP/subdomain records for the office's archive."""
    from provisioner import records

    config, store = _open(config_path)
    written = records.export(store, which, fmt, out, config)
    if as_json:
        print_json(written)
    else:
        click.echo(f"{written['rows']} {which} records written to {written['path']}")


def _maintenance(action, fqdn, do_apply, checksum, config_path, as_json, by, **kwargs):
    from provisioner.lifecycle import Lifecycle

    config, store = _open(config_path)
    work = Lifecycle(config, store, source="cli", actor=by)
    if not do_apply:
        planned = work.plan(action, fqdn)
        if as_json:
            print_json(planned.as_dict())
            return
        click.echo(planned.render(), nl=False)
        if not planned.noop:
            click.echo(f"dry run: nothing was changed; apply with --apply --checksum {planned.checksum}")
        return
    result = getattr(work, action)(fqdn, checksum=checksum, **kwargs)
    if as_json:
        print_json(result.as_dict())
        return
    click.echo(result.plan.render(full=False), nl=False)
    if not result.changed:
        return
    if result.archive:
        click.echo(f"archive: {result.archive['path']}")
        for f in result.archive["files"]:
            click.echo(f"  {f['file']}  {f['bytes']} bytes  sha256 {f['sha256']}")
    checks = ", ".join(f"{k}: {v}" for k, v in result.checks.items())
    click.echo(f"{fqdn}: {result.state}; checked {checks}")


_apply = click.option("--apply", "do_apply", is_flag=True, help="Apply the plan (default: only show it).")
_checksum = click.option("--checksum", help="Apply only if the plan still has this checksum.")
_by = click.option("--by", help="Who does it (default: the OS user).")


@site.command()
@click.argument("fqdn")
@click.option("--reason", required=True, help="Why (recorded in the maintenance history).")
@_apply
@_checksum
@_by
@config_option
@json_option
def suspend(fqdn, reason, do_apply, checksum, by, config_path, as_json):
    """Serve a 503 maintenance page instead of the site (files, database and DNS stay)."""
    _maintenance("suspend", fqdn, do_apply, checksum, config_path, as_json, by, reason=reason)


@site.command()
@click.argument("fqdn")
@click.option("--reason", help="Why (recorded in the maintenance history).")
@_apply
@_checksum
@_by
@config_option
@json_option
def unsuspend(fqdn, reason, do_apply, checksum, by, config_path, as_json):
    """Serve the site again."""
    _maintenance("unsuspend", fqdn, do_apply, checksum, config_path, as_json, by, reason=reason)


@site.command()
@click.argument("fqdn")
@click.option("--reason", help="Why (recorded in the maintenance history).")
@_apply
@_checksum
@_by
@config_option
@json_option
def remove(fqdn, reason, do_apply, checksum, by, config_path, as_json):
    """Archive the database and files, then remove DNS, vhost, pool, users, database and a dedicated IP."""
    _maintenance("remove", fqdn, do_apply, checksum, config_path, as_json, by, reason=reason)
