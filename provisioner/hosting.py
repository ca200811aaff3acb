"""`provision hosting`: approved requests become live, verified sites.

plan() reads the live state (one SSH session per host, one API call per
zone, all at once) and lists every change. apply() takes the locks,
recomputes the plan (refusing if it differs from a reviewed checksum), then
runs it as a saga (provisioner/saga.py):

    ip -> db + web -> dns         (db and web side by side; DNS last: a name never points at a site not ready)

with an intent event before each step and a done event after it. A site whose
step fails is compensated alone and recorded failed with the reason; the
others go on. After a crash, the next apply reads the live state and
converges: every role is idempotent and passwords are stored before the step
that uses them.

Where a site goes is provisioner/placement.py. Only when every outside check
passes (provisioner/verify.py, all the sites of a batch at once) is the site
marked provisioned and its configuration record written.
"""

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from provisioner import adopted, certificates, credentials, faults, ipam, locks, parallel, verify
from provisioner.errors import Conflict, HostError, NotFound, ProvisionerError, StateError
from provisioner.inventory import Host, load_inventory
from provisioner.placement import Placement
from provisioner.plan import REMOVAL_ORDER, Plan
from provisioner.progress import Progress
from provisioner.request import validate
from provisioner.saga import STEPS, Saga, affects_every_site, as_error, reraise  # noqa: F401 - used from here too
from provisioner.secretbox import SecretBox, new_password
from provisioner.site import DesiredSite, from_request
from provisioner.sop.binding import check_hosting_approval, close_request
from provisioner.sop.sla import utcnow
from provisioner.store.events import add_event
from provisioner.store.models import RequestRow, SiteRow
from provisioner.targets import db as db_target
from provisioner.targets import ip as ip_target
from provisioner.targets import probe
from provisioner.targets import adopted as adopted_target
from provisioner.targets import web as web_target
from provisioner.targets.dns import DnsTarget


@dataclass
class Live:
    web: dict
    db: dict
    dns: dict


@dataclass
class ApplyResult:
    plan: Plan
    sites: list[dict] = field(default_factory=list)
    changed: bool = False
    sheets: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"changed": self.changed, "plan": self.plan.as_dict(), "sites": self.sites,
                "credentials_sheets": self.sheets}


class Hosting:
    def __init__(self, config, store, source: str = "cli", progress: Progress | None = None):
        self.config = config
        self.store = store
        self.source = source
        self.progress = progress or Progress()
        self.inventory_path = Path(config.hosting.inventory)
        self.inventory = load_inventory(self.inventory_path)
        self.saga = Saga(self)
        # The placement of the batch being planned or applied (None between them).
        self._placement: Placement | None = None
        self._dns = None
        self._box = None
        self._certs = None
        self.issued: dict[str, certificates.Bundle] = {}
        self._over_http: list[DesiredSite] = []  # sites whose certificate comes after their DNS step

    # -- collaborators, made when first needed ---------------------------------

    @property
    def dns(self) -> DnsTarget:
        if self._dns is None:
            self._dns = DnsTarget(self.inventory, ttl=self.config.hosting.dns_ttl,
                                  timeout=self.config.hosting.dns_api_timeout)
        return self._dns

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            self._box = SecretBox(self.config.key_file())
        return self._box

    @property
    def certs(self) -> certificates.Certificates:
        if self._certs is None:
            self._certs = certificates.Certificates(self.config, self.store, self.inventory, self.dns, self.box,
                                                    source=self.source)
        return self._certs

    def ca_file(self) -> str | None:
        """The CA file sites' certificates are checked against (None: the system's)."""
        trust = self.config.tls_trust()
        return str(trust) if trust else None

    # -- which requests, where ---------------------------------------------------

    def load_requests(self, request_ids: list[str], provisioning: bool = True):
        """The validated requests; for provisioning, only those their own hosting SOP approved.

        `provisioning=False` reads recorded sites' requests (removal, audit), whose site exists.
        """
        requests = []
        with self.store.session() as session:
            found = _rows_by_key(session, RequestRow.id, request_ids)
            for request_id in request_ids:
                row = found.get(request_id)
                if row is None:
                    raise NotFound(f"no request {request_id!r}; submit it first")
                if provisioning:
                    check_hosting_approval(session, self.config, row)
                elif row.decision != "approve":
                    raise StateError(f"{request_id}: the SOP records no approval "
                                     f"(state {row.state}); nothing will be touched")
                # A recorded site's request was accepted under the rules of its day: today's
                # submission-only rules must not keep it from being removed, rotated or audited.
                requests.append(validate(row.content, self.config, source=f"stored {request_id}",
                                         stored=not provisioning, registered=True))
        if len({r.site.fqdn for r in requests}) != len(requests):
            raise StateError("two requests name the same site")
        return requests

    def site_row(self, fqdn: str) -> SiteRow | None:
        """The configuration record of a site (None: never recorded)."""
        with self.store.session() as session:
            return session.get(SiteRow, fqdn)

    def place(self, request) -> tuple[Host, Host | None]:
        """(web host, database host) of a request's site: provisioner/placement.py decides."""
        return (self._placement or Placement(self.store, self.inventory)).hosts(request)

    @contextmanager
    def batch(self):
        """One placement for everything placed inside: a batch counts the sites it places itself,
        and asking again gives the same hosts. Nested uses share the outer one."""
        if self._placement is not None:
            yield self._placement
            return
        self._placement = Placement(self.store, self.inventory)
        try:
            yield self._placement
        finally:
            self._placement = None

    def _address(self, request, web: Host, allocate: bool, live_addresses: dict[str, set[str]]) -> str:
        if not request.site.dedicated_ip:
            return ipam.shared_address(web)
        existing = ipam.allocated(self.store, request.site.fqdn)
        if existing and not allocate:
            return existing.address
        # Addresses already up on the host but not in the store are someone else's.
        if existing:
            in_use = set()
        else:
            # Read once per web host for a whole batch of requests.
            if web.name not in live_addresses:
                live_addresses[web.name] = set(probe.probe_web(web, [])["addresses"])
            in_use = live_addresses[web.name]
        if allocate:
            return ipam.allocate(self.store, self.inventory, web, request.site.fqdn, request.id, self.source,
                                 in_use=in_use)
        return ipam.next_free(self.store, self.inventory, web, in_use)

    def desired(self, requests, allocate: bool = False) -> list[DesiredSite]:
        sites, live_addresses = [], {}
        with self.batch():
            for request in requests:
                web, db = self.place(request)
                sites.append(from_request(request, web, db, self._address(request, web, allocate, live_addresses),
                                          request.site.dedicated_ip))
        return sites

    # -- plan --------------------------------------------------------------------

    def read_live(self, sites: list[DesiredSite]) -> Live:
        """The web hosts, database hosts and zones these sites touch, read at once."""
        dns = self.dns  # made here, not in a reading thread
        return Live(**parallel.together(web=lambda: web_target.read(self.inventory, sites),
                                        db=lambda: db_target.read(self.inventory, sites),
                                        dns=lambda: dns.read({s.zone for s in sites})))

    def compute_plan(self, sites: list[DesiredSite], live: Live) -> Plan:
        for site in sites:
            self._refuse_foreign(site, live)
        changes = (ip_target.plan(sites, live.web) + db_target.plan(sites, live.db)
                   + web_target.plan(sites, live.web) + self.dns.plan(sites, live.dns))
        return Plan(changes=changes, sites=[s.fqdn for s in sites])

    def _refuse_foreign(self, site: DesiredSite, live: Live) -> None:
        """A site the toolkit never recorded must find nothing of its names on the hosts."""
        if self.site_row(site.fqdn) is not None:
            return
        found = []
        web = live.web[site.web_host]["sites"][site.fqdn]
        if web["user"] is not None:
            found.append(f"system user {site.names.user} on {site.web_host}")
        if web["vhost_sha256"] is not None:
            found.append(f"vhost {site.fqdn} on {site.web_host}")
        if web["pool_sha256"] is not None:
            found.append(f"PHP-FPM pool {site.names.pool} on {site.web_host}")
        if site.database:
            state = live.db[site.db_host]["databases"][site.names.db_name]
            if state["exists"]:
                found.append(f"database {site.names.db_name} on {site.db_host}")
            if state["user_hosts"]:
                found.append(f"database user {site.names.db_user} on {site.db_host}")
        if found:
            raise Conflict(f"{site.fqdn}: found {', '.join(found)}, not created by the toolkit; nothing touched")

    def refusals(self, sites: list[DesiredSite], live: Live) -> dict[str, Conflict]:
        """The sites the plan must not touch (names found that the toolkit did not create), by site."""
        refused = {}
        for site in sites:
            try:
                self._refuse_foreign(site, live)
                self.dns.plan([site], live.dns)  # a record there that is not ours
            except Conflict as err:
                refused[site.fqdn] = err
        return refused

    def _gate(self, sites: list[DesiredSite], live: Live, batch: bool, held: dict | None = None):
        """The plan and what it leaves out: (plan, sites to apply, {fqdn: why it waits}, {fqdn: refusal}).

        In a batch, a site refused for itself is left out, named in the plan's notes, and the
        others go on; a single site's refusal is raised (compute_plan), as it always was.
        `held`: sites left out before (suspended), named in the notes too.
        """
        refused = self.refusals(sites, live) if batch else {}
        kept = [s for s in sites if s.fqdn not in refused]
        plan, kept, waiting = self._tls_gate(kept, live, self.compute_plan(kept, live) if kept else Plan(sites=[]))
        left_out = (held or {}) | refused
        if left_out:
            plan.sites = sorted(set(plan.sites) | {s.fqdn for s in sites} | set(left_out))
            plan.notes = plan.notes | {fqdn: f"refused, nothing of it touched: {err}" for fqdn, err in left_out.items()}
        return plan, kept, waiting, refused

    def plan(self, request_ids: list[str]) -> tuple[Plan, list[DesiredSite]]:
        with self.batch():
            return self._plan(request_ids)

    def _plan(self, request_ids: list[str]) -> tuple[Plan, list[DesiredSite]]:
        requests = self.load_requests(request_ids)
        batch = len(requests) > 1
        # As apply() will: in a batch a suspended site is left out (alone, apply refuses it).
        held = self._suspended(requests) if batch else {}
        sites = self.desired([r for r in requests if r.site.fqdn not in held], allocate=False)
        live = self.read_live(sites)
        plan, sites, _waiting, _refused = self._gate(sites, live, batch, held)
        return plan, sites

    def _tls_gate(self, sites: list[DesiredSite], live: Live, plan: Plan):
        """Hold back the sites whose new certificate the CA's weekly limit refuses.

        A site whose request allows it (site.tls_optional) goes live over HTTP and gets its
        certificate on a later run; any other waits, untouched, until the next slot.
        Returns (plan, sites to apply, {fqdn: why it waits}).
        """
        needing = [c.site for c in plan.changes if c.kind == "TLS certificate"]
        new = [f for f in needing if self.certs.reusable(f) is None]
        refused = {f: slot for f, slot in self.certs.slots(new).items() if slot is not None}
        if not refused:
            return plan, sites, {}
        notes, waiting, kept = {}, {}, []
        for site in sites:
            slot = refused.get(site.fqdn)
            if slot is None:
                kept.append(site)
                continue
            why = (f"the CA's limit for {slot.registered_domain} is reached ({slot.used} of {slot.limit} "
                   f"certificates in 7 days); the next slot opens at {slot.next_slot:%Y-%m-%d %H:%M} UTC")
            if site.tls_optional:
                kept.append(dataclasses.replace(site, tls=False))
                notes[site.fqdn] = f"goes live over HTTP for now: {why} (the request allows it)"
            else:
                waiting[site.fqdn] = f"waits for a certificate: {why}"
        plan = self.compute_plan(kept, live) if kept else Plan(sites=[])
        plan.sites = [s.fqdn for s in sites]
        plan.notes = notes | waiting
        return plan, kept, waiting

    # -- apply -------------------------------------------------------------------

    def apply(self, request_ids: list[str], checksum: str | None = None) -> ApplyResult:
        with self.batch():
            return self._apply_batch(request_ids, checksum)

    def _apply_batch(self, request_ids: list[str], checksum: str | None) -> ApplyResult:
        requests = self.load_requests(request_ids)
        batch = len(requests) > 1
        refused = self._suspended(requests)
        if refused and not batch:
            raise next(iter(refused.values()))
        owners = {r.site.fqdn: r.id for r in requests}
        requests = [r for r in requests if r.site.fqdn not in refused]
        self.progress.begin(len(owners), "hosting")
        try:
            return self._apply(requests, owners, refused, batch, checksum)
        finally:
            self.progress.end()

    def _suspended(self, requests) -> dict[str, ProvisionerError]:
        """The requests whose site is suspended, with the refusal: nothing of them is touched.

        Alone it is the apply's error; in a batch it fails alone and the others go on.
        """
        refused = {}
        for r in requests:
            row = self.site_row(r.site.fqdn)
            if row is not None and row.state == "suspended":
                refused[r.site.fqdn] = StateError(
                    f"{r.site.fqdn} is suspended ({row.reason}); `provision site unsuspend` it first")
        return refused

    def _apply(self, requests, owners: dict[str, str], refused: dict[str, ProvisionerError], batch: bool,
               checksum: str | None) -> ApplyResult:
        names = [f"site:{r.site.fqdn}" for r in requests]
        with locks.held(self.store, names):
            # Every site placed in the requests' order, as plan() places them (the same hosts).
            placed = {r.site.fqdn: self.place(r) for r in requests}
            webs = {placed[r.site.fqdn][0].name for r in requests if r.site.dedicated_ip}
            # Addresses this apply reserves; given back if it is refused before it starts.
            fresh = [r for r in requests if r.site.dedicated_ip and ipam.allocated(self.store, r.site.fqdn) is None]
            waiting: dict[str, str] = {}
            released: set[str] = set()
            try:
                # A pool is held only while addresses are picked: wait for it, then see what is left.
                with locks.held(self.store, [f"ippool:{w}" for w in webs], wait=60):
                    sites = self.desired(requests, allocate=True)
                live = self.read_live(sites)
                plan, sites, waiting, conflicts = self._gate(sites, live, batch, refused)
                if checksum and plan.checksum != checksum:
                    raise StateError(f"the plan changed since it was reviewed (checksum {plan.checksum}, "
                                     f"expected {checksum}); review it again")
                for r in fresh:
                    if r.site.fqdn in waiting or r.site.fqdn in conflicts:  # nothing of it is built
                        ipam.release(self.store, r.site.fqdn, r.id, self.source)
                        released.add(r.site.fqdn)
                refused |= conflicts
                self._record_refused(owners, refused)
                self._record_waiting(requests, waiting)
                previous = self.saga.record_start(sites, plan)
            except BaseException:
                for r in fresh:
                    if r.site.fqdn not in released:
                        ipam.release(self.store, r.site.fqdn, r.id, self.source)
                raise
            for fqdn, error in refused.items():
                self.progress.done(fqdn, False, str(error))
            for fqdn, why in waiting.items():
                self.progress.done(fqdn, False, why)
            result = ApplyResult(plan=plan, changed=not plan.empty)
            failures: dict[str, ProvisionerError] = {}
            self.issued = {}  # TLS material issued in this apply, reused when a step runs again
            self._over_http = []
            cause = "the apply ended before this site was finished"
            try:
                passwords = self.ensure_passwords(sites)
                # Certificates first: an order the CA refuses stops its site before anything is built.
                failures = self.obtain_certificates(sites, plan, passwords, previous)
                building = [s for s in sites if s.fqdn not in failures]
                if not plan.empty and building:
                    failures |= self.saga.run(building, plan, passwords, previous, self.progress)
                failures |= self.certificates_over_http(
                    [s for s in self._over_http if s.fqdn not in failures], plan, passwords, previous)
                for fqdn, error in failures.items():
                    self.progress.done(fqdn, False, str(error))
                verified = self.verify_sites([s for s in sites if s.fqdn not in failures], plan, passwords)
                first_live = []
                for site in sites:
                    outcome = verified.get(site.fqdn)
                    if outcome is None:
                        continue
                    if isinstance(outcome, ProvisionerError):
                        failures[site.fqdn] = outcome
                        continue
                    record, first_time = outcome
                    result.sites.append(record)
                    if first_time:
                        first_live.append(site)
                # The one time the passwords are shown: when the site first goes live.
                result.sheets |= {fqdn: str(path) for fqdn, path in
                                  self.sheets([(s, passwords[s.fqdn]) for s in first_live]).items()}
            except BaseException as err:
                cause = str(err) if isinstance(err, ProvisionerError) else f"{type(err).__name__}: {err}".rstrip(": ")
                raise
            finally:
                # Whatever stopped the apply, no site stays in `provisioning`.
                self.saga.settle(sites, previous, cause)
            if waiting:
                failures |= {fqdn: StateError(f"{fqdn} {why}") for fqdn, why in waiting.items()}
            failures = refused | failures
            if failures:
                raise self._failure(len(sites) + len(waiting) + len(refused), failures, result)
            return result

    def _record_refused(self, owners: dict[str, str], refused: dict[str, ProvisionerError]) -> None:
        """A site of a batch refused before anything was touched: an event on its request.

        Its record is left as it was (a suspended site stays suspended); none is made for a
        name found on the hosts, since a record would let a later apply take that as ours.
        """
        if not refused:
            return
        with self.store.session() as session:
            for fqdn, error in refused.items():
                add_event(session, owners[fqdn], "apply_refused", source=self.source, fqdn=fqdn, error=str(error))

    @staticmethod
    def _failure(count: int, failures: dict, result: ApplyResult) -> ProvisionerError:
        """The error of an apply where some sites failed, naming each and what did go live."""
        if len(failures) == 1 and not result.sites:
            return next(iter(failures.values()))
        # Most errors name their site already: say it once.
        failed = "; ".join(str(err) if str(err).startswith(f"{fqdn}:") or str(err).startswith(f"{fqdn} ")
                           else f"{fqdn}: {err}" for fqdn, err in failures.items())
        live = ", ".join(f"{r['fqdn']}" + (f" (credentials sheet {result.sheets[r['fqdn']]})"
                                           if r["fqdn"] in result.sheets else "") for r in result.sites)
        return HostError(f"{len(failures)} of {count} sites failed: {failed}"
                         + (f"; provisioned: {live}" if live else ""))

    def _record_waiting(self, requests, waiting: dict[str, str]) -> None:
        """Sites the CA's limit holds back: a new one is recorded `waiting` (nothing built), a
        live one keeps its state; each gets an event saying when the next slot opens."""
        now = utcnow()
        with self.store.session() as session:
            for request in requests:
                fqdn = request.site.fqdn
                if fqdn not in waiting:
                    continue
                row = session.get(SiteRow, fqdn)
                if row is None or row.state in ("removed", "failed", "waiting"):
                    web, db = self.place(request)
                    if row is not None:
                        session.delete(row)
                        session.flush()
                    session.add(SiteRow(
                        fqdn=fqdn, request_id=request.id, office=request.office, zone=request.site.zone,
                        label=request.site.subdomain, state="waiting", web_host=web.name,
                        db_host=db.name if db else None, public_ip=None, dedicated_ip=request.site.dedicated_ip,
                        config={}, plan_checksum=None, created_at=now, provisioned_at=None, updated_at=now,
                        reason=waiting[fqdn]))
                add_event(session, request.id, "tls_issuance_waiting", source=self.source, fqdn=fqdn,
                          reason=waiting[fqdn])

    def obtain_certificates(self, sites: list[DesiredSite], plan: Plan, passwords: dict,
                             previous: dict) -> dict[str, ProvisionerError]:
        """The certificate of every site the plan installs one for: the recorded one while it is
        good, else a new one from the CA (all orders together). A site whose certificate
        cannot be had fails here, before any of it is built. Returns the errors by site."""
        needing = [s for s in sites if any(c.kind == "TLS certificate" for c in plan.for_site(s.fqdn))]
        new = []
        for site in needing:
            bundle = self.issued.get(site.fqdn) or self.certs.reusable(site.fqdn)
            if bundle is not None:
                self.issued[site.fqdn] = bundle
            elif self.certs.over_http(site):
                # HTTP-01 needs the site answering on its name: it starts with a stand-in
                # certificate and gets the CA's once its DNS step is done (certificates_over_http).
                self.issued[site.fqdn] = certificates.bootstrap(site.fqdn)
                self._over_http.append(site)
            else:
                new.append(site)
        if not new:
            return {}
        self.progress.step([s.fqdn for s in new], "tls")
        self.saga.event(new, "saga_intent", "tls", checksum=plan.checksum)
        bundles, errors = self.certs.obtain(new)
        for fqdn, bundle in list(bundles.items()):
            problem = certificates.chain_problem(bundle, fqdn, self.ca_file())
            if problem:  # the site would fail its check from outside: stop it before it is built
                site = next(s for s in new if s.fqdn == fqdn)
                self.certs.discard(fqdn, bundle.serial, site.request_id, problem)
                errors[fqdn] = HostError(f"{fqdn}: the CA's certificate {problem}")
                del bundles[fqdn]
        self.issued |= bundles
        for site in new:
            if site.fqdn in bundles:
                self.saga.event([site], "saga_done", "tls", serial=bundles[site.fqdn].serial)
                continue
            error = as_error("tls", errors[site.fqdn])
            errors[site.fqdn] = error
            self.saga.event([site], "saga_failed", "tls", error=str(error))
            self.saga.undo(site, [], "tls", error, plan, passwords, previous[site.fqdn])
        return errors

    def certificates_over_http(self, sites: list[DesiredSite], plan: Plan, passwords: dict,
                                previous: dict) -> dict[str, ProvisionerError]:
        """The CA's certificates for sites validated over HTTP-01, now that they answer on their
        names; installed in place of their stand-ins (one web run). A site whose certificate
        cannot be had is undone like a failed step. Returns the errors by site."""
        if not sites:
            return {}
        self.progress.step([s.fqdn for s in sites], "tls")
        self.saga.event(sites, "saga_intent", "tls", checksum=plan.checksum, challenge="http-01")
        bundles, errors = self.certs.obtain(sites)
        got = [s for s in sites if s.fqdn in bundles]
        if got:
            try:
                web_target.apply(self.inventory_path, got, {"sftp_password_hashes": {},
                                                            "tls": {s.fqdn: bundles[s.fqdn].secrets() for s in got}},
                                 artifact_dir=self.config.artifacts_dir(), timeout=self.config.hosting.step_timeout)
            except Exception as err:  # noqa: BLE001 - every site of the run failed the same way
                for site in got:
                    self.certs.discard(site.fqdn, bundles[site.fqdn].serial, site.request_id, str(err))
                    errors[site.fqdn] = err
        for site in sites:
            if site.fqdn not in errors:
                self.issued[site.fqdn] = bundles[site.fqdn]
                self.saga.event([site], "saga_done", "tls", serial=bundles[site.fqdn].serial)
                continue
            error = errors[site.fqdn] = as_error("tls", errors[site.fqdn])
            self.saga.event([site], "saga_failed", "tls", error=str(error))
            self.saga.undo(site, list(STEPS), "tls", error, plan, passwords, previous[site.fqdn])
        return errors

    def ensure_passwords(self, sites: list[DesiredSite]) -> dict[str, dict]:
        passwords = {}
        for site in sites:
            users = {"sftp": site.names.user}
            if site.database:
                users["db"] = site.names.db_user
            passwords[site.fqdn], _ = credentials.ensure(self.store, self.box, site.fqdn, site.request_id,
                                                         users, source=self.source)
        return passwords

    def step_secrets(self, sites: list[DesiredSite], plan: Plan, passwords: dict, step: str) -> dict:
        """Only the secrets a step needs: passwords for accounts it creates, TLS keys it installs."""
        secrets = {}
        if step == "db":
            creating = {c.site for c in plan.for_target("db") if c.kind == "database user" and c.action == "Create"}
            secrets["db_passwords"] = {s.names.db_name: passwords[s.fqdn]["db"] for s in sites if s.fqdn in creating}
        if step == "web":
            creating = {c.site for c in plan.for_target("web") if c.kind in ("system user", "SFTP password")}
            secrets["sftp_password_hashes"] = {
                s.fqdn: credentials.sftp_hash(passwords[s.fqdn]["sftp"]) for s in sites if s.fqdn in creating}
            # Obtained before the saga (obtain_certificates); a site without one never gets here.
            needs_cert = {c.site for c in plan.for_target("web") if c.kind == "TLS certificate"}
            secrets["tls"] = {s.fqdn: self.issued[s.fqdn].secrets() for s in sites if s.fqdn in needs_cert}
        return secrets

    def run_step(self, step: str, sites: list[DesiredSite], plan: Plan, passwords: dict,
                 state: str = "present") -> dict[str, str]:
        """Run one step for these sites; returns warnings by zone (a NOTIFY that failed)."""
        artifacts, timeout = self.config.artifacts_dir(), self.config.hosting.step_timeout
        taken = [s for s in sites if s.adopted is not None]
        if taken and step in ("web", "db"):
            # An adopted site is taken apart as it was found (targets/adopted.py), never by the roles
            # that build the toolkit's own layout (it is never built: only a removal gets here).
            if state != "absent":
                raise StateError(f"{', '.join(s.fqdn for s in taken)}: an adopted site is not built by hosting")
            adopted_target.apply(self.inventory_path, taken, state="absent", step=step, plan=plan,
                                 artifact_dir=artifacts, timeout=timeout)
            sites = [s for s in sites if s.adopted is None]
            if not sites:
                return {}
        if step == "ip":
            ip_target.apply(self.inventory_path, sites, state=state, artifact_dir=artifacts, timeout=timeout)
        elif step == "db":
            secrets = self.step_secrets(sites, plan, passwords, "db") if state == "present" else {}
            db_target.apply(self.inventory_path, sites, secrets, state=state, artifact_dir=artifacts, timeout=timeout)
        elif step == "web":
            secrets = self.step_secrets(sites, plan, passwords, "web") if state == "present" else {}
            web_target.apply(self.inventory_path, sites, secrets, state=state, artifact_dir=artifacts,
                             timeout=timeout)
        elif state == "present":
            return self.dns.apply(sites, {s.fqdn: s.request_id for s in sites})
        else:
            return self.dns.remove(sites)
        return {}

    def live_removal(self, sites: list[DesiredSite]) -> Plan | ProvisionerError:
        """What of these sites is on the hosts (a removal plan), or the error that prevented reading it."""
        try:
            return self.removal_plan(sites)
        except Exception as err:  # noqa: BLE001 - the undo then goes by what this apply touched
            return as_error("read", err)

    def _served_certificate(self, site: DesiredSite) -> dict:
        """The site's certificate as served, checked: the one this apply installed (once the
        graceful reload serves it), else any trusted one that covers the name."""
        installed = self.issued.get(site.fqdn)
        if installed is not None:
            facts, problem = certificates.served_as_installed(site.public_ip, site.fqdn, self.ca_file(),
                                                              installed.serial)
        else:
            facts = certificates.served(site.public_ip, site.fqdn, self.ca_file())
            problem = None if facts["trusted"] and facts["covers"] else (
                f"not trusted or not covering the name: {facts['trust_error'] or facts['names']}")
        if problem:
            raise verify.VerificationFailed(f"{site.fqdn}: the certificate served: {problem}")
        return facts

    # -- verification: every site of a batch checked from outside at once, then recorded ---------

    def check_from_outside(self, site: DesiredSite, passwords: dict, fresh: bool):
        """The outside checks of one site: (Verification, certificate as served or None).

        Only reads (no store): safe to run for many sites at once. `fresh`: the site never
        went live, so its page must still be our placeholder (after that it is the agency's).
        """
        # The certificate as served from outside: what the letter states and `tls status` compares.
        served = self._served_certificate(site) if site.tls else None
        checks = verify.verify_site(self.inventory, site, passwords, self.ca_file(), placeholder=fresh)
        return checks, served

    def verify_sites(self, sites: list[DesiredSite], plan: Plan,
                     passwords: dict) -> dict[str, tuple[dict, bool] | ProvisionerError]:
        """Check the sites from outside, `hosting.verify_workers` at a time, and record each:
        (record, first time live) or the error by site; one site's failure is its own."""
        if not sites:
            return {}
        self.progress.step([s.fqdn for s in sites], "verify")
        fresh = {s.fqdn: self._fresh(s) for s in sites}
        seen = parallel.settled(lambda s: self.check_from_outside(s, passwords[s.fqdn], fresh[s.fqdn]), sites,
                                workers=self.config.hosting.verify_workers)
        outcomes: dict[str, tuple[dict, bool] | ProvisionerError] = {}
        for site, (checked, err) in zip(sites, seen):
            try:
                outcomes[site.fqdn] = self.record_verification(site, plan, checked, err)
            except Exception as failure:  # noqa: BLE001 - one site's check must not hide the others'
                outcomes[site.fqdn] = as_error("verify", failure)
                self.progress.done(site.fqdn, False, str(outcomes[site.fqdn]))
            else:
                self.progress.done(site.fqdn, True)
        return outcomes

    def verify_and_record(self, site: DesiredSite, plan: Plan, passwords: dict) -> tuple[dict, bool]:
        """One site: check from outside, record it provisioned. Returns (record, first time live)."""
        try:
            checked, err = self.check_from_outside(site, passwords, self._fresh(site)), None
        except Exception as failure:  # noqa: BLE001 - recorded below, whatever it is
            checked, err = None, failure
        return self.record_verification(site, plan, checked, err)

    def _fresh(self, site: DesiredSite) -> bool:
        row = self.site_row(site.fqdn)
        return row is None or row.provisioned_at is None

    def record_verification(self, site: DesiredSite, plan: Plan, checked, err: BaseException | None
                            ) -> tuple[dict, bool]:
        """Record what the outside checks found: provisioned, or attention with the failure (raised).

        `checked`: check_from_outside's result; `err`: what it raised instead.
        """
        if err is not None:
            error = as_error("verify", err)
            with self.store.session() as session:
                row = session.get(SiteRow, site.fqdn)
                row.state, row.reason, row.updated_at = "attention", f"verification failed: {error}", utcnow()
                add_event(session, site.request_id, "verification_failed", source=self.source,
                          fqdn=site.fqdn, error=str(error))
            reraise(error, err)
        checks, served = checked
        now = utcnow()
        config = site.record()
        if not site.tls and site.fqdn in plan.notes:
            # Live over HTTP while the CA's limit holds its certificate back (the audit reports it).
            config["tls_deferred"] = plan.notes[site.fqdn]
        if served is not None:
            checks.ok("certificate", {k: served[k] for k in ("serial", "not_after", "trusted", "covers")})
            config["certificate"] = {k: served[k] for k in ("issuer", "issuer_org", "serial", "names",
                                                            "not_before", "not_after")}
            config["certificate"]["source"] = self.config.hosting.tls_source
            self.certs.activate(site.fqdn, served["serial"], site.request_id)
        record = config | {"verified": checks.checks}
        if checks.warnings:
            # Provisioned: the primary serves the record; a lagging secondary is reported, not undone.
            record["warnings"] = checks.warnings
        with self.store.session() as session:
            row = session.get(SiteRow, site.fqdn)
            was = row.state
            for warning in checks.warnings:
                add_event(session, site.request_id, warning.split(":", 1)[0].replace("-", "_"), source=self.source,
                          fqdn=site.fqdn, warning=warning)
            row.state, row.reason, row.config, row.updated_at = ("provisioned", "; ".join(checks.warnings) or None,
                                                                 config, now)
            row.public_ip, row.web_host, row.db_host = site.public_ip, site.web_host, site.db_host
            first_time = row.provisioned_at is None
            if plan.for_site(site.fqdn) or first_time:
                row.plan_checksum, row.provisioned_at = plan.checksum, now
            add_event(session, site.request_id, "site_provisioned" if was != "provisioned" else "site_verified",
                      source=self.source, fqdn=site.fqdn, record=record, checksum=plan.checksum)
        return record, first_time

    # -- removal -----------------------------------------------------------------

    def recorded_sites(self, fqdns: list[str]) -> list[DesiredSite]:
        """The desired state of recorded sites, as they were placed."""
        with self.store.session() as session:
            found = _rows_by_key(session, SiteRow.fqdn, fqdns)
        rows = []
        for fqdn in fqdns:
            row = found.get(fqdn)
            if row is None:
                raise NotFound(f"no site {fqdn!r} in the records")
            rows.append(row)
        # An adopted site is what its record says was found, with the names found (no request built it).
        built = [r for r in rows if not adopted.is_adopted(r.config)]
        requests = dict(zip([r.fqdn for r in built],
                            self.load_requests([r.request_id for r in built], provisioning=False)))
        sites = [adopted.desired(row, self.inventory) if row.fqdn not in requests else
                 from_request(requests[row.fqdn], self.inventory.host(row.web_host),
                              self.inventory.host(row.db_host) if row.db_host else None,
                              row.public_ip, row.dedicated_ip) for row in rows]
        # A site that went live over HTTP while the CA's limit held its certificate back is
        # served as recorded until a hosting run gives it TLS.
        return [dataclasses.replace(s, tls=False) if (row.config or {}).get("tls") is False and s.tls else s
                for s, row in zip(sites, rows)]

    def removal_plan(self, sites: list[DesiredSite]) -> Plan:
        live = self.read_live(sites)
        from provisioner.targets.dns import removal_changes as dns_removal

        # An adopted site's removal takes what was recorded as found, not the toolkit's paths and names,
        # and keeps (saying why in the notes) what the hosts now show others use.
        built = [s for s in sites if s.adopted is None]
        taken, kept = adopted_target.removal([s for s in sites if s.adopted is not None], live, self.inventory,
                                             self.config)
        changes = (dns_removal(sites, live.dns) + web_target.removal_changes(built, live.web) + taken
                   + db_target.removal_changes(built, live.db) + ip_target.removal_changes(built, live.web))
        # What sits at a built site's home or log directory but is not the site's is left, and said so.
        return Plan(changes=changes, sites=[s.fqdn for s in sites], order=REMOVAL_ORDER,
                    notes=kept | web_target.removal_notes(built, live.web))

    def remove(self, fqdns: list[str], actor: str = "system", **details) -> dict[str, dict]:
        """Take recorded sites down: DNS first, then web, database and the dedicated IP.

        Only what the toolkit recorded is removed; records and history stay, with state removed.
        Each site is read back first (nothing left on the hosts, no A record at any name
        server): only then is its address released and its state removed. Returns that
        read-back by site. `details` (a reason, an archive) go into the site_removed event.
        """
        with locks.held(self.store, [f"site:{f}" for f in fqdns]):
            dropped = self._drop_waiting(fqdns, actor, **details)
            fqdns = [f for f in fqdns if f not in dropped]
            if not fqdns:
                return dropped
            sites = self.recorded_sites(fqdns)
            plan = self.removal_plan(sites)
            for step in REMOVAL_ORDER:
                involved = [s for s in sites if step in plan.targets_of(s.fqdn)]
                if not involved:
                    continue
                self.saga.event(involved, "removal_intent", step)
                try:
                    faults.point("before", f"remove-{step}")
                    self.run_step(step, involved, plan, {}, state="absent")
                except Exception as err:  # noqa: BLE001 - any failure leaves an explicit record
                    error = as_error(step, err)
                    self._removal_stopped(sites, plan, step, error)
                    reraise(error, err)
                self.saga.event(involved, "removal_done", step)
            checks, remaining = self._read_back(sites)
            now = utcnow()
            for site in sites:
                if site.fqdn in remaining:
                    continue
                if site.dedicated_ip:
                    ipam.release(self.store, site.fqdn, site.request_id, self.source)
                with self.store.session() as session:
                    row = session.get(SiteRow, site.fqdn)
                    row.state, row.updated_at = "removed", now
                    close_request(session, site.request_id, now)  # its approval is spent
                    add_event(session, site.request_id, "site_removed", actor=actor, source=self.source,
                              fqdn=site.fqdn, checksum=plan.checksum, **details,
                              **({"note": plan.notes[site.fqdn]} if site.fqdn in plan.notes else {}))
                # The key and certificate files went with the web step; the CA is asked to revoke
                # and the sealed key is dropped. A refused revocation is recorded, not a failed removal.
                problems = self.certs.retire(site.fqdn, site.request_id)
                if problems:
                    checks[site.fqdn]["certificates"] = problems
            if remaining:
                # The address stays allocated: it may still be up, or named by a name server.
                left = [s for s in sites if s.fqdn in remaining]
                self.removal_incomplete(left, "still on the hosts after removal; run it again", remaining)
                raise HostError("; ".join(f"{fqdn}: still on the hosts after removal: {'; '.join(lines)}"
                                          for fqdn, lines in remaining.items()))
            return checks | dropped

    def _drop_waiting(self, fqdns: list[str], actor: str, **details) -> dict[str, dict]:
        """Sites still waiting for a certificate have nothing built: their removal only closes the
        record and the request (and gives back an address still reserved). Returns their read-back."""
        dropped = {}
        for fqdn in fqdns:
            row = self.site_row(fqdn)
            if row is None or row.state != "waiting":
                continue
            if ipam.allocated(self.store, fqdn) is not None:
                ipam.release(self.store, fqdn, row.request_id, self.source)
            dropped[fqdn] = {"hosts": "nothing was built (it was waiting for a certificate)"}
            with self.store.session() as session:
                row = session.get(SiteRow, fqdn)
                row.state, row.updated_at = "removed", utcnow()
                close_request(session, row.request_id, row.updated_at)
                add_event(session, row.request_id, "site_removed", actor=actor, source=self.source, fqdn=fqdn,
                          was="waiting", **details)
        return dropped

    def _read_back(self, sites: list[DesiredSite]) -> tuple[dict[str, dict], dict[str, list[str]]]:
        """After a removal: (what was seen gone, what is still there) by site, from the hosts and name servers."""
        left = self.live_removal(sites)
        checks, remaining = {}, {}
        for site in sites:
            if isinstance(left, Plan):
                lines = [c.line().strip() for c in left.for_site(site.fqdn)]
            else:
                lines = [f"unknown: the hosts could not be read back ({left})"]
            try:
                dns = verify.dns_gone(self.inventory, site)
            except Exception as err:  # noqa: BLE001 - a name server still answering is what is left
                lines.append(str(as_error("read back", err)))
            if lines:
                remaining[site.fqdn] = lines
            else:
                checks[site.fqdn] = {"dns": dns, "hosts": "nothing left"}
        return checks, remaining

    def removal_incomplete(self, sites: list[DesiredSite], reason: str, remaining: dict[str, list[str]],
                           **payload) -> None:
        """Each site in attention after a removal that did not finish, with what is still on the hosts."""
        for site in sites:
            self.saga.set_state(site, "attention", reason, "removal_incomplete",
                            remaining=remaining.get(site.fqdn, []), **payload)

    def _removal_stopped(self, sites: list[DesiredSite], plan: Plan, step: str, error: ProvisionerError) -> None:
        """A removal that failed midway: each site in attention, with what is still on the hosts.

        The dedicated address stays allocated; a rerun plans from the live state and finishes.
        """
        left = self.live_removal(sites)
        if not isinstance(left, Plan):  # the hosts cannot be read: what was planned from this step on
            left = Plan(changes=[c for c in plan.changes
                                 if REMOVAL_ORDER.index(c.target) >= REMOVAL_ORDER.index(step)],
                        sites=plan.sites, order=REMOVAL_ORDER)
        self.removal_incomplete(sites, f"removal stopped at step {step}: {error}; run the removal again to finish",
                                {s.fqdn: [c.line().strip() for c in left.for_site(s.fqdn)] for s in sites},
                                step=step, error=str(error))

    def sheet(self, site: DesiredSite, passwords: dict) -> Path:
        return credentials.write_sheet(self.config.credentials_dir(), site.fqdn, site.request_id,
                                       self._sheet_lines(site, passwords), office=self.config.office(site.office))

    def sheets(self, pairs: list[tuple[DesiredSite, dict]]) -> dict[str, Path]:
        """The credentials sheets of many sites (site, passwords), rendered side by side."""
        if not pairs:
            return {}
        return credentials.write_sheets(self.config.credentials_dir(), [
            (site.fqdn, site.request_id, self._sheet_lines(site, passwords), self.config.office(site.office))
            for site, passwords in pairs])

    def _sheet_lines(self, site: DesiredSite, passwords: dict) -> list[tuple[str, str]]:
        lines = [("Situs", f"https://{site.fqdn}/" if site.tls else f"http://{site.fqdn}/"),
                 ("Host SFTP", site.public_ip), ("Port SFTP", "22"), ("Pengguna SFTP", site.names.user),
                 ("Kata sandi SFTP", passwords["sftp"])]
        if site.database:
            db = self.inventory.host(site.db_host)
            lines += [("Host basis data", f"{db.address}, port 3306"), ("Nama basis data", site.names.db_name),
                      ("Pengguna basis data", site.names.db_user), ("Kata sandi basis data", passwords["db"])]
        return lines


def _rows_by_key(session, key, values: list, chunk: int = 500) -> dict:
    """{value: row} of the rows whose primary `key` column is among `values`: one query per
    `chunk` values (small enough for one IN (...) on every database the store runs on), not
    one per row."""
    wanted = list(dict.fromkeys(values))
    found = {}
    for start in range(0, len(wanted), chunk):
        rows = session.scalars(select(key.class_).where(key.in_(wanted[start:start + chunk])))
        found |= {getattr(row, key.key): row for row in rows}
    return found


def provision_site_action(ctx) -> dict:
    """The SOP action bound to "Pembuatan dan konfigurasi server" (the approval hook)."""
    from provisioner.sop.hooks import action_store

    with action_store(ctx) as store:
        result = Hosting(ctx.config, store, source=ctx.source).apply(
            [ctx.request.id], checksum=ctx.options.get("checksum"))
    if "results" in ctx.options:
        ctx.options["results"].append(result)  # the CLI prints the full result
    site = result.sites[0]
    return {"fqdn": site["fqdn"], "public_ip": site["public_ip"], "changed": result.changed,
            "checksum": result.plan.checksum}


def rotate_credentials(config, store, fqdn: str, kinds=("db", "sftp"), source: str = "cli") -> dict:
    """New passwords for a provisioned site: applied, verified by logging in, then shown once.

    One account at a time, the store changes only once the host took the new
    password: it is applied, a login with it is proven, then it is stored. If
    anything fails before that, the old password is applied again (it is still
    the stored one) and the error says whether it works. Accounts rotated before
    a failure keep their new password: the error names them and the credentials
    sheet that shows it.
    """
    work = Hosting(config, store, source=source)
    row = work.site_row(fqdn)
    if row is None or row.state != "provisioned":
        raise StateError(f"{fqdn} is not a provisioned site")
    if adopted.is_adopted(row.config):
        raise StateError(f"{fqdn} is an adopted site: its accounts and passwords are the office's own, "
                         f"not in the toolkit's store; normalize it first (provision import --site {fqdn} --normalize)")
    # The site exists already: its approval was checked when it was provisioned.
    (request,) = work.load_requests([row.request_id], provisioning=False)
    with locks.held(store, [f"site:{fqdn}"]):
        (site,) = work.desired([request])
        users = {"sftp": site.names.user} | ({"db": site.names.db_user} if site.database else {})
        users = {k: v for k, v in users.items() if k in kinds}
        old = credentials.get(store, work.box, fqdn)
        rotated = []
        for kind in sorted(users):
            password = new_password()
            try:
                _set_password(work, site, kind, password)
                faults.point("after", f"rotate-{kind}")
                _login(work, site, kind, password)
                credentials.replace(store, work.box, fqdn, site.request_id, kind, users[kind], password,
                                    source=source)
            except Exception as err:  # noqa: BLE001 - the old password must keep working whatever failed
                error = as_error(f"rotate-{kind}", err)
                restored = _restore_password(work, site, kind, old.get(kind))
                with store.session() as session:
                    add_event(session, site.request_id, "credential_rotation_failed", source=source, fqdn=fqdn,
                              account=kind, error=str(error), old_password_works=restored)
                if not restored:
                    work.saga.set_state(site, "attention", f"the {kind} password rotation failed and the stored "
                                    f"password could not be put back: {error}", "site_attention", account=kind)
                done = ""
                if rotated:
                    # Those accounts now work only with their new password: show it, once, as on success.
                    sheet = work.sheet(site, credentials.get(store, work.box, fqdn))
                    done = f"; already rotated: {', '.join(rotated)} (new password in the credentials sheet {sheet})"
                raise HostError(f"{fqdn}: rotating the {kind} password failed: {error}; "
                                + ("the stored password was put back and works" if restored else
                                   "the stored password could not be put back; the site needs attention")
                                + done) from err
            rotated.append(kind)
        passwords = credentials.get(store, work.box, fqdn)
        checks = verify.verify_site(work.inventory, site, passwords, work.ca_file(), placeholder=False)
        sheet = work.sheet(site, passwords)
    return {"fqdn": fqdn, "rotated": rotated, "verified": sorted(checks.checks), "sheet": str(sheet)}


def _set_password(work: Hosting, site: DesiredSite, kind: str, password: str) -> None:
    artifacts, timeout = work.config.artifacts_dir(), work.config.hosting.step_timeout
    if kind == "db":
        db_target.apply(work.inventory_path, [site], {"db_passwords": {site.names.db_name: password}},
                        artifact_dir=artifacts, rotate=True, timeout=timeout)
    else:
        web_target.apply(work.inventory_path, [site],
                         {"sftp_password_hashes": {site.fqdn: credentials.sftp_hash(password)}, "tls": {}},
                         artifact_dir=artifacts, rotate=True, timeout=timeout)


def _login(work: Hosting, site: DesiredSite, kind: str, password: str) -> None:
    if kind == "db":
        verify.database_login(work.inventory, site, password)
    else:
        verify.sftp_login(site, password, work.inventory.host(site.web_host))


def _restore_password(work: Hosting, site: DesiredSite, kind: str, password: str | None) -> bool:
    """Apply the stored password again and prove it; False when that fails too."""
    if password is None:
        return False
    try:
        _set_password(work, site, kind, password)
        _login(work, site, kind, password)
    except Exception:  # noqa: BLE001 - the caller reports it
        return False
    return True
