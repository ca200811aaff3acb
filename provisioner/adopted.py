"""An adopted site: a site that existed before the toolkit, recorded as it was found.

Its configuration record (SiteRow.config) carries `origin: adopted` and a
`found` section: the vhost file and its links, the VirtualHost blocks (listen
addresses, names, TLS files), the document root and its owner, the PHP-FPM
pool, the databases and their accounts with their grants, the A record. The
record's `names` are the names found on the hosts, not the derived ones.

Everything the toolkit does with a recorded site goes through the DesiredSite
built here from that record (never re-derived from a request): the audit holds
the site to what was found (the vhost's sha256 as recorded, the pool's, the
owner, the accounts and grants), suspension swaps its vhost (targets/adopted.py),
and nothing re-renders the office's files until the site is normalized.
"""

from provisioner import naming
from provisioner.naming import SiteNames
from provisioner.site import DesiredSite

ORIGIN = "adopted"


def is_adopted(config: dict | None) -> bool:
    return (config or {}).get("origin") == ORIGIN


def site_names(fqdn: str, label: str, zone: str, docroot: str, owner: str, error_log: str | None,
               pool: str | None, db_name: str | None, db_user: str | None) -> SiteNames:
    """The names of an adopted site as found; the slug is the derived one (used for nothing on the hosts)."""
    try:
        slug = naming.site_slug(label, zone)
    except ValueError:  # a deeper name (a.b.zone): any stable short name will do
        slug = fqdn.replace(".", "_")[:naming.SLUG_MAX]
    logdir = error_log.rsplit("/", 1)[0] if error_log and error_log.startswith("/") and "/" in error_log else ""
    return SiteNames(fqdn=fqdn, slug=slug, user=owner, home=docroot, docroot=docroot,
                     # A shared log directory (/var/log/apache2) is not the site's: only a directory of its own counts.
                     logdir=logdir if logdir and (label in logdir or fqdn in logdir) else docroot,
                     pool=pool or fqdn, db_name=db_name or "", db_user=db_user or "")


def desired(row, inventory) -> DesiredSite:
    """The DesiredSite of an adopted SiteRow: its found names and layout, placed where it was found."""
    c = row.config
    web = inventory.host(row.web_host)
    return DesiredSite(
        request_id=row.request_id, office=row.office, label=row.label, zone=row.zone,
        names=SiteNames(**c["names"]), web_host=row.web_host, web_address=web.address, db_host=row.db_host,
        public_ip=row.public_ip, dedicated_ip=False, php=bool(c.get("php")),
        php_version=c.get("php_version") or "8.2", database=bool(c.get("database")), tls=bool(c.get("tls")),
        quota_mb=int(c.get("quota_mb") or 0), bandwidth_kbps=int(c.get("bandwidth_kbps") or 0),
        adopted=c["found"],
    )


# -- the audit of an adopted site ---------------------------------------------------


def findings(site: DesiredSite, record: dict, web_live: dict, db_live: dict) -> list:
    """The web and database findings of an adopted site: held to what was found and recorded."""
    from provisioner.audit import Finding

    found, f, h = site.adopted, site.fqdn, site.web_host
    state = web_live[h]["sites"][f]
    out = []
    fix = f"check who changed it; to put the office's layout under the toolkit: provision import --site {f} --normalize"

    def add(severity, kind, target, host, what, expected, seen, how=fix):
        out.append(Finding(severity, kind, f, target, host, what, expected, seen, how))

    vhost = found["vhost_file"]
    if state["vhost_sha256"] is None:
        add("critical", "vhost-missing", "web", h, f"vhost {vhost}", "present, as adopted", "missing")
    elif state["vhost_sha256"] != record.get("vhost_sha256"):
        add("medium", "vhost-changed", "web", h, f"vhost {vhost}", f"sha256 {record.get('vhost_sha256', '')[:12]} "
            "(as adopted)", f"sha256 {state['vhost_sha256'][:12]}")
    links = [link["path"] for link in found.get("links", [])]
    present = state.get("links_present", [])
    if site.suspended:
        if present:
            add("critical", "vhost-enabled", "web", h, f"vhost {vhost}", "disabled while suspended",
                f"enabled by {', '.join(present)}", f"provision site suspend {f} --apply")
        if state.get("suspend_sha256") is None or not state.get("suspend_enabled"):
            add("critical", "suspension-missing", "web", h, f"suspension vhost of {f}", "present and enabled",
                "missing", f"provision site suspend {f} --apply")
    else:
        missing = [p for p in links if p not in present]
        if missing:
            add("critical", "vhost-disabled", "web", h, f"vhost {vhost}", "enabled, as adopted",
                f"no link {', '.join(missing)}")
        if state.get("suspend_sha256") is not None or state.get("suspend_enabled"):
            add("high", "suspension-left", "web", h, f"suspension vhost of {f}", "none (the site is not suspended)",
                "present", f"provision site unsuspend {f} --apply")
    docroot = state["docroot"]
    owner = found.get("owner")
    if docroot is None:
        add("critical", "docroot-missing", "web", h, f"docroot {site.names.docroot}", f"owner {owner}", "missing")
    elif docroot["owner"] != owner:
        add("medium", "docroot-owner-mode", "web", h, f"docroot {site.names.docroot}", f"owner {owner}",
            f"owner {docroot['owner']}")
    pool = found.get("pool")
    if pool:
        if state["pool_sha256"] is None:
            add("high", "pool-missing", "web", h, f"PHP-FPM pool {pool['file']}", "present, as adopted", "missing")
        elif state["pool_sha256"] != pool.get("sha256"):
            add("medium", "pool-changed", "web", h, f"PHP-FPM pool {pool['file']}",
                f"sha256 {pool.get('sha256', '')[:12]} (as adopted)", f"sha256 {state['pool_sha256'][:12]}")
    if site.tls and not state["tls_cert"]:
        add("high", "tls-missing", "web", h, f"TLS certificate of {f}", (found.get("tls") or {}).get("cert_file"),
            "missing")
    if site.database:
        db = db_live[site.db_host]["databases"][site.names.db_name]
        expected = found.get("database") or {}
        if not db["exists"]:
            add("critical", "db-missing", "db", site.db_host, f"database {site.names.db_name}", "present", "missing")
        hosts = sorted(expected.get("user_hosts", []))
        if sorted(db["user_hosts"]) != hosts:
            add("high", "db-user-host", "db", site.db_host, f"database user {site.names.db_user}",
                f"allowed from {', '.join(hosts) or 'nowhere'} (as adopted)",
                f"allowed from {', '.join(sorted(db['user_hosts'])) or 'nowhere'}")
        wanted = sorted(expected.get("grants", []))
        if sorted(db["grants"]) != wanted:
            extra = sorted(set(db["grants"]) - set(wanted))
            gone = sorted(set(wanted) - set(db["grants"]))
            add("critical" if any(" ON *.* " in g and "USAGE" not in g for g in extra) else "high", "grant-changed",
                "db", site.db_host, f"grants of {site.names.db_user}", "; ".join(wanted) or "none",
                "; ".join([f"added {g}" for g in extra] + [f"gone {g}" for g in gone]))
    return out
