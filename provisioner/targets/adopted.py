"""The web server side of an adopted site: suspension without touching the office's own files.

An adopted site keeps its vhost, pool and document root as the office made
them; the toolkit never re-renders them. Suspending it swaps its vhost for a
small one of the toolkit's (same addresses, names and certificate files) that
answers 503: the site's own vhost link in sites-enabled is removed and the
suspension vhost enabled; unsuspending puts the link back and removes the
suspension vhost. Both go through playbooks/adopted_site.yml, which tests the
configuration and, if Apache refuses it, puts the links and stand-in back as
they were before the run.

Removing an adopted site takes what was recorded as found, as far as the
hosts allow it now (removal() reads the web host whole again when it plans):
its vhost links and file, its pool file (only when no other vhost hands PHP to
its socket), its document root (only when no other vhost uses it, it lies
where sites live and root does not own it), its owner account (only when it is
the site's own and nothing kept uses it), its database and its user's accounts
(each only when it has no grant beyond the database and is not on the
unmanaged list); the A record goes with the DNS step. What is kept is said in
the plan's notes; the apply takes exactly the plan's changes. removable()
refuses, before any step runs, a removal whose files or names it cannot take
safely (provisioner.adopted holds the rules).
"""

import posixpath
import re

from provisioner import adopted, runner
from provisioner.changes import Create, Delete, Update
from provisioner.errors import StateError
from provisioner.site import DesiredSite, sha256
from provisioner.targets import import_probe

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
            if present:
                _refuse_new_names(s, state)
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


def _refuse_new_names(site: DesiredSite, state: dict) -> None:
    """Disabling the site's vhost file takes down every name it serves: refuse when it now serves
    a name it did not serve at adoption (the planning probe reads its ServerNames)."""
    found = site.adopted
    mine = {site.fqdn, *(found.get("server_names") or []), *(found.get("aliases") or [])}
    added = sorted({n.split(":")[0].lower() for n in state.get("server_names") or []} - mine)
    if added:
        raise StateError(f"{site.fqdn}: its vhost file {found['vhost_file']} now also serves {', '.join(added)} "
                         "(added since adoption); disabling it would take those down too: normalize the site "
                         f"first (provision import --site {site.fqdn} --normalize)")


def found_target(site: DesiredSite, path: str) -> str:
    return next(link["target"] for link in site.adopted["links"] if link["path"] == path)


def read_hosts(inventory, sites: list[DesiredSite]) -> dict[str, dict]:
    """Everything the web hosts of these sites serve now (import_probe.probe_web_all), one session each."""
    return {h: import_probe.probe_web_all(inventory.host(h)) for h in sorted({s.web_host for s in sites})}


def removal(sites: list[DesiredSite], live, inventory, config) -> tuple[list, dict[str, str]]:
    """What removing adopted sites takes from the web and database hosts, and what it keeps and why.

    live: hosting.Live. What was recorded at adoption is not trusted to still hold: the web
    hosts are read again whole (read_hosts), and a vhost, pool or account that shares the
    site's document root, socket or owner now keeps it, whenever it was added. Returns
    (changes, {fqdn: what is kept and why}); the apply takes exactly the changes (items, db_items).
    """
    for s in sites:
        removable(s)
    now = read_hosts(inventory, sites) if sites else {}
    changes, kept = [], {}
    for s in sites:
        web, why = _web_removal(s, live.web[s.web_host]["sites"][s.fqdn], now[s.web_host],
                                inventory.host(s.web_host).ssh_user)
        db, why_db = _db_removal(s, live.db, config.unmanaged(s.office)) if s.database else ([], [])
        changes += web + db
        if why + why_db:
            kept[s.fqdn] = "kept: " + "; ".join(why + why_db)
    return changes, kept


def _web_removal(s: DesiredSite, state: dict, host_now: dict, deploy_user: str | None) -> tuple[list, list]:
    found, h, f = s.adopted, s.web_host, s.fqdn
    changes, kept = [], []
    vhost = found["vhost_file"]
    entry = next((e for e in host_now.get("files", []) if e["path"] == vhost), None)
    others = sorted({b["server_name"] for b in (entry or {}).get("vhosts") or []
                     if b.get("server_name") and b["server_name"] != f and f not in (b.get("aliases") or [])})
    if others:
        raise StateError(f"{f}: its vhost file {vhost} now also serves {', '.join(others)}; deleting it would "
                         "take those down too: take it apart by hand or normalize it first "
                         f"(provision import --site {f} --normalize)")
    for link in state.get("links_present", []):
        changes.append(Delete("web", h, f, "vhost link", link))
    if state.get("suspend_sha256") is not None or state.get("suspend_enabled"):
        changes.append(Delete("web", h, f, "suspension vhost", suspend_file(f)))
    if state["vhost_sha256"] is not None:
        changes.append(Delete("web", h, f, "vhost", vhost))
    used, mine = import_probe.uses(host_now), {vhost, suspend_file(f)}
    pool = found.get("pool")
    if pool and state["pool_sha256"] is not None:
        live_pool = next((p for p in host_now.get("pools", []) if p["file"] == pool["file"]), {})
        sharing = import_probe.listen_users(used, {pool.get("listen"), live_pool.get("listen")}, but=mine)
        if sharing:  # a pool kept stays in `used`: the account it runs as is kept with it
            kept.append(f"PHP-FPM pool {pool['file']} ({', '.join(sharing)} also hand PHP to it)")
        else:
            changes.append(Delete("web", h, f, "PHP-FPM pool", pool["file"]))
            mine.add(pool["file"])
    root_kept = False
    if state["docroot"] is not None and not _root_owned(found.get("owner"), state["docroot"]):
        sharing = import_probe.docroot_users(used, docroot(s), but=mine)
        if sharing:
            root_kept = True
            kept.append(f"document root {docroot(s)} ({', '.join(sharing)} also use it or a directory in it)")
        else:
            changes.append(Delete("web", h, f, "site directory", docroot(s)))
    if found.get("owner_dedicated") and state["user"] is not None:
        owner = s.names.user
        why = adopted.owner_problem(owner, host_now.get("users", {}).get(owner), s.names.docroot, deploy_user)
        sharing = import_probe.owner_users(used, owner, but=mine)
        if why is None and sharing:
            why = f"{', '.join(sharing)} also use it"
        if why is None and root_kept:
            why = "the document root kept is its"
        if why:
            kept.append(f"system user {owner} ({why})")
        else:
            changes.append(Delete("web", h, f, "system user", owner))
    return changes, kept


# An account's part of one grant line: TO `user`@`host` (MariaDB) or 'user'@'host'.
GRANT_TO = re.compile(r" TO (`(?:[^`]|``)*`|'(?:[^'\\]|\\.|'')*')@(`(?:[^`]|``)*`|'(?:[^'\\]|\\.|'')*')")


def _grant_account(grant: str) -> tuple[str, str] | None:
    """(user, host) a grant line is for; None when it cannot be read (it then counts for every host)."""
    m = GRANT_TO.search(grant)
    if not m:
        return None

    def unquote(q):
        inner = q[1:-1]
        return inner.replace("``", "`") if q[0] == "`" else inner.replace("''", "'").replace("\\'", "'")

    return unquote(m.group(1)), unquote(m.group(2))


def _db_removal(s: DesiredSite, live_db: dict, unmanaged: set) -> tuple[list, list]:
    """The database and the accounts of its user the removal drops: every host the database host
    has for that user now (what the read-back sees), except an account with a grant beyond this
    database or a name on the unmanaged list, which stays."""
    db = live_db[s.db_host]["databases"][s.names.db_name]
    user, name, f = s.names.db_user, s.names.db_name, s.fqdn
    changes, kept, drop = [], [], []
    if user.lower() in unmanaged and db["user_hosts"]:
        kept.append(f"database user {user} (on the unmanaged list)")
    else:
        for host in db["user_hosts"]:
            grants = [g for g in db["grants"] if _grant_account(g) in (None, (user, host))]
            beyond = adopted.other_grants(grants, name)
            if not SAFE_DB_HOST.fullmatch(host):  # added since adoption; the playbook puts hosts into SQL
                kept.append(f"database user {user}@{host!r} (a host that needs quoting the removal avoids)")
            elif beyond:
                kept.append(f"database user {user}@{host} (granted beyond {name}: {'; '.join(beyond)})")
            else:
                drop.append(host)
    if drop:
        changes.append(Delete("db", s.db_host, f, "database user", ", ".join(f"{user}@{x}" for x in drop),
                              accounts=[[user, x] for x in drop]))
    if db["exists"]:
        if name.lower() in unmanaged:
            kept.append(f"database {name} (on the unmanaged list)")
        else:
            changes.append(Delete("db", s.db_host, f, "database", name))
    return changes, kept


def docroot(site: DesiredSite) -> str:
    """The document root a removal deletes, in normal form (removable() checked it)."""
    return posixpath.normpath(site.names.docroot)


def _root_owned(owner, seen: dict | None = None) -> bool:
    """A document root root owns is the host's, not a site's: a removal keeps it."""
    owners = {owner} | ({seen.get("owner")} if seen else set())
    return bool(owners & {"root", 0, "0"})


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


def _planned(plan, site: DesiredSite, target: str, kind: str):
    """The Delete of this kind the removal plan holds for the site, or None."""
    return next((c for c in plan.for_site(site.fqdn) if (c.action, c.target, c.kind) == ("Delete", target, kind)),
                None)


def items(sites: list[DesiredSite], state: str = "present", plan=None) -> list[dict]:
    """The playbook's items; a removal's (state absent) are what its plan (removal()) shows, nothing more."""
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
            taken = {kind: _planned(plan, s, "web", kind) is not None
                     for kind in ("vhost", "PHP-FPM pool", "site directory", "system user")}
            item.update(vhost_file=s.adopted["vhost_file"] if taken["vhost"] else None,
                        pool_file=pool.get("file") if taken["PHP-FPM pool"] else None,
                        php_version=pool.get("php_version"),
                        docroot=docroot(s) if taken["site directory"] else None,
                        user=s.names.user if taken["system user"] else None)
        out.append(item)
    return out


def db_items(sites: list[DesiredSite], plan) -> list[dict]:
    """The databases and accounts of adopted sites to drop: those the removal plan shows (names
    checked by removable())."""
    out = []
    for s in sites:
        if not s.database:
            continue
        removable(s)
        accounts = _planned(plan, s, "db", "database user")
        database = _planned(plan, s, "db", "database")
        if accounts is None and database is None:
            continue
        out.append({"db_host": s.db_host, "name": s.names.db_name, "user": s.names.db_user,
                    "hosts": [host for _user, host in accounts.detail["accounts"]] if accounts else [],
                    "drop_database": database is not None})
    return out


def apply(inventory_path, sites: list[DesiredSite], secrets: dict | None = None, state: str = "present",
          artifact_dir=None, timeout: int | None = None, step: str = "web", plan=None,
          **_ignored) -> runner.RunResult | None:
    """Suspend or unsuspend adopted sites (same signature as web.apply, for the lifecycle); with
    state absent, take the `step` (web or db) of their removal as `plan` (removal()) shows it."""
    if state == "absent" and plan is None:
        raise StateError(f"{', '.join(s.fqdn for s in sites)}: a removal takes what its plan shows; no plan given")
    if step == "db":
        databases = db_items(sites, plan)
        if not databases:
            return None
        hosts = {d["db_host"] for d in databases}
        extravars = {"adopted_site__sites": [], "adopted_site__databases": databases}
    else:
        hosts = {s.web_host for s in sites}
        extravars = {"adopted_site__sites": items(sites, state, plan), "adopted_site__databases": []}
    return runner.run_playbook(
        "adopted_site.yml", inventory_path, hosts, extravars=extravars,
        secrets={}, limit=",".join(sorted(hosts)), artifact_dir=artifact_dir, timeout=timeout,
    )
