"""`provision import`: what the live hosts serve that no record explains, and adopting it.

discover() reads every web host (vhost files, PHP-FPM pools), every database
host (databases, accounts, grants) and the managed zones (A records), leaves
out what a configuration record explains and what the host itself ships
(Debian's default vhosts and pool), sets aside what the configuration's
`unmanaged` lists name, and groups the rest by the site it most likely belongs
to: a vhost by its ServerName, an A record by its name, a pool by the socket a
vhost hands PHP to (else its user owning a document root, else its name), a
database and its accounts by names resembling the site's label or document
root. Nothing is changed anywhere.

adopt() records one discovered site as it is (provisioner.adopted): a SiteRow
in state provisioned whose record is what was found, a request row for the
SOP (the office's own request file, validated, or a synthetic one marked
adopted, with no approval, so nothing ever provisions it), and the events
`request_adopted` and `site_adopted` naming who adopted it. Nothing on the
hosts changes.

normalize() plans, as an ordinary reviewed plan with a checksum, the move of
an adopted site to the toolkit's own layout; it does not apply it.
"""

import dataclasses
import getpass
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import yaml
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from provisioner import adopted, ipam, locks, naming
from provisioner.changes import Create, Delete, Update
from provisioner.errors import ConfigError, Conflict, NotFound, StateError, UserError
from provisioner.hosting import Hosting
from provisioner.plan import Plan
from provisioner.request import content_sha256, read_request_file, validate
from provisioner.site import DesiredSite
from provisioner.sop.sla import utcnow
from provisioner.store.events import add_event
from provisioner.store.models import RequestRow, SiteRow
from provisioner.targets import adopted as adopted_target
from provisioner.targets import import_probe
from provisioner.targets.dns import ACCOUNT, is_ours, zone_of

# What Debian's packages install on every web server: the host's, not a site's.
STOCK_VHOSTS = {"000-default.conf", "default-ssl.conf"}
STOCK_POOLS = {"www"}
ADOPTED_ID_PREFIX = "ADP"
MIN_STEM = 3  # shorter names resemble too much


class Reader:
    """The live state, read through the same channels as the rest of the toolkit."""

    def __init__(self, work: Hosting):
        self.work = work

    def web(self, host) -> dict:
        return import_probe.probe_web_all(host)

    def db(self, host) -> dict:
        return import_probe.probe_db_all(host)

    def dns(self, zones) -> dict:
        return self.work.dns.read(zones)


def _simple(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", (text or "").lower())


def _label(fqdn: str, zone: str | None) -> str:
    if zone and fqdn.endswith("." + zone):
        return fqdn[: -len(zone) - 1]
    return fqdn.split(".")[0]


# -- what the records explain -------------------------------------------------------


@dataclass
class Explained:
    fqdns: set
    vhost_files: set
    pools: set  # pool files and pool names
    databases: set
    accounts: set


def explained(store) -> Explained:
    """Everything a configuration record (of a site not removed) accounts for."""
    e = Explained(set(), set(), set(), set(), set())
    with store.session() as session:
        rows = list(session.scalars(select(SiteRow).where(SiteRow.state != "removed")))
    for row in rows:
        config = row.config or {}
        names = config.get("names") or {}
        e.fqdns.add(row.fqdn)
        e.vhost_files |= {f"/etc/apache2/sites-available/{row.fqdn}.conf", adopted_target.suspend_file(row.fqdn)}
        if names.get("pool"):
            e.pools.add(names["pool"])
        for key, into in (("db_name", e.databases), ("db_user", e.accounts)):
            if names.get(key):
                into.add(names[key])
        found = config.get("found") if adopted.is_adopted(config) else None
        if found:
            e.vhost_files.add(found["vhost_file"])
            if found.get("pool"):
                e.pools.add(found["pool"]["file"])
    return e


# -- discovery ----------------------------------------------------------------------


def discover(config, store, host: str | None = None, zone: str | None = None, reader=None,
             work: Hosting | None = None) -> dict:
    """Everything on the live hosts no record explains, grouped by the site it most likely belongs to."""
    work = work or Hosting(config, store)
    reader = reader or Reader(work)
    inventory = work.inventory
    managed = sorted(config.zones)
    if zone is not None:
        zone = zone.rstrip(".").lower()
        if zone not in config.zones:
            raise UserError(f"--zone: {zone} is not a zone of any office ({', '.join(managed)})")
    zones = [zone] if zone else managed
    webs, dbs = inventory.group("web"), inventory.group("db")
    if host is not None:
        inventory.host(host)  # a clear error for a name not in the inventory
        webs, dbs = [h for h in webs if h.name == host], [h for h in dbs if h.name == host]
        if not webs and not dbs:
            raise UserError(f"--host: {host} is neither a web nor a database host of the inventory")
    known = explained(store)
    # The hosting list sets anything aside; an office's list only what is that office's (in its zones).
    unmanaged, by_zone = config.unmanaged(), config.unmanaged_by_zone()
    out = {"hosts": {"web": [h.name for h in webs], "db": [h.name for h in dbs]}, "zones": zones,
           "sites": {}, "unassigned": {"vhosts": [], "pools": [], "databases": [], "accounts": [], "dns": []},
           "ignored": []}

    def ignored(kind, name, where, *also, zones=()) -> bool:
        left_alone = unmanaged.union(*(by_zone.get(z, set()) for z in zones))
        if {n.lower() for n in (name, *also) if n} & left_alone:
            out["ignored"].append({"kind": kind, "name": name, "host": where})
            return True
        return False

    def zones_of(names) -> set:
        return {zone_of(n, config.zones) for n in names if _in_zones(n, config.zones)}

    def site_for(fqdn: str) -> dict:
        fqdn = fqdn.rstrip(".").lower()
        if fqdn not in out["sites"]:
            try:
                z = zone_of(fqdn, config.zones)
            except ConfigError:  # a name outside every managed zone still groups its things
                z = None
            out["sites"][fqdn] = {"fqdn": fqdn, "zone": z, "office": config.office_for_zone(z).key if z else None,
                                  "label": _label(fqdn, z), "vhosts": [], "pools": [], "databases": [], "dns": []}
        return out["sites"][fqdn]

    def in_scope(fqdn: str) -> bool:
        if zone is None:
            return True
        return fqdn == zone or fqdn.endswith("." + zone)

    pools_seen, addresses = [], set()
    for web in webs:
        live = reader.web(web)
        addresses |= set(live.get("addresses", []))
        # Who else uses a document root, an owner or a pool's socket decides what a removal may take
        # with the site: every vhost counts, the toolkit's, the office's and those left unmanaged.
        uses = import_probe.uses(live)
        system_users = live.get("users", {})
        for entry in live.get("files", []):
            path = entry["path"]
            base = PurePosixPath(path).name
            if path in known.vhost_files or base in STOCK_VHOSTS or base.startswith(adopted_target.SUSPEND_PREFIX):
                continue
            blocks = entry.get("vhosts") or []
            names = [b["server_name"] for b in blocks if b.get("server_name")]
            if names and all(n in known.fqdns for n in names):
                continue
            vhost = {"host": web.name, "file": path, "sha256": entry.get("sha256"),
                     "links": entry.get("links", []), "enabled": bool(entry.get("links")) or
                     bool(entry.get("plain_in_enabled")), "plain_in_enabled": bool(entry.get("plain_in_enabled")),
                     "blocks": blocks}
            if ignored("vhost", path, web.name, base, base.removesuffix(".conf"), *names, zones=zones_of(names)):
                continue
            if not names:
                out["unassigned"]["vhosts"].append(vhost)
            # A file with several sites' blocks is listed under each of them (adopting one says so).
            in_zones = [n for n in names if _in_zones(n, config.zones)] or names
            for fqdn in sorted(set(in_zones)):
                if in_scope(fqdn) and fqdn not in known.fqdns:
                    site_for(fqdn)["vhosts"].append(_vhost_view(vhost, fqdn, uses, system_users))
        for pool in live.get("pools", []):
            if pool["file"] in known.pools or pool.get("name") in known.pools or pool.get("name") in STOCK_POOLS:
                continue
            if ignored("pool", pool.get("name") or pool["file"], web.name, pool["file"]):
                continue
            pools_seen.append(dict(pool, host=web.name,
                                   used_by=import_probe.listen_users(uses, [pool.get("listen")])))

    if not (host is not None and not webs):
        live_dns = reader.dns(zones)
        for z in zones:
            apex = z + "."
            rrsets = live_dns.get(z, {})
            ns_names = {r["content"] for (n, t), rr in rrsets.items() if n == apex and t == "NS" for r in rr["records"]}
            for (name, rtype), rrset in sorted(rrsets.items()):
                fqdn = name.rstrip(".").lower()
                if rtype != "A" or name in ns_names or fqdn in known.fqdns:
                    continue
                record = {"zone": z, "name": fqdn, "addresses": sorted(r["content"] for r in rrset["records"]),
                          "ttl": rrset.get("ttl"), "marked": is_ours(rrset)}
                if host is not None and not set(record["addresses"]) & addresses:
                    continue  # another web host's
                if ignored("A record", fqdn, z, zones=[z]):
                    continue
                site_for(fqdn)["dns"].append(record)

    for pool in pools_seen:
        _place_pool(pool, out)

    for db_host in dbs:
        live = reader.db(db_host)
        accounts = [dict(a, db_host=db_host.name) for a in live.get("accounts", [])]
        # An account the hosting list leaves alone (a backup account granted on every database) is
        # set aside once, before the databases are grouped: it never goes with a site.
        left_alone = {a["user"] for a in accounts if a["user"] not in known.accounts and a["user"].lower() in unmanaged}
        for user in sorted(left_alone):
            ignored("database user", user, db_host.name)
        accounts = [a for a in accounts if a["user"] not in left_alone]
        for name in live.get("databases", []):
            if name in known.databases:
                continue
            if ignored("database", name, db_host.name):
                continue
            granted_users = {a["user"] for a in accounts if name in a["databases"] and a["user"] not in known.accounts}
            # Every host of those users, granted on this database or not: the audit reads them all.
            users = [a for a in accounts if a["user"] in granted_users]
            _place_database({"host": db_host.name, "name": name,
                             "accounts": [{"user": a["user"], "host": a["host"], "grants": a["grants"]}
                                          for a in users]},
                            out)
        granted = {a["user"] for a in accounts if any(d in live.get("databases", []) for d in a["databases"])}
        for a in accounts:
            if a["user"] in known.accounts or a["user"] in granted:
                continue
            if ignored("database user", a["user"], db_host.name):
                continue
            out["unassigned"]["accounts"].append({"host": db_host.name, "user": a["user"], "client_host": a["host"],
                                                  "grants": a["grants"]})

    # A pool, database or database account an office's own list names is set aside once it is
    # placed with a site of that office (until then it is no office's: only the hosting list speaks for it).
    for site in out["sites"].values():
        own = by_zone.get(site["zone"], set())
        for database in site["databases"]:
            for user in sorted({a["user"] for a in database["accounts"] if a["user"].lower() in own}):
                out["ignored"].append({"kind": "database user", "name": user, "host": database["host"]})
            database["accounts"] = [a for a in database["accounts"] if a["user"].lower() not in own]
        for key, kind in (("pools", "pool"), ("databases", "database")):
            placed = []
            for item in site[key]:
                if {n.lower() for n in (item.get("name"), item.get("file")) if n} & own:
                    out["ignored"].append({"kind": kind, "name": item.get("name") or item["file"],
                                           "host": item["host"]})
                else:
                    placed.append(item)
            site[key] = placed

    # Sites only the unmanaged lists name are set aside whole.
    for fqdn in sorted(out["sites"]):
        if fqdn in unmanaged | by_zone.get(out["sites"][fqdn]["zone"], set()):
            out["ignored"].append({"kind": "site", "name": fqdn, "host": out["sites"][fqdn]["zone"]})
            del out["sites"][fqdn]
    out["sites"] = [out["sites"][f] for f in sorted(out["sites"])]
    return out


def _in_zones(name: str, zones) -> bool:
    return any(name == z or name.endswith("." + z) for z in zones)


def _vhost_view(vhost: dict, fqdn: str, uses: dict | None = None, accounts: dict | None = None) -> dict:
    """What the listing shows of a vhost file for one site: its blocks of that name, owner (with its
    passwd entry: home, shell, groups), TLS."""
    mine = [b for b in vhost["blocks"] if b.get("server_name") == fqdn or fqdn in (b.get("aliases") or [])]
    others = sorted({b["server_name"] for b in vhost["blocks"] if b not in mine and b.get("server_name")})
    docroots = sorted({b["docroot"] for b in mine if b.get("docroot")})
    stat = next((b["docroot_stat"] for b in mine if b.get("docroot_stat")), None)
    tls = next(({"cert_file": b["cert_file"], "key_file": b.get("key_file"), "chain_file": b.get("chain_file"),
                 "not_after": b.get("cert_not_after")} for b in mine if b.get("cert_file")), None)
    owner = stat["owner"] if stat else None
    uses = uses or {"roots": [], "owners": [], "handlers": []}
    roots_shared = import_probe.docroot_users(uses, docroots[0] if docroots else None, but=(vhost["file"],))
    owner_shared = import_probe.owner_users(uses, owner, but=(vhost["file"],))
    return {"host": vhost["host"], "file": vhost["file"], "sha256": vhost["sha256"], "links": vhost["links"],
            "docroot_shared_with": roots_shared, "owner_shared_with": owner_shared,
            "enabled": vhost["enabled"], "plain_in_enabled": vhost["plain_in_enabled"],
            "server_names": sorted({b["server_name"] for b in mine if b.get("server_name")}),
            "aliases": sorted({a for b in mine for a in b.get("aliases") or []}),
            "listen": [b["listen"] for b in mine], "docroot": docroots[0] if docroots else None,
            "docroots": docroots, "owner": stat["owner"] if stat else None, "docroot_stat": stat, "tls": tls,
            "owner_account": (accounts or {}).get(owner) if owner else None,
            "error_log": next((b["error_log"] for b in mine if b.get("error_log")), None),
            "fpm_sockets": sorted({s for b in mine for s in b.get("fpm_sockets") or []}),
            "shared_with": others,
            "blocks": [{k: b.get(k) for k in ("listen", "server_name", "aliases", "cert_file", "key_file",
                                              "chain_file")} for b in mine]}


def _stems(site: dict) -> set[str]:
    """The names a site's pool or database is expected to resemble: its label, docroot and owner."""
    stems = {_simple(site["label"].split(".")[0])}
    for v in site["vhosts"]:
        for root in v["docroots"]:
            parts = [p for p in PurePosixPath(root).parts if p not in ("/", "public", "public_html", "htdocs", "html",
                                                                     "web", "www", "var", "srv")]
            stems |= {_simple(p) for p in parts[-1:]}
        if v.get("owner") and v["owner"] not in ("root", "www-data"):
            stems.add(_simple(v["owner"]))
    return {s for s in stems if len(s) >= MIN_STEM}


def _resembles(name: str, stems: set[str]) -> int:
    """The length of the longest stem `name` resembles (0: none)."""
    simple = _simple(name)
    return max((len(s) for s in stems if s in simple or (len(simple) >= MIN_STEM and simple in s)), default=0)


def _best(candidates: list[tuple[int, dict]]) -> dict | None:
    """The one site with the strongest match; None when nothing matches or two tie."""
    candidates = sorted((c for c in candidates if c[0] > 0), key=lambda c: -c[0])
    if not candidates or (len(candidates) > 1 and candidates[0][0] == candidates[1][0]):
        return None
    return candidates[0][1]


def _place_pool(pool: dict, out: dict) -> None:
    sites = [s for s in out["sites"].values() if s["vhosts"]]
    listen = pool.get("listen") or ""
    by_socket = [s for s in sites if any(listen in v["fpm_sockets"] for v in s["vhosts"])] if listen else []
    if len(by_socket) == 1:
        by_socket[0]["pools"].append(dict(pool, matched_by="the vhost hands PHP to its socket"))
        return
    by_owner = [s for s in sites if pool.get("user") and pool["user"] not in ("www-data", "root")
                and any(v.get("owner") == pool["user"] for v in s["vhosts"])]
    if len(by_owner) == 1:
        by_owner[0]["pools"].append(dict(pool, matched_by=f"its user {pool['user']} owns the document root"))
        return
    site = _best([(_resembles(pool.get("name") or "", _stems(s)), s) for s in sites])
    if site is not None:
        site["pools"].append(dict(pool, matched_by="its name resembles the site's"))
        return
    out["unassigned"]["pools"].append(pool)


def _place_database(database: dict, out: dict) -> None:
    names = [database["name"]] + [a["user"] for a in database["accounts"]]
    site = _best([(max(_resembles(n, _stems(s)) for n in names), s) for s in out["sites"].values()])
    if site is None:
        out["unassigned"]["databases"].append(database)
    else:
        site["databases"].append(dict(database, matched_by="its name or its user's resembles the site's"))


# -- adoption -----------------------------------------------------------------------


def _one(items: list, what: str, fqdn: str, show) -> dict | None:
    if len(items) > 1:
        raise Conflict(f"{fqdn}: {len(items)} {what} were found ({', '.join(show(i) for i in items)}); adopt "
                       "takes one: put the others on the unmanaged list or remove them by hand first")
    return items[0] if items else None


def adoption_record(config, work: Hosting, found: dict, request_id: str) -> tuple[SiteRow, dict]:
    """The SiteRow (unsaved) and record of a discovered site, as found."""
    fqdn, zone = found["fqdn"], found["zone"]
    if zone is None:
        raise UserError(f"{fqdn} is in none of the managed zones; only a site of an office can be adopted")
    vhost = _one(found["vhosts"], "vhost files", fqdn, lambda v: f"{v['host']}:{v['file']}")
    if vhost is None:
        raise StateError(f"{fqdn}: no vhost serves it on the web hosts; only a site that is served can be adopted")
    if not vhost["docroot"] or vhost["docroot_stat"] is None:
        raise StateError(f"{fqdn}: its vhost {vhost['file']} names no document root that exists")
    pool = _one(found["pools"], "PHP-FPM pools", fqdn, lambda p: f"{p['host']}:{p['file']}")
    database = _one(found["databases"], "databases", fqdn, lambda d: f"{d['host']}:{d['name']}")
    users = sorted({a["user"] for a in database["accounts"]}) if database else []
    if len(users) > 1:
        raise Conflict(f"{fqdn}: database {database['name']} has {len(users)} users ({', '.join(users)}); adopt "
                       "takes one: put the others on the unmanaged list first")
    if database:
        # These names go into SQL when the site is audited or removed: only names that need no quoting.
        unsafe = [f"database name {database['name']!r}"] if not adopted_target.SAFE_DB_NAME.fullmatch(
            database["name"]) else []
        unsafe += [f"user {u!r}" for u in users if not adopted_target.SAFE_DB_NAME.fullmatch(u)]
        unsafe += [f"account host {a['host']!r}" for a in database["accounts"]
                   if not adopted_target.SAFE_DB_HOST.fullmatch(a["host"])]
        if unsafe:
            raise StateError(f"{fqdn}: its {', '.join(unsafe)} cannot be recorded: the toolkit only puts names "
                             "of letters, digits, '_', '$' and '-' (hosts also '.', ':' and '%') into SQL; "
                             "rename them on the database host or put the database on the unmanaged list")
    record_dns = _one(found["dns"], "A records", fqdn, lambda r: r["name"])
    web = work.inventory.host(vhost["host"])
    if record_dns is not None:
        public_ip = record_dns["addresses"][0]
    else:
        listened = [x.split(":")[0] for block in vhost["listen"] for x in block]
        public_ip = next((a for a in listened if a not in ("*", "_default_") and a[0].isdigit()),
                         ipam.shared_address(web))
    php_version = pool["php_version"] if pool else None
    names = adopted.site_names(fqdn, found["label"], zone, vhost["docroot"], vhost["owner"], vhost["error_log"],
                               pool["name"] if pool else None, database["name"] if database else None,
                               users[0] if users else None)
    grants = [g for a in (database["accounts"] if database else []) for g in a["grants"]]
    # The account goes with the site only if it is the site's own: no grant beyond its database.
    shared_grants = adopted.other_grants(grants, database["name"]) if database else []
    owner_problem = adopted.owner_problem(vhost["owner"], vhost.get("owner_account"), vhost["docroot"],
                                          web.ssh_user)
    # Other vhosts that hand PHP to the pool's socket: the pool (and the account it runs as) is theirs too.
    pool_shared = [f for f in pool.get("used_by", []) if f != vhost["file"]] if pool else []
    if owner_problem is None and pool_shared and pool["user"] == vhost["owner"]:
        owner_problem = f"its PHP-FPM pool {pool['file']} also serves {', '.join(pool_shared)}"
    found_layout = {
        "vhost_file": vhost["file"], "links": vhost["links"], "vhosts": vhost["blocks"],
        "shared_with": vhost["shared_with"], "server_names": vhost["server_names"], "aliases": vhost["aliases"],
        "docroot": vhost["docroot"], "owner": vhost["owner"], "docroot_mode": vhost["docroot_stat"]["mode"],
        # What a removal may take with the site: a document root no other vhost uses, an owner
        # account no other vhost or pool uses that is the site's own (adopted.owner_problem).
        "docroot_shared_with": vhost["docroot_shared_with"],
        "owner_dedicated": owner_problem is None and not [
            f for f in vhost["owner_shared_with"] if not (pool and f == pool["file"])],
        "owner_kept_because": owner_problem,
        "error_log": vhost["error_log"], "tls": vhost["tls"],
        "pool": {**{k: pool[k] for k in ("file", "name", "user", "listen", "php_version", "sha256")},
                 "shared_with": pool_shared} if pool else None,
        "database": {"name": database["name"], "user": users[0] if users else None,
                     "user_hosts": sorted(a["host"] for a in database["accounts"]),
                     "grants": sorted(grants), "user_shared": bool(shared_grants),
                     "user_other_grants": sorted(shared_grants)} if database else None,
        "dns": {k: record_dns[k] for k in ("name", "addresses", "ttl", "marked")} if record_dns else None,
    }
    record = {
        "origin": adopted.ORIGIN, "fqdn": fqdn, "request_id": request_id, "office": found["office"],
        "web_host": web.name, "db_host": database["host"] if database else None, "public_ip": public_ip,
        "dedicated_ip": False, "names": dataclasses.asdict(names),
        "php": pool is not None or bool(vhost["fpm_sockets"]), "php_version": php_version,
        "database": database is not None, "db_name": names.db_name or None, "db_user": names.db_user or None,
        "sftp_user": None, "tls": vhost["tls"] is not None, "quota_mb": 0, "bandwidth_kbps": 0,
        "allow_exec": None, "vhost_sha256": vhost["sha256"], "pool_sha256": pool["sha256"] if pool else None,
        "found": found_layout,
    }
    now = utcnow()
    row = SiteRow(fqdn=fqdn, request_id=request_id, office=found["office"], zone=zone, label=found["label"],
                  state="provisioned", web_host=web.name, db_host=record["db_host"], public_ip=public_ip,
                  dedicated_ip=False, config=record, plan_checksum=None, created_at=now, provisioned_at=now,
                  updated_at=now, reason=None)
    return row, record


def _synthetic_request(fqdn: str, office: str, actor: str, at) -> bytes:
    """The SOP record of an adoption that came with no request: what, whose, when, by whom."""
    text = ("# Adopted site: recorded as found on the hosts by `provision import`; it was not requested\n"
            "# through the SOP and its approval was not recorded, so nothing provisions it from here.\n")
    return (text + yaml.safe_dump({"adopted": {"fqdn": fqdn, "office": office, "by": actor,
                                               "at": at.isoformat(timespec="seconds")}}, sort_keys=False)).encode()


def _next_adoption_id(session, year: int) -> str:
    prefix = f"{ADOPTED_ID_PREFIX}-{year}-"
    taken = session.scalars(select(RequestRow.id).where(RequestRow.id.like(prefix + "%"))).all()
    number = max((int(i.rsplit("-", 1)[1]) for i in taken), default=0) + 1
    return f"{prefix}{number:04d}"


def adopt(config, store, fqdn: str, request_file=None, apply: bool = False, actor: str | None = None,
          reader=None, work: Hosting | None = None) -> dict:
    """Record a discovered site as adopted (with apply), or show what would be recorded."""
    fqdn = fqdn.rstrip(".").lower()
    actor = actor or getpass.getuser()
    work = work or Hosting(config, store, source="cli")
    zone = zone_of(fqdn, config.zones)
    existing = work.site_row(fqdn)
    if existing is not None and existing.state != "removed":
        raise Conflict(f"{fqdn} is already recorded (request {existing.request_id}, state {existing.state}); "
                       "nothing to adopt")
    found = next((s for s in discover(config, store, zone=zone, reader=reader, work=work)["sites"]
                  if s["fqdn"] == fqdn), None)
    if found is None:
        raise NotFound(f"{fqdn}: nothing on the hosts that no record explains goes by that name "
                       "(or it is on the unmanaged list); see provision import")
    request = None
    if request_file is not None:
        raw = read_request_file(request_file)
        request = validate(raw, config, source=str(request_file))
        if request.service != "hosting" or request.fqdn != fqdn:
            raise UserError(f"--request: {request_file} asks for {request.service} of {request.fqdn}, "
                            f"not hosting of {fqdn}")
    now = utcnow()
    office = config.office_for_zone(zone).key
    raw = request.raw if request else _synthetic_request(fqdn, office, actor, now)
    shown_id = request.id if request else f"{ADOPTED_ID_PREFIX}-{now.year}-NNNN (assigned when recorded)"
    row, record = adoption_record(config, work, found, shown_id)
    result = {"fqdn": fqdn, "applied": False, "record": record, "found": found,
              "request": {"id": shown_id, "from": str(request_file) if request else "synthetic, marked adopted",
                          "sha256": content_sha256(raw)}, "actor": actor}
    if not apply:
        return result
    with locks.held(store, [f"site:{fqdn}"]):
        try:
            with store.session() as session:
                old = session.get(SiteRow, fqdn)
                if old is not None and old.state != "removed":
                    raise Conflict(f"{fqdn} was recorded by someone else meanwhile (request {old.request_id})")
                if old is not None:
                    session.delete(old)
                    session.flush()
                request_id = request.id if request else _next_adoption_id(session, now.year)
                if session.get(RequestRow, request_id) is not None:
                    raise Conflict(f"request {request_id} is already registered; an adopted site needs its own")
                # No decision and no current step: the SOP engine has nothing to run for it, and
                # `provision hosting` refuses it (no approval) — it never provisions the site again.
                session.add(RequestRow(id=request_id, service="hosting", office=office, fqdn=fqdn,
                                       sha256=content_sha256(raw), content=raw,
                                       source=str(request_file) if request else "provision import (adopted)",
                                       submitted_at=now, state="done", decision=None, current_step=None))
                session.flush()
                row.request_id = request_id
                record["request_id"] = request_id
                record["adopted"] = {"by": actor, "at": now.isoformat(timespec="seconds"), "request": request_id,
                                     "request_file": str(request_file) if request else None}
                row.config = record
                session.add(row)
                add_event(session, request_id, "request_adopted", actor=actor, source="cli", fqdn=fqdn,
                          sha256=content_sha256(raw), synthetic=request is None,
                          file=str(request_file) if request else None, sop_record="adoption")
                add_event(session, request_id, "site_adopted", actor=actor, source="cli", fqdn=fqdn,
                          record=record, sop_record="adoption")
        except IntegrityError:
            raise Conflict(f"{fqdn}: recorded at the same moment by someone else; run it again") from None
    result.update(applied=True, record=record)
    result["request"]["id"] = request_id
    return result


# -- normalization ------------------------------------------------------------------


def normalize(config, store, fqdn: str, work: Hosting | None = None) -> Plan:
    """The reviewed plan that moves an adopted site to the toolkit's own layout (not applied here).

    Its user, document root, pool and vhost become the derived ones, rendered
    from the toolkit's templates; the files are copied, the database gets the
    toolkit's account, the A record gets the toolkit's ownership marker. The
    office's old files and accounts are removed last, once the new layout answers.
    """
    work = work or Hosting(config, store)
    row = work.site_row(fqdn)
    if row is None or not adopted.is_adopted(row.config):
        raise StateError(f"{fqdn} is not an adopted site in the records; adopt it first (provision import "
                         f"--site {fqdn} --apply)")
    if row.state != "provisioned":
        raise StateError(f"{fqdn} is {row.state}: normalize it once it is provisioned")
    if naming.label_problems(row.label, stored=True):
        raise StateError(f"{fqdn}: its label {row.label!r} is not one DNS label; the toolkit's layout "
                         "derives its names from one")
    (now,) = work.recorded_sites([fqdn])
    found = now.adopted
    web = work.inventory.host(row.web_host)
    target = DesiredSite(request_id=row.request_id, office=row.office, label=row.label, zone=row.zone,
                         names=naming.site_names(row.label, row.zone), web_host=row.web_host,
                         web_address=web.address, db_host=row.db_host, public_ip=row.public_ip, dedicated_ip=False,
                         php=now.php, php_version=now.php_version, database=now.database, tls=now.tls,
                         quota_mb=config.limits.quota_mb_max if not now.quota_mb else now.quota_mb,
                         bandwidth_kbps=0)
    n, o, h, f = target.names, now.names, row.web_host, fqdn
    changes = [
        Create("web", h, f, "system user", n.user, home=n.home, was=o.user),
        Create("web", h, f, "docroot", n.docroot, owner=n.user, copied_from=o.docroot),
        Create("web", h, f, "SFTP account", n.user, chroot=n.home),
    ]
    if target.php:
        changes.append(Create("web", h, f, "PHP-FPM pool", n.pool, content=target.pool()))
        if found.get("pool"):
            changes.append(Delete("web", h, f, "PHP-FPM pool", found["pool"]["file"], reason="the office's, replaced"))
    if target.tls:
        changes.append(Create("web", h, f, "TLS certificate", f"/etc/ssl/provisioner/{f}.crt",
                              was=(found.get("tls") or {}).get("cert_file")))
    changes.append(Create("web", h, f, "vhost", f"/etc/apache2/sites-available/{f}.conf", content=target.vhost()))
    for link in found.get("links", []):
        changes.append(Delete("web", h, f, "vhost link", link["path"], reason="the office's vhost, replaced"))
    changes.append(Delete("web", h, f, "vhost", found["vhost_file"], reason="the office's, replaced"))
    db = found.get("database")
    if target.database and db:
        changes += [Create("db", row.db_host, f, "database", n.db_name, copied_from=db["name"]),
                    Create("db", row.db_host, f, "database user", f"{n.db_user}@{web.address}"),
                    Create("db", row.db_host, f, "grant",
                           f"GRANT ALL PRIVILEGES ON `{n.db_name}`.* TO `{n.db_user}`@`{web.address}`"),
                    Delete("db", row.db_host, f, "database user",
                           ", ".join(f"{db['user']}@{x}" for x in db["user_hosts"]), reason="the office's, replaced"),
                    Delete("db", row.db_host, f, "database", db["name"], reason="copied to the toolkit's")]
    changes.append(Update("dns", row.zone, f, "A record", f, address=row.public_ip, ttl=config.hosting.dns_ttl,
                          marker=ACCOUNT, was=(found.get("dns") or {}).get("addresses")))
    plan = Plan(changes=changes, sites=[f])
    plan.notes = {f: "normalization of an adopted site: planned only; the toolkit does not apply it yet "
                     "(copying the files and the database is the office's to schedule)"}
    return plan
