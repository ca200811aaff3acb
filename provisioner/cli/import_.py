"""`provision import`: list what no record explains on the live hosts; adopt a site; plan its normalization."""

import re

import click

from provisioner.cli._common import config_option, json_option, load_config, open_store, print_json
from provisioner.errors import UserError


@click.command("import")
@click.option("--host", help="Read only this web or database host.")
@click.option("--zone", help="Only this managed zone.")
@click.option("--site", "fqdn", help="Adopt this site (with --apply), or plan its normalization (--normalize).")
@click.option("--request", "request_file", type=click.Path(exists=True, dir_okay=False),
              help="With --site: the office's own hosting request for the site (validated), as its SOP record.")
@click.option("--apply", "do_apply", is_flag=True, help="With --site: record the adoption (default: only show it).")
@click.option("--normalize", is_flag=True,
              help="With --site: plan the move of an adopted site to the toolkit's layout.")
@click.option("--by", help="With --site --apply: who adopts it (default: the OS user).")
@config_option
@json_option
def import_(host, zone, fqdn, request_file, do_apply, normalize, by, config_path, as_json):
    """List vhosts, pools, databases and A records no record explains, or adopt one site as it is."""
    if (request_file or do_apply or normalize) and not fqdn:
        raise UserError("--request, --apply and --normalize go with --site FQDN")
    if normalize and (do_apply or request_file):
        raise UserError("--normalize only plans: it takes neither --apply nor --request")
    from provisioner import importer

    config = load_config(config_path)
    store = open_store(config.resolved_state_url())
    try:
        if normalize:
            plan = importer.normalize(config, store, fqdn)
            if as_json:
                print_json(plan.as_dict())
            else:
                _say(plan.render(), nl=False)
                click.echo("planned only: nothing was changed (normalization is not applied by the toolkit yet)")
            return
        if fqdn:
            result = importer.adopt(config, store, fqdn, request_file=request_file, apply=do_apply, actor=by)
            if as_json:
                print_json(result)
            else:
                _print_adoption(result)
            return
        found = importer.discover(config, store, host=host, zone=zone)
    finally:
        store.close()
    if as_json:
        print_json(found)
    else:
        _print_discovery(found)


# Names read from the hosts (file names, pool names, users) are whatever someone wrote there:
# a control or bidirectional character could rewrite the operator's terminal or hide text.
# Line breaks are the output's own.
_UNPRINTABLE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _say(text: str, nl: bool = True) -> None:
    click.echo(_UNPRINTABLE.sub("?", text), nl=nl)


def _print_discovery(found: dict) -> None:
    _say(f"read: web {', '.join(found['hosts']['web']) or '-'}; db {', '.join(found['hosts']['db']) or '-'}; "
         f"zones {', '.join(found['zones'])}")
    if not found["sites"]:
        _say("no site that no record explains")
    for site in found["sites"]:
        _say(f"{site['fqdn']}  (office {site['office'] or '-'})")
        for v in site["vhosts"]:
            tls = (f"TLS {v['tls']['cert_file']} until {v['tls']['not_after'] or '?'}" if v["tls"] else "no TLS")
            _say(f"  vhost      {v['host']}:{v['file']} {'enabled' if v['enabled'] else 'disabled'}; "
                 f"names {', '.join(v['server_names'] + v['aliases'])}; docroot {v['docroot']} "
                 f"(owner {v['owner']}); {tls}")
        for p in site["pools"]:
            _say(f"  pool       {p['host']}:{p['file']} [{p['name']}] user {p['user']}, listen {p['listen']} "
                 f"({p['matched_by']})")
        for d in site["databases"]:
            users = ", ".join(f"{a['user']}@{a['host']}" for a in d["accounts"]) or "no user"
            _say(f"  database   {d['host']}:{d['name']} ({users}; {d['matched_by']})")
        for r in site["dns"]:
            _say(f"  A record   {r['name']} -> {', '.join(r['addresses'])} "
                 f"({'marked as the toolkit’s' if r['marked'] else 'no toolkit marker'})")
        _say(f"  adopt: provision import --site {site['fqdn']} --apply")
    rest = found["unassigned"]
    lines = ([f"vhost {v['host']}:{v['file']}" for v in rest["vhosts"]]
             + [f"pool {p['host']}:{p['file']} [{p['name']}] user {p['user']}" for p in rest["pools"]]
             + [f"database {d['host']}:{d['name']}" for d in rest["databases"]]
             + [f"database user {a['host']}:{a['user']}@{a['client_host']}" for a in rest["accounts"]])
    if lines:
        _say("belonging to no site found:")
        for line in lines:
            _say(f"  {line}")
    for item in found["ignored"]:
        _say(f"ignored (unmanaged): {item['kind']} {item['name']} on {item['host']}")


def _print_adoption(result: dict) -> None:
    record = result["record"]
    found = record["found"]
    _say(f"{result['fqdn']}: {'recorded as adopted' if result['applied'] else 'would be recorded as adopted'} "
         f"by {result['actor']}")
    _say(f"  request    {result['request']['id']} ({result['request']['from']})")
    _say(f"  web        {record['web_host']}: vhost {found['vhost_file']}, docroot {found['docroot']} "
         f"(owner {found['owner']}), public IP {record['public_ip']}")
    if found["pool"]:
        _say(f"  pool       {found['pool']['file']} [{found['pool']['name']}] user {found['pool']['user']}")
    if found["database"]:
        _say(f"  database   {record['db_host']}: {found['database']['name']}, user {found['database']['user']} "
             f"from {', '.join(found['database']['user_hosts'])}")
    if found["dns"]:
        _say(f"  A record   {found['dns']['name']} -> {', '.join(found['dns']['addresses'])}")
    _say(f"  TLS        {found['tls']['cert_file'] if found['tls'] else 'none'}")
    if found.get("owner_kept_because"):
        _say(f"  removal    keeps the account {found['owner']}: {found['owner_kept_because']}")
    if (found["database"] or {}).get("user_shared"):
        _say(f"  removal    keeps the database user {found['database']['user']}: it has grants beyond "
             f"{found['database']['name']}")
    if not result["applied"]:
        _say("dry run: nothing was recorded and nothing on the hosts changes; record it with --apply")
    else:
        _say("nothing on the hosts was changed; audit it: provision audit --site " + result["fqdn"])
