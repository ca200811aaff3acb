"""`provision website`: deploy a site's content as a release, list releases, roll back."""

import click

from provisioner.cli._common import config_option, json_option, load_config, open_store, print_json, table

_apply = click.option("--apply", "do_apply", is_flag=True, help="Apply the plan (default: only show it).")
_checksum = click.option("--checksum", help="Apply only if the plan still has this checksum.")
_by = click.option("--by", help="Who does it (default: the OS user).")


def _open(config_path, by=None):
    from provisioner.website.deploy import Website

    config = load_config(config_path)
    return Website(config, open_store(config.resolved_state_url()), source="cli", actor=by)


@click.group()
def website():
    """A site's content in releases: deploy, list, roll back (see docs/website.md)."""


def _show(outcome, do_apply, as_json):
    """An applied deploy or rollback's result, or the plan of a dry run and how to apply it."""
    if do_apply:
        _show_result(outcome, as_json)
    elif as_json:
        print_json(outcome.as_dict())
    else:
        click.echo(outcome.render(), nl=False)
        click.echo(f"dry run: nothing was changed; apply with --apply --checksum {outcome.checksum}")


def _show_result(result, as_json):
    if as_json:
        print_json(result.as_dict())
        return
    p = result.payload
    click.echo(f"{result.fqdn}: release {p['release']} is live (previous {p['previous'] or 'none'})")
    if p.get("backup"):
        b = p["backup"]
        click.echo(f"  backup {b['host']}:{b['path']}  {b['bytes']} bytes  sha256 {b['sha256']}")
    health = p["health"]
    click.echo(f"  checked {health['url']}: {health['status']}" +
               (f", {health['marker']!r} served" if health.get("marker") else ""))
    if p.get("pruned"):
        click.echo(f"  pruned {', '.join(p['pruned'])}")


@website.command()
@click.argument("fqdn")
@click.option("--source", required=True, help="Archive (.tar.gz/.tgz/.zip), git repository path or git URL, "
                                               "with @REF for a branch, tag or commit.")
@click.option("--run", "run", help="Command run as the site user in the new release before the switch.")
@click.option("--health", help="Path checked after the switch (default /): status 200 and the release marker.")
@_apply
@_checksum
@_by
@config_option
@json_option
def deploy(fqdn, source, run, health, do_apply, checksum, by, config_path, as_json):
    """Plan a deploy of FQDN's content; with --apply, do exactly that plan."""
    work = _open(config_path, by)
    outcome = work.deploy(fqdn, source, run=run, health=health, checksum=checksum, do_apply=do_apply)
    _show(outcome, do_apply, as_json)


@website.command()
@click.argument("fqdn")
@config_option
@json_option
def releases(fqdn, config_path, as_json):
    """The releases of FQDN on its web host, the current one marked, with their history."""
    shown = _open(config_path).releases(fqdn)
    if as_json:
        print_json(shown)
        return
    table(f"Releases of {fqdn} on {shown['web_host']}",
          ["", "Release", "Deployed (UTC)", "Result", "By", "Source", "Ref", "Commit", "sha256", "Files", "Bytes"],
          [["*" if r["current"] else "", r["release"], r["deployed_at"], r["result"], r["by"], r["source"],
            r["ref"], r["commit"][:12], r["sha256"][:16], r["files"], r["bytes"]] for r in shown["releases"]],
          long=("Source",))
    if shown["leftovers"]:
        click.echo(f"left by a stopped deploy (removed by the next one): {', '.join(shown['leftovers'])}")


@website.command()
@click.argument("fqdn")
@click.option("--to", "to", help="The release to switch to (default: the one before the current).")
@_apply
@_checksum
@_by
@config_option
@json_option
def rollback(fqdn, to, do_apply, checksum, by, config_path, as_json):
    """Switch FQDN back to an earlier release (plan by default)."""
    work = _open(config_path, by)
    outcome = work.rollback(fqdn, to=to, checksum=checksum, do_apply=do_apply)
    _show(outcome, do_apply, as_json)
