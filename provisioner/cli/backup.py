"""`provision backup`: run, list, restore and verify backups of the sites (see docs/backups.md)."""

import sys

import click

from provisioner.cli._common import config_option, json_option, open_reads, print_json, table

_apply = click.option("--apply", "do_apply", is_flag=True, help="Apply the plan (default: only show it).")
_checksum = click.option("--checksum", help="Apply only if the plan still has this checksum.")


def _open(config_path, kind):
    from provisioner.config import load_config
    from provisioner.store import open_store

    config = load_config(config_path)
    return kind(config, open_store(config.resolved_state_url()), source="cli")


@click.group()
def backup():
    """Backups with restic: every site's files and database, restores proven."""


def _dry_run(planned, as_json):
    if as_json:
        print_json(planned.as_dict())
    else:
        click.echo(planned.render(), nl=False)
        click.echo(f"dry run: nothing was changed; apply with --apply --checksum {planned.checksum}")


@backup.command()
@click.option("--site", "fqdn", help="Only this site (and not the toolkit's state).")
@_apply
@_checksum
@config_option
@json_option
def run(fqdn, do_apply, checksum, config_path, as_json):
    """Back up every live site (or one) and the toolkit's state; then retention."""
    from provisioner.backup.run import Backups

    outcome = _open(config_path, Backups).run(fqdn, apply=do_apply, checksum=checksum)
    if not do_apply:
        _dry_run(outcome, as_json)
        return
    if as_json:
        print_json(outcome.as_dict())
    else:
        click.echo(f"backup run {outcome.run_id}")
        for s in outcome.sites:
            if s.ok:
                shown = ", ".join(f"{kind} {f['id']} +{f['bytes_added']} B of {f['total_bytes']} B"
                                  for kind, f in s.snapshots.items())
                click.echo(f"  ok      {s.fqdn}: {shown}")
            else:
                click.echo(f"  FAILED  {s.fqdn}: {s.error}")
        if outcome.state is not None:
            if "error" in outcome.state:
                click.echo(f"  FAILED  toolkit state: {outcome.state['error']}")
            else:
                key = outcome.state.get("key", {})
                click.echo(f"  ok      toolkit state {outcome.state['state']['id']}; key: "
                           f"{key.get('left_out') or key.get('id')}")
        for url, kept in outcome.retention.items():
            click.echo(f"  retention {url}: " + (f"FAILED {kept['error']}" if "error" in kept else
                                                 f"{kept['removed']} snapshot(s) removed"))
        failed = len(outcome.failed)
        click.echo(f"{len(outcome.sites) - failed} site(s) backed up, {failed} failed")
    if not outcome.ok:
        sys.exit(4)


@backup.command(name="list")
@click.argument("fqdn")
@click.option("--all", "include_forgotten", is_flag=True, help="Also snapshots that retention removed.")
@config_option
@json_option
def list_(fqdn, include_forgotten, config_path, as_json):
    """The snapshots of FQDN: time, kind, release, size, proven by a restore."""
    from provisioner.config import load_config

    with open_reads(load_config(config_path)) as reads:
        shown = reads.snapshots(fqdn, include_forgotten)
    if as_json:
        print_json(shown)
        return
    table(f"Backups of {fqdn}", ["Snapshot", "Taken (UTC)", "Kind", "Release", "Run", "Added", "Size", "Proven"],
          [[r["snapshot"], f"{r['taken_at']:%Y-%m-%d %H:%M}", r["kind"], r["release"] or "", r["run"],
            r["bytes_added"], r["total_bytes"], f"{r['verified_at']:%Y-%m-%d}" if r["verified_at"] else ""]
           for r in shown])


@backup.command()
@click.argument("fqdn")
@click.option("--snapshot", help="A snapshot of FQDN (default: the latest backup run).")
@click.option("--as", "as_fqdn", help="Restore into this other recorded site of the same office.")
@_apply
@_checksum
@config_option
@json_option
def restore(fqdn, snapshot, as_fqdn, do_apply, checksum, config_path, as_json):
    """Restore FQDN's files and database (plan by default); checked from outside afterwards."""
    from provisioner.backup.restore import Restores

    outcome = _open(config_path, Restores).restore(fqdn, snapshot=snapshot, as_fqdn=as_fqdn, apply=do_apply,
                                                   checksum=checksum)
    if not do_apply:
        _dry_run(outcome, as_json)
        return
    if as_json:
        print_json(outcome)
        return
    click.echo(f"{outcome['target']}: restored from {outcome['fqdn']} (run {outcome['run']})")
    click.echo("  undo: provision backup restore {0} --snapshot {1} --apply (the state before: {2})".format(
        outcome["target"], outcome["undo"].get("files"), ", ".join(f"{k} {v}" for k, v in outcome["undo"].items())))
    checks = outcome["checks"]
    if "page" in checks:
        click.echo(f"  checked: / answers 200 with the page recorded at backup time")
    if "rows" in checks:
        click.echo(f"  checked: rows per table as recorded {checks['rows']}; the site's DB login works")


@backup.command()
@click.option("--site", "fqdn", help="Only this site's repository and test restore.")
@click.option("--sample", type=click.IntRange(0), help="Sites test-restored (default: backup.verify_sample).")
@config_option
@json_option
def verify(fqdn, sample, config_path, as_json):
    """restic check of each repository, and test restores of a sample of sites into scratch places."""
    from provisioner.backup.verify import Verifier

    result = _open(config_path, Verifier).verify(fqdn, sample=sample)
    if as_json:
        print_json(result.as_dict())
    else:
        for url, check in result.checks.items():
            click.echo(f"  {'ok' if check['ok'] else 'FAILED'}  restic check {url}" +
                       ("" if check["ok"] else f": {check['output'][-1000:]}"))
        for site, outcome in result.sites.items():
            click.echo(f"  {'ok' if outcome['ok'] else 'FAILED'}  test restore {site}" +
                       ("" if outcome["ok"] else f": {outcome['error']}"))
    if not result.ok:
        sys.exit(4)
