"""`provision audit`: configuration records against the live hosts; exit 1 on drift."""

import sys

import click

from provisioner.cli._common import config_option, load_config, open_store
from provisioner.errors import UserError

COLUMNS = ("severity", "kind", "site", "host", "what", "expected", "found", "fix")


# provisioner.audit reads the hosts (paramiko, dnspython, the store): imported when an audit runs.
def run_audit(config, store, **options):
    from provisioner import audit as auditing

    return auditing.audit(config, store, **options)


def audit_fix(config, store, **options):
    from provisioner import audit as auditing

    return auditing.audit_fix(config, store, **options)


@click.command()
@click.option("--site", "fqdn", help="Audit only this site (and skip the zone-wide search for extra records).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "html"]), default="table",
              show_default=True)
@click.option("--fix", is_flag=True, help="Show the plan that restores the recorded state.")
@click.option("--apply", "do_apply", is_flag=True, help="With --fix: apply that plan, then audit again.")
@click.option("--checksum", help="With --fix --apply: apply only if the plan still has this checksum.")
@config_option
def audit(fqdn, fmt, fix, do_apply, checksum, config_path):
    """Compare every configuration record with the live DNS, web and database hosts."""
    if (do_apply or checksum) and not fix:
        raise UserError("--apply and --checksum go with --fix")
    if fix and fmt in ("csv", "html"):
        raise UserError("--fix prints a plan: use --format table or json")
    from provisioner import audit_report

    config = load_config(config_path)
    store = open_store(config.resolved_state_url())
    try:
        if fix:
            report = audit_fix(config, store, site=fqdn, apply=do_apply, checksum=checksum)
        else:
            report = run_audit(config, store, site=fqdn)
    finally:
        store.close()
    if fmt == "json":
        click.echo(audit_report.to_json(report), nl=False)
    elif fmt == "csv":
        click.echo(audit_report.to_csv(report), nl=False)
    elif fmt == "html":
        click.echo(audit_report.to_html(report), nl=False)
    else:
        _print(report)
    sys.exit(report.exit_code)


def _summary(report, findings) -> str:
    if not findings:
        return f"clean: {len(report.sites)} site(s) and zone(s) {', '.join(report.zones) or 'none'} match the records"
    counts = ", ".join(f"{n} {s}" for s, n in report.counts(findings).items() if n)
    return f"drift: {len(findings)} finding(s) ({counts})"


def _table(title, findings) -> None:
    # Unlike other listings, nothing is cut: the grant found and the fix line are the point.
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    grid = Table(title=title, show_lines=True)
    for column in COLUMNS:
        grid.add_column(column, overflow="fold", no_wrap=column in ("severity", "kind"))
    for finding in findings:
        grid.add_row(*[str(getattr(finding, c) or "") for c in COLUMNS])
    console.print(grid)


def _print(report) -> None:
    if report.findings:
        _table("Audit findings", report.findings)
    click.echo(_summary(report, report.findings))
    if report.fix is None:
        return
    fix = report.fix
    click.echo("\nThe plan that restores the recorded state:")
    click.echo(fix["rendered"], nl=False)
    for fqdn, reason in fix["refused"].items():
        click.echo(f"not fixed: {fqdn}: {reason}")
    if fix["by_hand"]:
        click.echo(f"{len(fix['by_hand'])} finding(s) need a person: see their fix lines")
    if not fix["applied"]:
        if fix["plan"]["changes"]:
            click.echo(f"dry run: nothing was changed; apply with --fix --apply --checksum {fix['plan']['checksum']}")
        return
    for fqdn, checks in fix.get("verified", {}).items():
        click.echo(f"{fqdn}: restored and verified: {', '.join(checks)}")
    for renewed in fix.get("renewed", []):
        click.echo(f"{renewed['fqdn']}: certificate renewed: serial {renewed['serial']}, "
                   f"valid until {renewed['not_after']}, served and checked from outside")
    for fqdn, reason in fix.get("not_renewed", {}).items():
        click.echo(f"{fqdn}: certificate not renewed: {reason}")
    if report.after:
        _table("Findings after the fix", report.after)
    click.echo("after the fix: " + _summary(report, report.after))
