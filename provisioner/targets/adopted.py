"""The web server side of an adopted site: suspension without touching the office's own files.

An adopted site keeps its vhost, pool and document root as the office made
them; the toolkit never re-renders them. Suspending it swaps its vhost for a
small one of the toolkit's (same addresses, names and certificate files) that
answers 503: the site's own vhost link in sites-enabled is removed and the
suspension vhost enabled; unsuspending puts the link back and removes the
suspension vhost. Both go through playbooks/adopted_site.yml, which tests the
configuration and puts every link back if Apache refuses it.

Removing an adopted site takes exactly what was recorded as found: its vhost
links and file, its pool file, its document root (only when no other vhost
uses it, it lies where sites live and root does not own it), its owner account
(only when it was the site's own), its database and the account recorded on it
(only when that account has no grant beyond the database); the A record goes
with the DNS step. removable() refuses, before any step runs, a removal whose
files or names it cannot take safely (provisioner.adopted holds the rules).
"""

import posixpath
import re

from provisioner import adopted, runner
from provisioner.changes import Create, Delete, Update
from provisioner.errors import StateError
from provisioner.site import DesiredSite, sha256

SUSPEND_PREFIX = "provisioner-suspended-"
AVAILABLE = "/etc/apache2/sites-available"
ENABLED = "/etc/apache2/sites-enabled"
# What a value found in the office's vhost may look like to be written into ours.
SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:*\[\]/@+-]{1,255}")
# Names a removal may put into SQL (quoted there too): MariaDB's unquoted identifiers, and host patterns.
SAFE_DB_NAME = re.compile(r"[A-Za-z0-9_$-]{1,64}")
SAFE_DB_HOST = re.compile(r"[A-Za-z0-9_.:%-]{1,255}")
# The files a removal may delete (the playbook asserts the same).
VHOST_FILE = re.compile(r"/etc/apache2/sites-available/[^/]+")
VHOST_LINK = re.compile(r"/etc/apache2/sites-enabled/[^/]+")
POOL_FILE = re.compile(r"/etc/php/[0-9.]+/fpm/pool\.d/[^/]+\.conf")


def suspend_file(fqdn: str) -> str:
    return f"{AVAILABLE}/{SUSPEND_PREFIX}{fqdn}.conf"


def suspend_link(fqdn: str) -> str:
    return f"{ENABLED}/{SUSPEND_PREFIX}{fqdn}.conf"


def probe_paths(site: DesiredSite) -> dict:
    """Where the planning probe finds an adopted site's files (see probe.WEB_PROBE)."""
    found = site.adopted
    pool = found.get("pool") or {}
    return {"vhost_file": found["vhost_file"], "links": [link["path"] for link in found.get("links", [])],
            "pool_file": pool.get("file"), "tls_cert_file": (found.get("tls") or {}).get("cert_file"),
            "suspend_file": suspend_file(site.fqdn), "suspend_link": suspend_link(site.fqdn)}


def _safe(value: str, what: str, fqdn: str) -> str:
    if not isinstance(value, str) or not SAFE_VALUE.fullmatch(value):
        raise StateError(f"{fqdn}: the {what} found in its vhost ({value!r}) cannot be copied into a "
                         "suspension vhost; normalize the site first (provision import --normalize)")
    return value


def suspension_vhost(site: DesiredSite) -> str:
    """The 503 vhost that stands in for an adopted site's own while it is suspended."""
    found, f = site.adopted, site.fqdn
    if found.get("shared_with"):
        raise StateError(f"{f}: its vhost file {found['vhost_file']} also serves "
                         f"{', '.join(found['shared_with'])}; disabling it would take those down too: "
                         "normalize the site first (provision import --normalize)")
    if not found.get("links"):
        raise StateError(f"{f}: its vhost {found['vhost_file']} was not enabled by a link in {ENABLED} "
                         "when it was adopted; it cannot be suspended by disabling it")
    out = [f"# Managed by provisioner: {f} (adopted) is suspended; its own vhost",
           f"# {found['vhost_file']} is disabled until it is unsuspended.", ""]
    for block in found["vhosts"]:
        listen = " ".join(_safe(x, "address", f) for x in block["listen"])
        out.append(f"<VirtualHost {listen}>")
        out.append(f"    ServerName {_safe(block.get('server_name') or f, 'ServerName', f)}")
        aliases = [_safe(a, "ServerAlias", f) for a in block.get("aliases") or []]
        if aliases:
            out.append(f"    ServerAlias {' '.join(aliases)}")
        if block.get("cert_file"):
            out.append("    SSLEngine on")
            for key, directive in (("cert_file", "SSLCertificateFile"), ("key_file", "SSLCertificateKeyFile"),
                                   ("chain_file", "SSLCertificateChainFile")):
                if block.get(key):
                    out.append(f'    {directive} "{_safe(block[key], directive, f)}"')
        out += ["    RewriteEngine On", "    RewriteRule ^ - [R=503,L]",
                '    ErrorDocument 503 "Situs sedang dalam pemeliharaan / under maintenance."',
                '    Header always set Retry-After "3600"', "</VirtualHost>", ""]
    return "\n".join(out)


def plan(sites: list[DesiredSite], live: dict) -> list:
    """The swap that gives each adopted site the state it should have (suspended or not)."""
    changes = []
    for s in sites:
        state = live[s.web_host]["sites"][s.fqdn]
        h, f = s.web_host, s.fqdn
        links = [link["path"] for link in s.adopted.get("links", [])]
        present = state.get("links_present", [])
        if s.suspended:
            content = suspension_vhost(s)
            if state.get("suspend_sha256") is None:
                changes.append(Create("web", h, f, "suspension vhost", suspend_file(f), content=content))
            elif state["suspend_sha256"] != sha256(content) or not state.get("suspend_enabled"):
                changes.append(Update("web", h, f, "suspension vhost", suspend_file(f), content=content))
            for link in present:
                changes.append(Delete("web", h, f, "vhost link", link, reason="the site's own vhost, while suspended"))
        else:
            if state.get("suspend_sha256") is not None or state.get("suspend_enabled"):
                changes.append(Delete("web", h, f, "suspension vhost", suspend_file(f)))
            for link in links:
                if link not in present:
                    changes.append(Create("web", h, f, "vhost link", link, points_to=found_target(s, link)))
    return changes


def found_target(site: DesiredSite, path: str) -> str:
    return next(link["target"] for link in site.adopted["links"] if link["path"] == path)


def removal_changes(sites: list[DesiredSite], live) -> list:
    """What removing adopted sites takes from the web and database hosts (live: hosting.Live)."""
    changes = []
    for s in sites:
        removable(s)
        found, h, f = s.adopted, s.web_host, s.fqdn
        state = live.web[h]["sites"][f]
        for link in state.get("links_present", []):
            changes.append(Delete("web", h, f, "vhost link", link))
        if state.get("suspend_sha256") is not None or state.get("suspend_enabled"):
            changes.append(Delete("web", h, f, "suspension vhost", suspend_file(f)))
        if state["vhost_sha256"] is not None:
            changes.append(Delete("web", h, f, "vhost", found["vhost_file"]))
        if found.get("pool") and state["pool_sha256"] is not None:
            changes.append(Delete("web", h, f, "PHP-FPM pool", found["pool"]["file"]))
        if state["docroot"] is not None and not _root_owned(found.get("owner"), state["docroot"]):
            changes.append(Delete("web", h, f, "site directory", docroot(s)))
        if found.get("owner_dedicated") and state["user"] is not None:
            changes.append(Delete("web", h, f, "system user", s.names.user))
        if s.database:
            db = live.db[s.db_host]["databases"][s.names.db_name]
            beyond = adopted.other_grants(db["grants"], s.names.db_name)
            if beyond and not user_shared(s):
                # Its own when adopted, shared now: dropping it would take another database's access.
                raise StateError(f"{f}: its database user {s.names.db_user} now has grants beyond "
                                 f"{s.names.db_name} ({'; '.join(beyond)}); check who granted them, then "
                                 "take the site apart by hand")
            if db["user_hosts"] and not user_shared(s):
                changes.append(Delete("db", s.db_host, f, "database user",
                                      ", ".join(f"{s.names.db_user}@{x}" for x in db["user_hosts"]),
                                      accounts=[[s.names.db_user, x] for x in db["user_hosts"]]))
            if db["exists"]:
                changes.append(Delete("db", s.db_host, f, "database", s.names.db_name))
    return changes


def docroot(site: DesiredSite) -> str:
    """The document root a removal deletes, in normal form (removable() checked it)."""
    return posixpath.normpath(site.names.docroot)


def _root_owned(owner, seen: dict | None = None) -> bool:
    """A document root root owns is the host's, not a site's: a removal keeps it."""
    owners = {owner} | ({seen.get("owner")} if seen else set())
    return bool(owners & {"root", 0, "0"})


def user_shared(site: DesiredSite) -> bool:
    """The site's database account has grants beyond its database: a removal keeps it."""
    db = site.adopted.get("database") or {}
    if "user_shared" in db:
        return bool(db["user_shared"])
    return bool(adopted.other_grants(db.get("grants", []), site.names.db_name))


def removable(site: DesiredSite) -> None:
    """Refuse the removal of an adopted site whose files or names it cannot take safely.

    Called while the removal is planned, so a refusal comes before any step (DNS first) runs.
    """
    found, f = site.adopted, site.fqdn
    why = None
    links = [link.get("path") for link in found.get("links", [])]
    pool = found.get("pool") or {}
    hosts = (found.get("database") or {}).get("user_hosts", []) if site.database else []
    if found.get("shared_with"):
        why = f"its vhost file {found['vhost_file']} also serves {', '.join(found['shared_with'])}"
    elif found.get("docroot_shared_with"):
        why = f"its document root {site.names.docroot} is also used by {', '.join(found['docroot_shared_with'])}"
    elif (problem := adopted.docroot_problem(site.names.docroot)) is not None:
        why = f"its document root {site.names.docroot!r} is not a directory the toolkit deletes: {problem}"
    elif not isinstance(found.get("vhost_file"), str) or not VHOST_FILE.fullmatch(found["vhost_file"]):
        why = f"its vhost file {found.get('vhost_file')!r} is not a file of {AVAILABLE}"
    elif [p for p in links if not isinstance(p, str) or not VHOST_LINK.fullmatch(p)]:
        why = f"its vhost links ({', '.join(map(str, links))}) are not all in {ENABLED}"
    elif pool and (not isinstance(pool.get("file"), str) or not POOL_FILE.fullmatch(pool["file"])):
        why = f"its PHP-FPM pool file {pool.get('file')!r} is not a file of /etc/php/<version>/fpm/pool.d"
    elif site.database and not (SAFE_DB_NAME.fullmatch(site.names.db_name)
                                and SAFE_DB_NAME.fullmatch(site.names.db_user)):
        why = f"its database or user name ({site.names.db_name}, {site.names.db_user}) needs quoting the removal avoids"
    elif [h for h in hosts if not isinstance(h, str) or not SAFE_DB_HOST.fullmatch(h)]:
        why = f"its database account hosts ({', '.join(map(str, hosts))}) need quoting the removal avoids"
    if why:
        raise StateError(f"{f}: {why}; take it apart by hand or normalize it first (provision import --site {f} "
                         "--normalize)")


def items(sites: list[DesiredSite], state: str = "present") -> list[dict]:
    out = []
    for s in sites:
        item = {"fqdn": s.fqdn, "web_host": s.web_host, "suspended": s.suspended and state == "present",
                "state": state,
                "links": [{"path": link["path"], "target": link["target"]} for link in s.adopted.get("links", [])],
                "suspend_file": suspend_file(s.fqdn), "suspend_link": suspend_link(s.fqdn)}
        if item["suspended"]:
            item["suspend_content"] = suspension_vhost(s)
        if state == "absent":
            removable(s)
            pool = s.adopted.get("pool") or {}
            item.update(vhost_file=s.adopted["vhost_file"], pool_file=pool.get("file"),
                        php_version=pool.get("php_version"),
                        docroot=None if _root_owned(s.adopted.get("owner")) else docroot(s),
                        user=s.names.user if s.adopted.get("owner_dedicated") else None)
        out.append(item)
    return out


def db_items(sites: list[DesiredSite]) -> list[dict]:
    """The databases and accounts of adopted sites to drop (names checked by removable())."""
    out = []
    for s in sites:
        if not s.database:
            continue
        removable(s)
        # A shared account is kept: no DROP USER for any of its hosts.
        hosts = [] if user_shared(s) else (s.adopted.get("database") or {}).get("user_hosts", [])
        out.append({"db_host": s.db_host, "name": s.names.db_name, "user": s.names.db_user, "hosts": hosts})
    return out


def apply(inventory_path, sites: list[DesiredSite], secrets: dict | None = None, state: str = "present",
          artifact_dir=None, timeout: int | None = None, step: str = "web", **_ignored) -> runner.RunResult | None:
    """Suspend or unsuspend adopted sites (same signature as web.apply, for the lifecycle); with
    state absent, take the `step` (web or db) of their removal."""
    if step == "db":
        databases = db_items(sites)
        if not databases:
            return None
        hosts = {d["db_host"] for d in databases}
        extravars = {"adopted_site__sites": [], "adopted_site__databases": databases}
    else:
        hosts = {s.web_host for s in sites}
        extravars = {"adopted_site__sites": items(sites, state), "adopted_site__databases": []}
    return runner.run_playbook(
        "adopted_site.yml", inventory_path, hosts, extravars=extravars,
        secrets={}, limit=",".join(sorted(hosts)), artifact_dir=artifact_dir, timeout=timeout,
    )
