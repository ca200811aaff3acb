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

import posixpath
import re

from provisioner import naming
from provisioner.naming import SiteNames
from provisioner.site import DesiredSite

ORIGIN = "adopted"

# -- what a removal may take with an adopted site ---------------------------------------
#
# The rules are decided here once: adoption records what they say, removal (targets/adopted.py
# and playbooks/adopted_site.yml) refuses or keeps what they do not allow.

# Accounts every Debian host has: never a site's own.
SYSTEM_OWNERS = {"root", "www-data", "nobody", "daemon", "bin", "sys"}
# Shells an account nobody logs in with has; a site's own account has one of them.
NO_LOGIN_SHELLS = {"/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false"}
# Groups that make an account an administrator's.
ADMIN_GROUPS = {"root", "sudo", "adm", "wheel", "admin"}
# A document root a removal may delete lies below one of these (never one of them itself,
# nor Debian's default site), or inside a user's home (never the home itself).
DOCROOT_BASES = ("/var/www", "/srv/www")
HOME_BASE = "/home"
NOT_DOCROOTS = {"/var/www/html"}
PATH_PART = re.compile(r"[A-Za-z0-9_.@+-]{1,255}")
# One grant's "ON db.table" part (MariaDB's SHOW GRANTS form); group 1 is the database.
GRANT_ON = re.compile(r"GRANT .+? ON (?:(?:TABLE|FUNCTION|PROCEDURE|PACKAGE BODY|PACKAGE) )?"
                      r"(`(?:[^`]|``)+`|\*)\.(?:`(?:[^`]|``)+`|\*) TO ")


def docroot_problem(path) -> str | None:
    """Why a removal may not delete this document root; None when it may."""
    if not isinstance(path, str) or not path.startswith("/"):
        return "it is not an absolute path"
    normal = posixpath.normpath(path)
    if normal != path.rstrip("/") or normal.startswith("//"):
        return "it is not in normal form (a '.', '..' or doubled '/')"
    parts = normal.split("/")[1:]
    if not all(PATH_PART.fullmatch(p) and p not in (".", "..") for p in parts):
        return "it has a part the toolkit does not delete"
    below_base = any(normal.startswith(base + "/") for base in DOCROOT_BASES) and normal not in NOT_DOCROOTS
    in_home = normal.startswith(HOME_BASE + "/") and len(parts) >= 3
    if not (below_base or in_home):
        return (f"it is not below {', '.join(DOCROOT_BASES)} nor inside a home under {HOME_BASE} "
                "(the only places a removal deletes from)")
    return None


def owner_problem(owner: str | None, account: dict | None, docroot: str, deploy_user: str | None) -> str | None:
    """Why the document root's owner is not the site's own account (None: it is, and goes with the site).

    account: the owner's passwd entry as the import probe read it ({uid, home, shell, groups}).
    """
    if not owner:
        return "the document root has no owner"
    if owner in SYSTEM_OWNERS:
        return f"{owner} is a system account"
    if deploy_user and owner == deploy_user:
        return f"{owner} is the account the toolkit logs in with"
    if not account:
        return f"{owner} is not an account of the host"
    if account.get("uid") == 0:
        return f"{owner} has uid 0"
    root = posixpath.normpath(docroot)
    home = posixpath.normpath(account.get("home") or "/")
    if home not in (root, posixpath.dirname(root)):
        return f"its home {home} is neither the document root nor the directory above it"
    if account.get("shell") not in NO_LOGIN_SHELLS:
        return f"it logs in with {account.get('shell') or 'no shell'}"
    admin = sorted(set(account.get("groups") or []) & ADMIN_GROUPS)
    if admin:
        return f"it is in the administrators' group {', '.join(admin)}"
    return None


def _grant_database(quoted: str) -> str:
    return quoted[1:-1].replace("``", "`").replace("\\_", "_").replace("\\%", "%")


def other_grants(grants: list[str], db_name: str) -> list[str]:
    """The grants of a site's database account that reach beyond its database (USAGE aside):
    an account that has them is shared, and a removal keeps it."""
    out = []
    for grant in grants:
        if grant.startswith("GRANT USAGE ON *.* TO "):
            continue
        on = GRANT_ON.match(grant)
        if on and on.group(1) != "*" and _grant_database(on.group(1)) == db_name:
            continue
        out.append(grant)
    return out


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
