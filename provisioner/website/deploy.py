"""Deploy a site's content as a release, list releases, roll back: planned first, applied as planned.

A deploy fetches and checks the content on the controller (provisioner.website.source),
reads the site's releases on its web host, and plans: the new release, the
content's sha256, files and bytes, the database backup, the command, the
health URL and what gets pruned, with a checksum. `--apply` fetches and plans
again, refuses a plan whose checksum is not the reviewed one, and then, holding
the site's lock:

1. stages the release (ansible: the normalized tar extracted as the site user
   under a temporary name, shared/ linked in, renamed into releases/<id>);
2. backs the site's database up on the database host (mysqldump, root-only
   0600 file, sha256 recorded);
3. runs the optional command as the site user in the new release (timeout);
4. switches `current` (ansible: one rename), prunes beyond keep_releases;
5. checks the site from outside at the health path (200, and the release's
   marker). On failure it switches back to the release that was live, checks
   that it answers, records website_deploy_failed and raises HostError.

A failure in 1-3 switches nothing. A kill at any point leaves `current` on the
old or the new release, never on a half-extracted one. The release id (a UTC
time and a random part) is not in the checksum: it is given at the apply.
"""

import getpass
import hashlib
import json
import secrets
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import urllib3

from provisioner import adopted, locks, records, runner, ssh
from provisioner.errors import (Conflict, HostError, NotFound, ProvisionerError, StateError, UserError,
                                ValidationError)
from provisioner.hosting import Hosting
from provisioner.sop.sla import utcnow
from provisioner.store.events import SOURCES
from provisioner.store.models import Event
from provisioner.website import layout, source as sources
from provisioner.website.layout import FIRST_RELEASE, LiveLayout

PLAYBOOK = "website_release.yml"
BACKUP_ROOT = "/var/backups/provisioner"
OUTPUT_KEPT = 2000  # characters of the command's output kept in the event
EVENT_KINDS = ("website_deployed", "website_deploy_failed", "website_rolled_back")
_HEALTH_PATH_MAX = 200


def new_release_id(now=None) -> str:
    now = now or utcnow()
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def health_path_problems(path: str) -> list[str]:
    if not isinstance(path, str) or not path.startswith("/"):
        return ["must start with '/'"]
    if len(path) > _HEALTH_PATH_MAX or any(not (33 <= ord(c) <= 126) for c in path):
        return [f"printable ASCII without spaces, at most {_HEALTH_PATH_MAX} characters"]
    return []


def prune_list(existing: list[str], current: str | None, keep: int) -> list[str]:
    """Releases to remove once a new one is added: the oldest beyond `keep` (the new one counts),
    never the current one (which becomes the previous)."""
    candidates = sorted(r for r in existing if r != current)
    room = keep - 1 - (1 if current in existing else 0)  # the new release, and the one it replaces
    return candidates[:max(len(candidates) - max(room, 0), 0)]


@dataclass
class DeployPlan:
    fqdn: str
    request_id: str
    web_host: str
    db_host: str | None
    user: str
    home: str
    release: str
    content: sources.Content = field(repr=False)
    live: LiveLayout = field(repr=False)
    shared: list[dict] = field(default_factory=list)
    backup: dict | None = None  # {host, database, directory}
    command: str | None = None
    command_timeout: int = 600
    health_url: str = ""
    health_path: str = "/"
    expect: str | None = None
    prune: list[str] = field(default_factory=list)

    @property
    def convert(self) -> bool:
        """The first deploy: a real public/ becomes the release 00000000-000000-awal."""
        return self.live.public == "dir"

    @property
    def current(self) -> str | None:
        return FIRST_RELEASE if self.convert else self.live.current

    def reviewed(self) -> dict:
        """What the checksum covers: everything the apply does, except the release id it gives."""
        c = self.content
        return {"fqdn": self.fqdn, "web_host": self.web_host, "db_host": self.db_host, "source": str(c.spec),
                "kind": c.spec.kind, "ref": c.spec.ref, "commit": c.commit, "sha256": c.sha256, "files": c.files,
                "bytes": c.bytes, "shared": self.shared, "backup": self.backup, "command": self.command,
                "health": self.health_url, "marker": self.expect, "current": self.current,
                "convert": self.convert, "prune": self.prune}

    @property
    def checksum(self) -> str:
        canonical = json.dumps(self.reviewed(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def as_dict(self) -> dict:
        return {"action": "deploy", "release": self.release, "request_id": self.request_id, **self.reviewed(),
                "checksum": self.checksum}

    def render(self) -> str:
        c = self.content
        source = f"{c.spec.location} ({c.spec.kind})"
        if c.spec.kind == "git":
            source += f" at {c.spec.ref or 'HEAD'} = commit {c.commit}"
        out = [f"deploy {self.fqdn} on {self.web_host} (site of request {self.request_id})",
               f"  release   {self.release} (the id is given at the apply)",
               f"  current   {self.current or 'none'}" + (" (it becomes the previous release)" if self.current else ""),
               f"  source    {source}",
               f"  content   sha256 {c.sha256}, {c.files} files, {c.bytes} bytes"]
        if self.convert:
            out.append(f"  first     {self.home}/public/ becomes release {FIRST_RELEASE}; public -> current")
        for link in self.shared:
            out.append(f"  shared    {link['path']} -> {link['target']}")
        if self.backup:
            out.append(f"  backup    {self.backup['host']}: mysqldump {self.backup['database']} -> "
                       f"{self.backup['directory']}/{self.backup['database']}-<release>.sql (root, 0600)")
        else:
            out.append("  backup    none (the site has no database)")
        out.append(f"  command   {self.command!r} as {self.user} in the new release, timeout "
                   f"{self.command_timeout} s" if self.command else "  command   none")
        out.append(f"  health    {self.health_url}: status 200" +
                   (f" and {self.expect!r} in the body" if self.expect else ""))
        out.append(f"  prune     {', '.join(self.prune) if self.prune else 'nothing'}")
        out.append(f"checksum {self.checksum}")
        return "\n".join(out) + "\n"


@dataclass
class RollbackPlan:
    fqdn: str
    request_id: str
    web_host: str
    current: str | None
    target: str
    health_url: str
    expect: str | None

    def reviewed(self) -> dict:
        return {"action": "rollback", "fqdn": self.fqdn, "web_host": self.web_host, "current": self.current,
                "target": self.target, "health": self.health_url, "marker": self.expect}

    @property
    def checksum(self) -> str:
        return hashlib.sha256(json.dumps(self.reviewed(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def as_dict(self) -> dict:
        return {**self.reviewed(), "request_id": self.request_id, "checksum": self.checksum}

    def render(self) -> str:
        return (f"rollback {self.fqdn} on {self.web_host}: current {self.current} -> {self.target}\n"
                f"  health    {self.health_url}: status 200" + (f" and {self.expect!r} in the body" if self.expect
                                                                  else "") + f"\nchecksum {self.checksum}\n")


@dataclass
class DeployResult:
    fqdn: str
    changed: bool
    payload: dict
    plan: object

    def as_dict(self) -> dict:
        return {"fqdn": self.fqdn, "changed": self.changed, "result": self.payload, "plan": self.plan.as_dict()}


class Website:
    def __init__(self, config, store, source: str = "cli", actor: str | None = None):
        self.config = config
        self.store = store
        self.source = source
        self.actor = actor or getpass.getuser()
        self.hosting = Hosting(config, store, source=source)

    # -- reading -------------------------------------------------------------------

    def _site(self, fqdn: str, states=("provisioned",)):
        row = records.site_row(self.store, fqdn)
        if row.state not in states:
            raise StateError(f"{fqdn} is {row.state}; content is deployed only to a provisioned site"
                             + (" (unsuspend it first)" if row.state == "suspended" else ""))
        if adopted.is_adopted(row.config):
            raise StateError(f"{fqdn} is an adopted site: its document root is its own layout; "
                             "website deploys need the toolkit's layout")
        (site,) = self.hosting.recorded_sites([fqdn])
        return row, site

    def _live(self, site) -> LiveLayout:
        live = layout.read(self.hosting.inventory.host(site.web_host), site.names.home)
        if not live.home:
            raise HostError(f"{site.fqdn}: {site.names.home} does not exist on {site.web_host}")
        if live.public not in ("dir", "link"):
            raise HostError(f"{site.fqdn}: {site.names.home}/public is missing on {site.web_host}")
        if live.public == "link" and live.current is None:
            raise Conflict(f"{site.fqdn}: public is a link to {live.public_target!r} that the toolkit did not make")
        if live.current and live.current.startswith("?"):
            raise Conflict(f"{site.fqdn}: current points at {live.current[1:]!r}, not at a release")
        return live

    def _health_url(self, site, path: str) -> str:
        return f"{'https' if site.tls else 'http'}://{site.fqdn}{path}"

    # -- planning ------------------------------------------------------------------

    def plan_deploy(self, fqdn: str, source: str, workdir: Path, run: str | None = None,
                    health: str | None = None, expect: str | None = None,
                    from_request: bool = False) -> DeployPlan:
        row, site = self._site(fqdn)
        health = health or "/"
        problems = health_path_problems(health)
        if problems:
            raise UserError(f"--health: {health!r}: {problems[0]}")
        if run is not None and (not run.strip() or len(run) > 2000 or "\x00" in run):
            raise UserError("--run: a command of 1-2000 characters")
        spec = sources.parse_source(source)
        website = self.config.website
        if from_request:
            problem = sources.local_source_problem(spec, website.source_roots)
            if problem:
                raise UserError(f"website.source: {problem}")
        content = sources.fetch(spec, workdir, sources.Limits.from_config(self.config), website.command_timeout)
        live = self._live(site)
        shared = sorted(set(website.shared) | set(content.shared))
        problems = sources.shared_path_problems(content.entries, shared)
        if problems:
            raise ValidationError(problems, source=str(spec))
        links = [{"path": p, "target": layout.shared_link_target(p)} for p in shared]
        backup = ({"host": site.db_host, "database": site.names.db_name, "directory": f"{BACKUP_ROOT}/{fqdn}"}
                  if site.database and site.db_host else None)
        current = FIRST_RELEASE if live.public == "dir" else live.current
        # A release that failed was never live: it is removed, and never counts for keep_releases.
        failed = self._failed_releases(fqdn) & set(live.releases) - {current}
        existing = sorted(set(live.releases) - failed | ({FIRST_RELEASE} if live.public == "dir" else set()))
        return DeployPlan(
            fqdn=fqdn, request_id=row.request_id, web_host=site.web_host, db_host=site.db_host,
            user=site.names.user, home=site.names.home, release=new_release_id(), content=content, live=live,
            shared=links, backup=backup, command=run.strip() if run else None,
            command_timeout=website.command_timeout, health_url=self._health_url(site, health), health_path=health,
            expect=expect if expect is not None else content.marker,
            prune=sorted(set(prune_list(existing, current, website.keep_releases)) | failed))

    def plan_rollback(self, fqdn: str, to: str | None = None) -> RollbackPlan:
        row, site = self._site(fqdn)
        live = self._live(site)
        if live.public == "dir" or live.current is None:
            raise StateError(f"{fqdn} has no releases yet: nothing to roll back to")
        target = to or self._last_live(fqdn, live)
        if target is None:
            raise StateError(f"{fqdn}: release {live.current} is the oldest one; give --to RELEASE")
        if target not in live.releases:
            raise NotFound(f"{fqdn} has no release {target!r} on {site.web_host} "
                           f"(releases: {', '.join(live.releases)})")
        if target == live.current:
            raise StateError(f"{fqdn}: release {target} is already the current one")
        deployed = self._deploy_event(fqdn, target) or {}
        health = (deployed.get("health") or {}).get("url") or self._health_url(site, "/")
        return RollbackPlan(fqdn, row.request_id, site.web_host, live.current, target, health,
                            (deployed.get("health") or {}).get("marker"))

    def _last_live(self, fqdn: str, live: LiveLayout) -> str | None:
        """The rollback default: the release last live before the current one, as the history
        says (a deploy's release and the one it replaced, a rollback's target); a failed release
        was never live. Without history (releases made before it), the one before by name."""
        for event in reversed(self.history(fqdn)):
            if event["kind"] not in ("website_deployed", "website_rolled_back"):
                continue
            for release in (event["payload"].get("release"), event["payload"].get("previous")):
                if release and release != live.current and release in live.releases:
                    return release
        return live.previous

    def _failed_releases(self, fqdn: str) -> set[str]:
        """Releases whose deploy failed and that were never live afterwards."""
        failed, live = set(), set()
        for event in self.history(fqdn):
            payload = event["payload"]
            if event["kind"] == "website_deploy_failed" and payload.get("action") != "rollback":
                failed.add(payload.get("release"))
            elif event["kind"] in ("website_deployed", "website_rolled_back"):
                live.update({payload.get("release"), payload.get("previous")})
        return {r for r in failed - live if r}

    def _deploy_event(self, fqdn: str, release: str) -> dict | None:
        for event in reversed(self.history(fqdn)):
            if event["kind"] == "website_deployed" and event["payload"].get("release") == release:
                return event["payload"]
        return None

    def history(self, fqdn: str) -> list[dict]:
        """The website events of a site, oldest first."""
        with self.store.session() as session:
            events = list(session.query(Event).filter(Event.kind.in_(EVENT_KINDS)).order_by(Event.at, Event.id))
        return [{"at": e.at, "kind": e.kind, "actor": e.actor, "request_id": e.request_id, "payload": e.payload}
                for e in events if (e.payload or {}).get("fqdn") == fqdn]

    def releases(self, fqdn: str) -> dict:
        """The releases on the web host, with what the history says of each."""
        row, site = self._site(fqdn, states=("provisioned", "suspended"))
        live = self._live(site)
        deployed = {}
        for event in self.history(fqdn):
            if event["kind"] == "website_deployed" or (event["kind"] == "website_deploy_failed"
                                                       and event["payload"].get("release")):
                deployed[event["payload"]["release"]] = event
        rows = []
        for release in live.releases:
            event = deployed.get(release)
            payload = event["payload"] if event else {}
            rows.append({"release": release, "current": release == live.current,
                         "deployed_at": event["at"].isoformat(timespec="seconds") if event else "",
                         "result": {"website_deployed": "deployed", "website_deploy_failed": "failed"}.get(
                             event["kind"], "") if event else ("first (public/ as it was)"
                                                               if release == FIRST_RELEASE else ""),
                         "by": event["actor"] if event else "", "source": payload.get("source", ""),
                         "ref": payload.get("ref") or "", "commit": payload.get("commit") or "",
                         "sha256": payload.get("sha256", ""), "files": payload.get("files"),
                         "bytes": payload.get("bytes")})
        return {"fqdn": fqdn, "web_host": site.web_host, "current": live.current,
                "public": "link" if live.converted else live.public, "releases": rows,
                "leftovers": live.partial}

    # -- applying ------------------------------------------------------------------

    def _event(self, request_id: str, kind: str, **payload) -> None:
        # The payload names its own `source` (where the content came from) and `actor`, so the
        # event is built here rather than through add_event's keyword arguments.
        if self.source not in SOURCES:
            raise ValueError(f"unknown event source {self.source!r}")
        with self.store.session() as session:
            session.add(Event(request_id=request_id, at=utcnow(), actor=self.actor, source=self.source, kind=kind,
                              payload=payload))

    def _playbook(self, site, action: str, release: str, **extra) -> None:
        item = {"fqdn": site.fqdn, "user": site.names.user, "home": site.names.home, "php": site.php,
                "php_version": site.php_version}
        extravars = {"website_release__action": action, "website_release__site": item,
                     "website_release__release": release,
                     **{f"website_release__{k}": v for k, v in extra.items()}}
        runner.run_playbook(PLAYBOOK, self.hosting.inventory_path, {site.web_host}, extravars=extravars,
                            limit=site.web_host, artifact_dir=self.config.artifacts_dir(),
                            timeout=self.config.hosting.step_timeout)

    def deploy(self, fqdn: str, source: str, run: str | None = None, health: str | None = None,
               checksum: str | None = None, expect: str | None = None, request_id: str | None = None,
               do_apply: bool = True, from_request: bool = False) -> DeployResult | DeployPlan:
        """Plan (do_apply=False) or plan and apply a deploy; the apply holds the site's lock."""
        with tempfile.TemporaryDirectory(prefix="provisioner-website-") as work:
            workdir = Path(work)
            if not do_apply:
                return self.plan_deploy(fqdn, source, workdir, run, health, expect, from_request)
            with locks.held(self.store, [f"site:{fqdn}"]):
                planned = self.plan_deploy(fqdn, source, workdir, run, health, expect, from_request)
                if checksum and planned.checksum != checksum:
                    raise StateError(f"the plan changed since it was reviewed (checksum {planned.checksum}, "
                                     f"expected {checksum}); review it again")
                return self._apply(planned, workdir, request_id or planned.request_id)

    def _payload(self, planned: DeployPlan, **extra) -> dict:
        c = planned.content
        return {"fqdn": planned.fqdn, "release": planned.release, "previous": planned.current,
                "source": c.spec.location, "ref": c.spec.ref, "commit": c.commit, "sha256": c.sha256,
                "files": c.files, "bytes": c.bytes, "backup": None, "command": planned.command,
                "health": {"url": planned.health_url, "status": None, "marker": planned.expect},
                "actor": self.actor, "reason": None, "checksum": planned.checksum, "pruned": [], **extra}

    def _apply(self, planned: DeployPlan, workdir: Path, request_id: str) -> DeployResult:
        (site,) = self.hosting.recorded_sites([planned.fqdn])
        payload = self._payload(planned)
        switched = staged = False
        try:
            bundle = workdir / f"{planned.release}.tar"
            sources.bundle(planned.content, bundle, int(time.time()))
            staged = True
            self._playbook(site, "stage", planned.release, bundle=str(bundle), links=planned.shared)
            if planned.backup:
                payload["backup"] = self._backup(site, planned)
            if planned.command:
                payload["command_output"] = self._command(site, planned)
            switched = True
            self._playbook(site, "switch", planned.release, prune=[])
            payload["health"] = self._health(site, planned.health_path, planned.expect)
        except Exception as err:  # noqa: BLE001 - recorded, switched back, then raised
            payload["reason"] = (str(err) or type(err).__name__)[:1000]
            payload["switched_back"] = self._switch_back(site, planned) if switched else None
            back_failed = switched and "status" not in (payload["switched_back"] or {})
            # A release that may still be live (the switch back failed) is kept for the operator.
            payload["removed"] = (self._discard(site, planned) if staged and not back_failed else
                                  {"release": planned.release, "removed": False,
                                   "note": "kept: the switch back did not complete"} if staged else None)
            self._event(request_id, "website_deploy_failed", **payload)
            if isinstance(err, HostError) or not isinstance(err, ProvisionerError):
                raise
            raise HostError(f"{planned.fqdn}: deploy of release {planned.release} failed: {err}") from err
        # Pruned only once the new release answers, so a failed deploy keeps every release.
        if planned.prune:
            try:
                self._playbook(site, "prune", planned.release, prune=planned.prune)
                payload["pruned"] = planned.prune
            except ProvisionerError as err:
                payload["prune_error"] = str(err)[:500]
        self._event(request_id, "website_deployed", **payload)
        return DeployResult(planned.fqdn, True, payload, planned)

    def _discard(self, site, planned: DeployPlan) -> dict:
        """A failed deploy's release is removed (the prune action never removes what `current`
        points at, so a release a failed switch back left live stays)."""
        if planned.current is None:
            return {"release": planned.release, "removed": False, "note": "no other release to keep as current"}
        try:
            self._playbook(site, "prune", planned.current, prune=[planned.release])
        except ProvisionerError as err:
            return {"release": planned.release, "removed": False, "error": str(err)[:500]}
        return {"release": planned.release, "removed": True}

    def _switch_back(self, site, planned: DeployPlan) -> dict:
        """After a failed switch or health check: the release that was live, live again and answering."""
        return self._switch_to(site, planned.current, planned.health_path)

    def _switch_to(self, site, back: str | None, health_path: str) -> dict:
        if back is None:
            return {"release": None, "note": "no earlier release to switch back to"}
        try:
            self._playbook(site, "switch", back, prune=[])
            status = self._answers(site, health_path)
        except ProvisionerError as err:
            return {"release": back, "error": str(err)[:500]}
        return {"release": back, "status": status}

    def rollback(self, fqdn: str, to: str | None = None, checksum: str | None = None,
                 do_apply: bool = True, request_id: str | None = None) -> DeployResult | RollbackPlan:
        if not do_apply:
            return self.plan_rollback(fqdn, to)
        with locks.held(self.store, [f"site:{fqdn}"]):
            planned = self.plan_rollback(fqdn, to)
            if checksum and planned.checksum != checksum:
                raise StateError(f"the plan changed since it was reviewed (checksum {planned.checksum}, "
                                 f"expected {checksum}); review it again")
            (site,) = self.hosting.recorded_sites([fqdn])
            deployed = self._deploy_event(fqdn, planned.target) or {}
            payload = {"fqdn": fqdn, "release": planned.target, "previous": planned.current,
                       "source": deployed.get("source"), "ref": deployed.get("ref"), "commit": deployed.get("commit"),
                       "sha256": deployed.get("sha256"), "files": deployed.get("files"),
                       "bytes": deployed.get("bytes"), "backup": None, "command": None,
                       "health": {"url": planned.health_url, "status": None, "marker": planned.expect},
                       "actor": self.actor, "reason": None, "checksum": planned.checksum}
            path = "/" + planned.health_url.split("://", 1)[1].partition("/")[2]
            try:
                self._playbook(site, "switch", planned.target, prune=[])
                payload["health"] = self._health(site, path, planned.expect)
            except ProvisionerError as err:
                payload["reason"] = str(err)[:1000]
                # As after a failed deploy: the release that was current, live again and answering.
                payload["switched_back"] = self._switch_to(site, planned.current, path)
                self._event(request_id or planned.request_id, "website_deploy_failed", action="rollback", **payload)
                raise
            self._event(request_id or planned.request_id, "website_rolled_back", **payload)
            return DeployResult(fqdn, True, payload, planned)

    # -- on the hosts --------------------------------------------------------------

    def _backup(self, site, planned: DeployPlan) -> dict:
        """mysqldump on the database host into a root-only 0600 file; (path, sha256, bytes)."""
        b = planned.backup
        path = f"{b['directory']}/{b['database']}-{planned.release}.sql"
        # A dump that stops (database down, disk full) leaves no half-written .part behind.
        script = ('set -e; umask 077; mkdir -p "$1"; chmod 0700 "$2" "$1"; trap \'rm -f -- "$4.part"\' EXIT; '
                  'mysqldump --single-transaction --routines --events --triggers --databases "$3" > "$4.part"; '
                  'tail -c 200 "$4.part" | grep -q -- "-- Dump completed"; mv -f "$4.part" "$4"; '
                  'sha256sum "$4"; stat -c %s "$4"')
        command = "sh -c " + shlex.join([script, "sh", b["directory"], BACKUP_ROOT, b["database"], path])
        rc, out, err = ssh.run(self.hosting.inventory.host(b["host"]), command, sudo=True, timeout=1800)
        lines = out.split()
        if rc != 0 or len(lines) < 3:
            raise HostError(f"{b['host']}: the database backup of {b['database']} failed (exit {rc}): "
                            f"{err.strip()[-300:]}; nothing was switched")
        return {"host": b["host"], "path": path, "sha256": lines[0], "bytes": int(lines[-1])}

    def _command(self, site, planned: DeployPlan) -> str:
        """The command as the site user in the new release; a failure stops the deploy before the switch."""
        release = f"{site.names.home}/releases/{planned.release}"
        inner = ("cd -- \"$1\" && exec env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=\"$2\" LANG=C.UTF-8 "
                 "sh -c \"$3\"")
        command = shlex.join(["timeout", "--kill-after=10", str(planned.command_timeout), "runuser", "-u",
                              site.names.user, "--", "sh", "-c", inner, "sh", release, site.names.home,
                              planned.command]) + " 2>&1"
        rc, out, _ = ssh.run(self.hosting.inventory.host(site.web_host), command, sudo=True,
                             timeout=planned.command_timeout + 30)
        output = out[-OUTPUT_KEPT:]
        if rc in (124, 137):  # timeout's own exit codes: stopped, or killed after --kill-after
            raise HostError(f"the command took more than {planned.command_timeout} s (website.command_timeout) "
                            f"and was stopped; nothing was switched: {output[-300:]}")
        if rc != 0:
            raise HostError(f"the command exited {rc}; nothing was switched: {output[-300:]}")
        return output

    def _pool(self, site):
        ssh.check_route(site.public_ip)
        if site.tls:
            return urllib3.HTTPSConnectionPool(site.public_ip, 443, timeout=5.0, retries=False,
                                               server_hostname=site.fqdn, assert_hostname=site.fqdn,
                                               cert_reqs="CERT_REQUIRED", ca_certs=self.hosting.ca_file())
        return urllib3.HTTPConnectionPool(site.public_ip, 80, timeout=5.0, retries=False)

    def _health(self, site, path: str, expect: str | None) -> dict:
        """Status 200 at the path (and the expected text in the body), waited for up to health_timeout."""
        pool = self._pool(site)
        url = self._health_url(site, path)
        deadline = time.monotonic() + self.config.website.health_timeout
        while True:
            try:
                response = pool.request("GET", path, headers={"Host": site.fqdn}, redirect=False)
                status, body, seen = response.status, response.data.decode(errors="replace"), None
            except urllib3.exceptions.HTTPError as err:
                status, body, seen = None, "", err
            if status == 200 and (not expect or expect in body):
                return {"url": url, "status": status, "marker": expect}
            if time.monotonic() > deadline:
                what = (f"status {status}" if status is not None else f"no answer ({seen})") + \
                       (f", {expect!r} not in the body" if status == 200 else "")
                raise HostError(f"{site.fqdn}: the health check of {url} failed: {what}")
            time.sleep(0.5)

    def _answers(self, site, path: str) -> int:
        """The release switched back to answers (any status but a 5xx or none)."""
        pool = self._pool(site)
        deadline = time.monotonic() + self.config.website.health_timeout
        while True:
            try:
                status = pool.request("GET", path, headers={"Host": site.fqdn}, redirect=False).status
            except urllib3.exceptions.HTTPError:
                status = None
            if status is not None and status < 500:
                return status
            if time.monotonic() > deadline:
                raise HostError(f"{site.fqdn}: after switching back, {path} answers {status or 'nothing'}")
            time.sleep(0.5)

