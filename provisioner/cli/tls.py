"""`provision tls`: the sites' certificates as served (status) and their renewal (renew)."""

import sys

import click

from provisioner.cli._common import config_option, json_option, load_config, open_store, print_json, table

# Exit code of a renewal run where a site failed (a HostError's): the timer's unit shows it failed.
RENEWAL_FAILED = 4


@click.group()
def tls():
    """Site certificates: what is served, and their renewal."""


@tls.command()
@click.option("--site", "fqdn", help="Only this site (its FQDN).")
@config_option
@json_option
def status(fqdn, config_path, as_json):
    """Every recorded TLS site's certificate as served from outside, against the record."""
    from provisioner import tls_renewal

    config = load_config(config_path)
    store = open_store(config.resolved_state_url())
    rows = tls_renewal.status(config, store, site=fqdn)
    if as_json:
        print_json(rows)
        return
    out = []
    for r in rows:
        served, recorded = r["served"] or {}, r["recorded"] or {}
        note = r["error"] or ""
        if r["last_failure"]:
            note = (note + "; " if note else "") + f"renewal failed {r['last_failure']['at'][:16]}: " \
                f"{r['last_failure']['reason']}"
        out.append((r["fqdn"], r["web_host"], served.get("issuer", "-"), served.get("not_after", "-")[:16],
                    served.get("days_left", "-"), _yes(served.get("trusted")), _yes(served.get("covers")),
                    served.get("serial", "-"), recorded.get("serial", "-"), _yes(r["matches"]), note))
    table("TLS certificates (served from outside)",
          ("site", "web host", "issuer", "not after (UTC)", "days left", "trusted", "covers", "served serial",
           "recorded serial", "matches", "note"), out, long=("note", "served serial", "recorded serial"))


def _yes(value) -> str:
    return "-" if value is None else ("yes" if value else "NO")


@tls.command()
@click.option("--site", "fqdn", help="Only this site (its FQDN).")
@click.option("--within", type=click.IntRange(min=0), help="Renew certificates expiring within DAYS "
              "(default: hosting.acme.renew_within_days).", metavar="DAYS")
@click.option("--apply", "do_apply", is_flag=True, help="Renew, install and check (default: only show the plan).")
@click.option("--checksum", help="Apply only if the plan still has this checksum (from a reviewed plan).")
@click.option("--jitter", type=click.FloatRange(min=0), default=0, show_default=True, metavar="SECONDS",
              help="With --apply: first wait a random time up to SECONDS (timers and cron spread the CA's load).")
@config_option
@json_option
def renew(fqdn, within, do_apply, checksum, jitter, config_path, as_json):
    """Plan (default) or apply the renewal of the certificates that are due."""
    from provisioner import tls_renewal

    config = load_config(config_path)
    store = open_store(config.resolved_state_url())
    result = tls_renewal.renew(config, store, site=fqdn, within=within, apply=do_apply, checksum=checksum,
                               jitter=jitter, source="cli")
    if as_json:
        print_json(result.as_dict())
    else:
        click.echo(result.plan.render(), nl=False)
        if not do_apply:
            if result.plan.due:
                click.echo(f"dry run: nothing was changed; apply with --apply --checksum {result.plan.checksum}")
        else:
            for done in result.renewed:
                click.echo(f"{done['fqdn']}: renewed: serial {done['old_serial']} -> {done['serial']}, "
                           f"valid until {done['not_after']}, served and checked")
            for site, why in result.busy.items():
                click.echo(f"{site}: not renewed this run: {why}")
            for site, why in result.failed.items():
                click.echo(f"{site}: renewal FAILED (the old certificate still serves; retried next run): {why}",
                           err=True)
    if result.failed:
        sys.exit(RENEWAL_FAILED)
