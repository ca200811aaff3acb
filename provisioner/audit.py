"""`provision audit`: every configuration record against the live hosts, as findings.

The live state is read through the same channels as provisioning and in bulk:
one PowerDNS API call per zone, one SSH session per web and database host,
one DNS query per recorded name at each name server, and one TLS handshake
per HTTPS site at its public address (the certificate a visitor gets).
compare() is pure: records and live data in, findings out. Nothing here
changes a host; the fix is the hosting plan for the drifted sites, applied by
Hosting.apply, and a renewal of the certificates found wrong (tls_renewal).
"""

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import select

from provisioner import adopted, certificates, parallel, tls_renewal, verify
from provisioner.errors import Conflict, HostError, NotFound, StateError
from provisioner.hosting import Hosting, Live
from provisioner.plan import Plan
from provisioner.site import DesiredSite, sha256
from provisioner.store.events import add_event
from provisioner.store.models import SiteRow
from provisioner.targets import db as db_target
from provisioner.targets import web as web_target
from provisioner.targets.dns import is_challenge, is_ours

SEVERITIES = ("critical", "high", "medium", "low")
AUDITED_STATES = ("provisioned", "suspended")
# A served certificate with fewer days left is a finding: the daily renewal (30 days ahead by
# default) should have replaced it well before, so something keeps it from doing so.
EXPIRING_DAYS = 21
# Findings a new certificate puts right: `--fix` plans a renewal for their sites.
RENEWED_KINDS = ("tls-expired", "tls-expiring", "tls-name", "tls-issuer")
# Where the public_ip role keeps a web server's dedicated addresses for its restarts.
KEPT_ADDRESSES = "/etc/provisioner/public-addresses"


@dataclass(frozen=True)
class Finding:
    severity: str  # critical | high | medium | low
    kind: str  # a stable identifier: "dns-missing", "grant-wider", ...
    site: str | None  # the fqdn, or None for what belongs to no record
    target: str  # dns | web | db | ip
    host: str  # a host of the inventory, or the DNS zone
    what: str  # the thing, in a few words
    expected: str
    found: str
    fix: str  # one line: what restores it, or what a human should check

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(Finding))


@dataclass
class Report:
    findings: list[Finding]
    sites: list[str]
    zones: list[str]
    fix: dict | None = None  # with --fix: the plan, whether it was applied, what stays
    after: list[Finding] | None = None  # with --fix --apply: the findings of the audit after it
    # fqdn -> the served certificate's issuer, names, not_after, days_left, trusted (or its error)
    certificates: dict = field(default_factory=dict)

    @property
    def remaining(self) -> list[Finding]:
        return self.findings if self.after is None else self.after

    @property
    def clean(self) -> bool:
        return not self.remaining

    @property
    def exit_code(self) -> int:
        return 0 if self.clean else 1

    def counts(self, findings: list[Finding] | None = None) -> dict[str, int]:
        findings = self.findings if findings is None else findings
        return {s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES}

    def as_dict(self) -> dict:
        data = {"clean": not self.findings, "sites": self.sites, "zones": self.zones,
                "counts": self.counts(), "findings": [f.as_dict() for f in self.findings],
                "certificates": self.certificates}
        if self.fix is not None:
            data["fix"] = self.fix
        if self.after is not None:
            data["after"] = {"clean": not self.after, "counts": self.counts(self.after),
                             "findings": [f.as_dict() for f in self.after]}
        return data


@dataclass
class Observed:
    """Everything read from outside the toolkit, for compare()."""

    live: Live
    ns: dict = field(default_factory=dict)  # fqdn -> ns name -> {"addresses", "authoritative", "error"}
    nameservers: list[str] = field(default_factory=list)
    # fqdn -> certificates.served() facts, or {"error": text} when nothing answered on 443;
    # a TLS site missing here was not read and gets no served-certificate finding.
    served: dict = field(default_factory=dict)
    trust: str | None = None  # the CA file the served certificates were checked against (None: system store)


def _restore(site: str, action: str) -> str:
    return f"{action}: provision audit --fix --apply --site {site}"


def sort_key(f: Finding):
    return (SEVERITIES.index(f.severity), f.site or "~", f.target, f.kind, f.what)


# -- the comparison --------------------------------------------------------------


def compare(sites: list[DesiredSite], records: dict[str, dict], observed: Observed, zones: list[str],
            explained: dict[str, set] | None = None, extras: bool = True,
            unmanaged: dict[str, set] | None = None) -> list[Finding]:
    """Findings for recorded sites against the live state.

    records: fqdn -> the configuration record's body (SiteRow.config).
    explained: zone -> names whose A record a configuration record explains
    (any site not removed); defaults to the audited sites.
    unmanaged: zone -> names left unmanaged there (Config.unmanaged_by_zone): never extra.
    An adopted site is held to what was found when it was adopted (provisioner.adopted).
    """
    findings = []
    for site in sites:
        record = records.get(site.fqdn, {})
        findings += _dns(site, observed)
        findings += _ip(site, observed.live.web)
        if site.adopted is not None:
            findings += adopted.findings(site, record, observed.live.web, observed.live.db)
        else:
            findings += _web(site, record, observed.live.web)
            findings += _db(site, observed.live.db)
        findings += _served(site, observed)
    findings += _shared_addresses(sites, observed.live.web)
    findings += _default_vhosts(sites, observed.live.web)
    if extras:
        if explained is None:
            explained = {}
            for site in sites:
                explained.setdefault(site.zone, set()).add(site.fqdn)
        findings += extra_records(observed.live.dns, zones, explained, unmanaged)
    return sorted(findings, key=sort_key)


def _dns(site: DesiredSite, observed: Observed) -> list[Finding]:
    name = site.fqdn + "."
    zone = observed.live.dns.get(site.zone, {})
    rrset = zone.get((name, "A"))
    what = f"A record {site.fqdn}"

    def finding(severity, kind, found, fix, host=site.zone):
        return Finding(severity, kind, site.fqdn, "dns", host, what, site.public_ip, found, fix)

    if rrset is None:
        return [finding("critical", "dns-missing", "no A record in the zone",
                        _restore(site.fqdn, "recreate it through the PowerDNS API"))]
    addresses = sorted(r["content"] for r in rrset["records"] if not r.get("disabled"))
    # An adopted record stays as the office made it (no marker) until the site is normalized.
    if not is_ours(rrset) and site.adopted is None:
        return [finding("high", "dns-foreign", f"{', '.join(addresses) or 'no address'} "
                        "(not marked as the toolkit's)",
                        f"someone replaced the record in {site.zone}: find out who and why, then restore "
                        "it by hand; the toolkit does not overwrite records it did not create")]
    if addresses != [site.public_ip]:
        return [finding("critical", "dns-address", ", ".join(addresses) or "no enabled address",
                        _restore(site.fqdn, "set the recorded address through the PowerDNS API"))]
    findings = []
    for ns in observed.nameservers:
        seen = observed.ns.get(site.fqdn, {}).get(ns)
        if seen is None:
            continue
        if seen.get("authoritative") and seen.get("addresses") == [site.public_ip]:
            continue
        answer = seen.get("error") or (f"{', '.join(seen.get('addresses') or []) or 'no address'}"
                                       f"{'' if seen.get('authoritative') else ' (not authoritative)'}")
        findings.append(finding("high", "dns-answer", answer,
                                f"{ns} serves an old copy of {site.zone}: check NOTIFY and zone transfer "
                                f"from the primary (the primary's record is right)", host=ns))
    return findings


def extra_records(dns_live: dict, zones: list[str], explained: dict[str, set],
                  unmanaged: dict[str, set] | None = None) -> list[Finding]:
    """Rrsets in managed zones that neither the zone's own setup, a record, nor the names left
    unmanaged in that zone (the hosting list and the zone's office's) explain."""
    findings = []
    for zone in zones:
        rrsets = dns_live.get(zone)
        if rrsets is None:
            continue
        apex = zone.rstrip(".") + "."
        ns_names = {r["content"] for (n, t), rr in rrsets.items() if n == apex and t == "NS" for r in rr["records"]}
        sites = {f.rstrip(".") + "." for f in explained.get(zone, set())}
        left_alone = (unmanaged or {}).get(zone, set())
        for (name, rtype), rrset in sorted(rrsets.items()):
            if name == apex and rtype in ("SOA", "NS"):
                continue
            if name in ns_names and rtype in ("A", "AAAA"):
                continue
            if name in sites and rtype == "A":
                continue
            if is_challenge(name, rtype, rrset):
                continue  # an ACME order in progress (or one whose cleanup is retried): not drift
            if name.rstrip(".").lower() in left_alone:
                continue  # the office leaves it unmanaged on purpose
            content = ", ".join(r["content"] for r in rrset["records"]) or "no records"
            if rtype == "A" and is_ours(rrset):
                fix = ("marked as the toolkit's but no configuration record explains it (a removed or failed "
                       "site?): check, then delete it through the PowerDNS API")
            else:
                fix = "check who added it and why; the toolkit never deletes a record it did not create"
            findings.append(Finding("medium", "dns-extra", None, "dns", zone, f"{rtype} record {name.rstrip('.')}",
                                    "no such record", content, fix))
    return findings


def _ip(site: DesiredSite, web_live: dict) -> list[Finding]:
    if not site.dedicated_ip:
        return []
    live = web_live[site.web_host]
    if site.public_ip in live.get("addresses", []):
        # Up now; without its line in the kept file it is gone after the server's next restart.
        # (A probe that did not read the file, as in older recordings, says nothing about it.)
        if "kept_addresses" not in live or site.public_ip in live["kept_addresses"]:
            return []
        return [Finding("medium", "ip-not-persistent", site.fqdn, "ip", site.web_host, f"dedicated IP {site.public_ip}",
                        f"{site.public_ip} kept in {KEPT_ADDRESSES} on {site.web_host}",
                        "up now, but lost when the server restarts",
                        f"keep it: run playbooks/public_ip.yml --limit {site.web_host} with the address present "
                        f"(public_ip__addresses: [{{address: {site.public_ip}, prefix: 32}}])")]
    return [Finding("critical", "ip-missing", site.fqdn, "ip", site.web_host, f"dedicated IP {site.public_ip}",
                    f"{site.public_ip} up on {site.web_host}", "not on any interface",
                    _restore(site.fqdn, "bring the address up again"))]


def _shared_addresses(sites: list[DesiredSite], web_live: dict) -> list[Finding]:
    findings = []
    shared = sorted({(s.web_host, s.public_ip) for s in sites if not s.dedicated_ip})
    for host, address in shared:
        if address not in web_live[host].get("addresses", []):
            users = sorted(s.fqdn for s in sites if s.web_host == host and s.public_ip == address)
            findings.append(Finding(
                "critical", "ip-shared-missing", None, "ip", host, f"shared IP {address}",
                f"{address} up on {host} (sites: {', '.join(users)})", "not on any interface",
                f"the web server's own address is host configuration, not a site's: restore the network "
                f"configuration of {host}"))
    return findings


def _default_vhosts(sites: list[DesiredSite], web_live: dict) -> list[Finding]:
    """Every address the recorded sites use needs its default vhosts, or a name nobody serves gets a site."""
    findings = []
    # An adopted site's address is the office's own setup: only the toolkit's sites need its default vhosts.
    for host, address in sorted({(s.web_host, s.public_ip) for s in sites if s.adopted is None}):
        if not web_target.default_vhost_missing(web_live[host], address):
            continue
        ports = web_live[host]["default_vhosts"].get(address, [])
        users = sorted(s.fqdn for s in sites if s.web_host == host and s.public_ip == address)
        findings.append(Finding(
            "high", "default-vhost-missing", None, "web", host, f"default vhost of {address}",
            "default vhosts on ports 80 and 443 (404, a neutral page)",
            f"only port {ports[0]}" if ports else "none: an unknown name gets the first site's vhost",
            f"rerun the web role for a site on it ({users[0]}): provision audit --fix --apply"))
    return findings


def _default_fix_sites(sites: list[DesiredSite], web_live: dict) -> set[str]:
    """One site per address that lacks its default vhosts: its web run restores them."""
    chosen = {}
    for s in sorted(sites, key=lambda s: s.fqdn):
        if s.adopted is None and web_target.default_vhost_missing(web_live[s.web_host], s.public_ip):
            chosen.setdefault((s.web_host, s.public_ip), s.fqdn)
    return set(chosen.values())


def _web(site: DesiredSite, record: dict, web_live: dict) -> list[Finding]:
    state = web_live[site.web_host]["sites"][site.fqdn]
    h, f, n = site.web_host, site.fqdn, site.names
    findings = []

    def add(severity, kind, what, expected, found, fix):
        findings.append(Finding(severity, kind, f, "web", h, what, expected, found, fix))

    if state["user"] is None:
        add("critical", "user-missing", f"system user {n.user}", f"user {n.user}, home {n.home}", "no such user",
            _restore(f, "create the user again (SFTP password from the stored credentials)"))
    elif not state["sftp"]:
        add("high", "sftp-missing", f"SFTP account {n.user}", "member of sftp-sites", "not a member",
            _restore(f, "add the user to sftp-sites again"))
    docroot, mode = state["docroot"], web_target.DOCROOT_MODE
    if docroot is None:
        add("critical", "docroot-missing", f"docroot {n.docroot}", f"owner {n.user}, mode {mode}", "missing",
            _restore(f, "create the docroot again (its content is the agency's: restore that from a backup)"))
    elif (docroot["owner"], docroot["mode"]) != (n.user, mode):
        world_writable = int(str(docroot["mode"]), 8) & 0o002
        add("high" if world_writable else "medium", "docroot-owner-mode", f"docroot {n.docroot}",
            f"owner {n.user}, mode {mode}", f"owner {docroot['owner']}, mode {docroot['mode']}",
            _restore(f, "set the recorded owner and mode"))
    home, mode = state.get("home"), web_target.HOME_MODE
    if home is not None and (home["owner"], home["group"], home["mode"]) != ("root", n.user, mode):
        # Readable or enterable by others, other site users can read the site's files and configuration.
        add("high", "home-owner-mode", f"home {n.home}", f"root:{n.user}, mode {mode}",
            f"{home['owner']}:{home['group']}, mode {home['mode']}",
            _restore(f, "set the home's owner, group and mode again"))
    if state["logdir"] is None:
        add("high", "logdir-missing", f"log directory {n.logdir}", "present (root:adm)",
            "missing: the next Apache reload fails", _restore(f, "create the log directory again"))
    if site.php:
        expected_pool = record.get("pool_sha256") or sha256(site.pool())
        if state["pool_sha256"] is None:
            add("high", "pool-missing", f"PHP-FPM pool {n.pool}", f"sha256 {expected_pool[:12]}", "missing",
                _restore(f, "install the recorded pool again"))
        elif state["pool_sha256"] != expected_pool:
            add("medium", "pool-changed", f"PHP-FPM pool {n.pool}", f"sha256 {expected_pool[:12]}",
                f"sha256 {state['pool_sha256'][:12]}", _restore(f, "install the recorded pool again"))
    if site.tls and not state["tls_cert"]:
        add("high", "tls-missing", f"TLS certificate of {f}", f"/etc/ssl/provisioner/{f}.crt", "missing",
            _restore(f, "issue and install the certificate again"))
    if record.get("tls_deferred"):
        add("medium", "tls-deferred", f"HTTPS of {f}", "HTTPS, as the request asks",
            f"HTTP only: {record['tls_deferred']}",
            f"once the CA's limit allows: provision hosting {site.request_id} --apply")
    findings += _vhost(site, record, state)
    return findings


def _served(site: DesiredSite, observed: Observed) -> list[Finding]:
    """The certificate a visitor gets: still valid for a while, for this name, from the configured CA."""
    seen = observed.served.get(site.fqdn)
    if not site.tls or seen is None:
        return []
    h, f = site.web_host, site.fqdn
    what = f"TLS certificate served for {f}"
    renew = _restore(f, "renew")
    if site.adopted is not None:
        # renewal_plan() never renews an adopted site's certificate: it is the office's own.
        cert = (site.adopted.get("tls") or {}).get("cert_file") or "its certificate file"
        renew = (f"the certificate is the office's own (adopted site): renew {cert} on {h} where it was "
                 f"issued, or move the site to the toolkit's layout: provision import --site {f} --normalize")

    def finding(severity, kind, expected, found, fix=renew):
        return Finding(severity, kind, f, "web", h, what, expected, found, fix)

    if seen.get("error"):
        return [finding("high", "tls-unreachable", f"a TLS answer for {f} at {site.public_ip}:443", seen["error"],
                        f"check that Apache on {h} is running and listens on {site.public_ip}:443 "
                        f"(apache2ctl -S), then: provision audit --site {f}")]
    findings = []
    days, date = seen["days_left"], seen["not_after"][:10]
    expired = days <= 0
    if expired:
        findings.append(finding("critical", "tls-expired", "a certificate still valid",
                                f"expired {date} ({-days:.1f} days ago)"))
    elif days < EXPIRING_DAYS:
        findings.append(finding("high", "tls-expiring", f"at least {EXPIRING_DAYS} days left",
                                f"expires {date} ({days:.1f} days left)"))
    if not seen["covers"]:
        findings.append(finding("high", "tls-name", f"a certificate that covers {f}",
                                f"names {', '.join(seen['names']) or 'none'}"))
    # An expired certificate fails verification for its date alone: tls-expired says that already.
    if not seen["trusted"] and not (expired and "expired" in (seen.get("trust_error") or "")):
        issuer = seen["issuer"] + (f" ({seen['issuer_org']})" if seen.get("issuer_org") else "")
        findings.append(finding("high", "tls-issuer", f"issued by the configured CA "
                                f"({observed.trust or 'the system CA store'})",
                                f"issuer {issuer}: {seen.get('trust_error') or 'not trusted'}"))
    return findings


def _vhost(site: DesiredSite, record: dict, state: dict) -> list[Finding]:
    h, f = site.web_host, site.fqdn
    what = f"vhost {f}"
    if state["vhost_sha256"] is None:
        return [Finding("critical", "vhost-missing", f, "web", h, what, "present and enabled", "missing",
                        _restore(f, "install the recorded vhost again"))]
    findings = []
    if not state["vhost_enabled"]:
        findings.append(Finding("critical", "vhost-disabled", f, "web", h, what, "enabled", "disabled",
                                _restore(f, "enable the vhost again")))
    names, roots = state.get("server_names"), state.get("document_roots")
    if names is not None and names != [f]:
        findings.append(Finding("high", "vhost-servername", f, "web", h, what, f"ServerName {f}",
                                f"ServerName {', '.join(names) or 'none'}",
                                _restore(f, "install the recorded vhost again")))
    if roots is not None and roots != [site.names.docroot]:
        findings.append(Finding("high", "vhost-docroot", f, "web", h, what, f"DocumentRoot {site.names.docroot}",
                                f"DocumentRoot {', '.join(roots) or 'none'}",
                                _restore(f, "install the recorded vhost again")))
    # Suspension re-renders the vhost without touching the record, so a suspended site is held to that render.
    expected = sha256(site.vhost()) if site.suspended else (record.get("vhost_sha256") or sha256(site.vhost()))
    if state["vhost_sha256"] != expected:
        findings.append(Finding("medium", "vhost-changed", f, "web", h, what, f"sha256 {expected[:12]} (as applied)",
                                f"sha256 {state['vhost_sha256'][:12]}",
                                _restore(f, "install the recorded vhost again (local edits are lost: "
                                            "check them first)")))
    return findings


def _db(site: DesiredSite, db_live: dict) -> list[Finding]:
    if not site.database:
        return []
    state = db_live[site.db_host]["databases"][site.names.db_name]
    h, f, n = site.db_host, site.fqdn, site.names
    account = f"{n.db_user}@{site.web_address}"
    findings = []

    def add(severity, kind, what, expected, found, fix):
        findings.append(Finding(severity, kind, f, "db", h, what, expected, found, fix))

    if not state["exists"]:
        add("critical", "db-missing", f"database {n.db_name}", "present", "missing",
            _restore(f, "create the database again (its data is the agency's: restore that from a backup)"))
    if site.web_address not in state["user_hosts"]:
        add("critical", "db-user-missing", f"database user {account}", "present", "missing",
            _restore(f, "create the user again with the stored password"))
    others = [host for host in state["user_hosts"] if host != site.web_address]
    if others:
        add("high", "db-user-host", f"database user {n.db_user}", f"allowed from {site.web_address} only",
            "also allowed from " + ", ".join(others), _restore(f, "drop the accounts from other hosts"))
    if site.web_address in state["user_hosts"]:
        wanted = db_target.expected_grant(site)
        extra = db_target.extra_grants(site, state["grants"])
        if wanted not in state["grants"] and not any(g.startswith(wanted) for g in extra):
            add("critical", "grant-missing", f"grant of {account}", wanted, "no grant on its database",
                _restore(f, "grant ALL on its own database again"))
        for grant in extra:
            add("critical" if " ON *.* " in grant else "high", "grant-wider", f"grant of {account}", wanted, grant,
                _restore(f, "revoke every privilege beyond ALL on its own database"))
    return findings


# -- reading the live state ------------------------------------------------------


def ns_answers(inventory, sites: list[DesiredSite], timeout: float = 2.0, workers: int = 16) -> dict:
    """One A query per recorded name at each name server (one retry on a lost packet),
    several names at a time (each query may wait for its timeout)."""
    def asked(site: DesiredSite) -> dict:
        return {name: answer.as_dict() for name, (_ns, answer, _met)
                in verify.ask_every_ns(inventory, site.fqdn, tries=2, query_timeout=timeout).items()}

    return dict(zip([s.fqdn for s in sites], parallel.each(asked, sites, workers)))


def served_certificates(sites: list[DesiredSite], trust: str | None, workers: int = 8) -> dict:
    """The certificate each HTTPS site serves at its public address, as a visitor sees it.

    One handshake per site, a few at a time (each may wait for a timeout);
    a site nothing answers for gets {"error": the reason}.
    """
    tls_sites = [s for s in sites if s.tls]

    def read(site: DesiredSite) -> dict:
        try:
            return certificates.served(site.public_ip, site.fqdn, trust)
        except HostError as err:
            return {"error": str(err)}

    if not tls_sites:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(tls_sites))) as pool:
        return dict(zip([s.fqdn for s in tls_sites], pool.map(read, tls_sites)))


def certificate_figures(served: dict) -> dict:
    """What the report shows of each served certificate: who issued it and when it ends."""
    figures = {}
    for fqdn, seen in sorted(served.items()):
        if seen.get("error"):
            figures[fqdn] = {"error": seen["error"]}
        else:
            figures[fqdn] = {k: seen.get(k) for k in ("issuer", "issuer_org", "names", "not_after", "days_left",
                                                        "trusted")}
    return figures


def recorded(work: Hosting, site: str | None = None) -> tuple[list[DesiredSite], dict[str, SiteRow]]:
    """The audited sites (provisioned or suspended), as they were placed, with their rows."""
    with work.store.session() as session:
        query = select(SiteRow).where(SiteRow.state.in_(AUDITED_STATES))
        if site is not None:
            query = query.where(SiteRow.fqdn == site)
        rows = {r.fqdn: r for r in session.scalars(query.order_by(SiteRow.fqdn))}
    if site is not None and not rows:
        raise NotFound(f"no provisioned or suspended site {site!r} in the records")
    sites = work.recorded_sites(list(rows)) if rows else []
    sites = [dataclasses.replace(s, suspended=True) if rows[s.fqdn].state == "suspended" else s for s in sites]
    return sites, rows


def _explained(work: Hosting) -> dict[str, set]:
    with work.store.session() as session:
        pairs = session.execute(select(SiteRow.zone, SiteRow.fqdn).where(SiteRow.state != "removed")).all()
    explained: dict[str, set] = {}
    for zone, fqdn in pairs:
        explained.setdefault(zone, set()).add(fqdn)
    return explained


def audit(config, store, site: str | None = None, work: Hosting | None = None) -> Report:
    """Every recorded site (or one) against the live hosts. Records an audit_run event."""
    work = work or Hosting(config, store)
    return _audit(work, site)[0]


def _audit(work: Hosting, site: str | None):
    sites, rows = recorded(work, site)
    zones = sorted({s.zone for s in sites} if site else set(work.config.zones) | {s.zone for s in sites})
    trust = work.ca_file()
    # The hosts, the API, the name servers and the sites from outside are read at once:
    # each read waits on the network, none needs another's answer.
    read = parallel.together(
        web=lambda: web_target.read(work.inventory, sites), db=lambda: db_target.read(work.inventory, sites),
        dns=lambda: work.dns.read(zones) if zones else {},
        ns=lambda: ns_answers(work.inventory, sites) if sites else {},
        served=lambda: served_certificates(sites, trust))
    live = Live(web=read["web"], db=read["db"], dns=read["dns"])
    observed = Observed(live=live, ns=read["ns"], nameservers=[h.name for h in work.inventory.group("nameservers")],
                        served=read["served"], trust=trust)
    findings = compare(sites, {f: r.config for f, r in rows.items()}, observed, zones,
                       explained=_explained(work), extras=site is None,
                       unmanaged=work.config.unmanaged_by_zone())
    findings = sorted(findings + backup_findings(work, rows), key=sort_key)
    report = Report(findings=findings, sites=[s.fqdn for s in sites], zones=zones,
                    certificates=certificate_figures(observed.served))
    _record_run(work.store, report, site)
    return report, sites, rows, live


def backup_findings(work: Hosting, rows: dict[str, SiteRow]) -> list[Finding]:
    """backup-stale and backup-unverified, from the backup records (provisioner.backup.status)."""
    from provisioner.backup import status

    return [Finding("high" if kind == "backup-stale" else "medium", kind, fqdn, "backup", "backup", "backups",
                    expected, found, fix)
            for fqdn, kind, expected, found, fix in status.findings(work.store, work.config, list(rows.values()))]


def _record_run(store, report: Report, site: str | None) -> None:
    with store.session() as session:
        add_event(session, None, "audit_run", sites=len(report.sites), zones=len(report.zones),
                  findings=len(report.findings), counts=report.counts(), only=site)


# -- the fix ---------------------------------------------------------------------


def fix_plan(work: Hosting, sites: list[DesiredSite], live: Live, rows: dict[str, SiteRow],
             findings: list[Finding]) -> tuple[Plan, dict[str, str]]:
    """The hosting plan that restores the drifted sites; sites it may not touch, with the reason."""
    # Backup findings are put right by `provision backup`, not by a hosting plan.
    drifted = {f.site for f in findings if f.site is not None and f.target != "backup"} | \
        _default_fix_sites(sites, live.web)
    changes, fixed, refused = [], [], {}
    for site in sites:
        if site.fqdn not in drifted:
            continue
        if rows[site.fqdn].state != "provisioned":
            refused[site.fqdn] = f"the site is {rows[site.fqdn].state}: fix it after it is back in service"
            continue
        if site.adopted is not None:
            refused[site.fqdn] = ("an adopted site's files are the office's: the toolkit does not rewrite them; "
                                  f"plan the move to its own layout with provision import --site {site.fqdn} "
                                  "--normalize")
            continue
        try:
            plan = work.compute_plan([site], live)
        except Conflict as err:
            refused[site.fqdn] = str(err)
            continue
        changes += plan.changes
        fixed.append(site.fqdn)
    return Plan(changes=changes, sites=fixed), refused


def renewal_plan(work: Hosting, site: str | None, findings: list[Finding], rows: dict[str, SiteRow]):
    """The certificate renewals that put the tls-expired/-expiring/-name/-issuer findings right.

    Forced for those sites whatever their dates; `within=0` keeps other sites that merely come
    due soon out of the audit's fix (the daily `tls renew` takes them). Only provisioned sites,
    like the rest of the fix. (None, []) when no finding asks for a renewal.
    """
    # An adopted site's certificate is the office's: the audit reports it, the toolkit does not renew it.
    forced = sorted({f.site for f in findings if f.kind in RENEWED_KINDS and f.site is not None
                     and rows[f.site].state == "provisioned" and not adopted.is_adopted(rows[f.site].config)})
    if not forced:
        return None, []
    planned = tls_renewal.renew(work.config, work.store, site=site, within=0, force_sites=forced, apply=False)
    return planned.plan.plan, forced  # the result's RenewalPlan, as a Plan of changes


def fix_checksum(plan: Plan, renewals: Plan | None) -> str:
    """One checksum for the whole fix: the hosting plan's alone when nothing is renewed."""
    if renewals is None or (renewals.empty and not renewals.notes):
        return plan.checksum
    return sha256(f"hosting {plan.checksum}\nrenewals {renewals.checksum}\n")


def _render_fix(plan: Plan, renewals: Plan | None, checksum: str) -> str:
    if renewals is None or (renewals.empty and not renewals.notes):
        return plan.render()
    out = plan.render() if not plan.empty else ""
    out += "TLS certificates the fix renews:\n"
    for c in renewals.changes:
        out += f"  {c.action:<6} {c.target:<3} {c.host:<20} {c.kind}: {c.site} (renew: {c.detail['reason']})\n"
    for fqdn, note in sorted(renewals.notes.items()):
        out += f"  {fqdn}: not renewed by this fix: {note}\n"
    return out + f"checksum {checksum} (the hosting changes and the renewals together)\n"


def audit_fix(config, store, site: str | None = None, apply: bool = False, checksum: str | None = None,
              work: Hosting | None = None) -> Report:
    """The audit, the plan that restores what drifted and renews the certificates found wrong, and
    with apply: that plan applied (hosting changes first, then the renewals) and a second audit."""
    work = work or Hosting(config, store)
    report, sites, rows, live = _audit(work, site)
    sites_by_name = {s.fqdn: s for s in sites}
    plan, refused = fix_plan(work, sites, live, rows, report.findings)
    renewals, forced = renewal_plan(work, site, report.findings, rows)
    renewing = {c.site for c in renewals.changes} if renewals is not None else set()
    combined = fix_checksum(plan, renewals)
    restoring = {(c.host, c.name) for c in plan.changes if c.kind == "default vhost"}

    def by_hand(f: Finding) -> bool:
        if f.kind in RENEWED_KINDS:
            return f.site not in renewing
        if f.site is None:
            return not (f.kind == "default-vhost-missing" and (f.host, f.what.rsplit(" ", 1)[-1]) in restoring)
        return f.site in refused or not plan.for_site(f.site)

    manual = [f.as_dict() for f in report.findings if by_hand(f)]
    merged = plan.as_dict()
    if renewals is not None:
        merged.update(sites=sorted(set(plan.sites) | renewing), checksum=combined,
                      changes=merged["changes"] + [c.as_dict() for c in renewals.changes])
    report.fix = {"plan": merged, "rendered": _render_fix(plan, renewals, combined), "refused": refused,
                  "by_hand": manual, "applied": False}
    if renewals is not None:
        report.fix["hosting"] = plan.as_dict()
        report.fix["renewals"] = renewals.as_dict()
    if not apply or (plan.empty and not renewing):
        return report
    if checksum and checksum != combined:
        raise StateError(f"the fix plan changed since it was reviewed (checksum {combined}, "
                         f"expected {checksum}); review it again")
    touched = (set() if plan.empty else set(plan.sites)) | renewing
    with store.session() as session:
        for fqdn in sorted(touched):
            add_event(session, sites_by_name[fqdn].request_id, "audit_fix", fqdn=fqdn, checksum=combined,
                      changes=len(plan.for_site(fqdn)), renewal=fqdn in renewing,
                      findings=sorted({f.kind for f in report.findings if f.site == fqdn}))
    if not plan.empty:
        request_ids = [sites_by_name[f].request_id for f in plan.sites]
        result = work.apply(request_ids, checksum=plan.checksum)
        report.fix["verified"] = {s["fqdn"]: sorted(s.get("verified", {})) for s in result.sites}
    report.fix["applied"] = True
    if renewing:
        try:
            # Bound to the renewals shown: a hosting change above that altered them stops them here.
            done = tls_renewal.renew(work.config, work.store, site=site, within=0, force_sites=forced, apply=True,
                                     checksum=renewals.checksum)
        except StateError as err:
            report.fix["renewed"], report.fix["not_renewed"] = [], {f: str(err) for f in sorted(renewing)}
        else:
            report.fix["renewed"] = done.renewed
            report.fix["not_renewed"] = {**done.failed, **done.busy}
    after = _audit(work, site)[0]
    report.after = after.findings
    return report
