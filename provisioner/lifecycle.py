"""Maintenance of a recorded site: suspend, unsuspend, remove (the SOP's hosting maintenance record).

Each action is planned from the live state first and applied only on request,
exactly as planned (an optional checksum binds it to a reviewed plan). It
holds the site's lock, records its intent before changing anything and a
maintenance event after (who, why, what), and a rerun that has nothing to do
says so and changes nothing.

- suspend / unsuspend: the vhost rendered with `suspended` on or off, applied
  by the web step alone, then checked from outside: 503 while suspended, 200
  again afterwards.
- remove: the database (mysqldump on the database host) and the site's files
  (tar of its home and logs on the web host) are streamed to an archive on the
  controller with sha256 sums first; then the removal in order DNS -> web ->
  database -> dedicated IP, read back (nothing on the hosts, no A record at any
  name server) before the address is released. The configuration record and
  its history stay, with state removed.
"""

import getpass
import hashlib
import json
import os
import shlex
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from provisioner import ipam, locks, records, ssh, verify
from provisioner.errors import HostError, ProvisionerError, StateError
from provisioner.files import write_atomic
from provisioner.hosting import Hosting, as_error, reraise
from provisioner.plan import Plan
from provisioner.site import DesiredSite
from provisioner.sop.sla import utcnow
from provisioner.store.events import add_event
from provisioner.store.models import SiteRow
from provisioner.targets import adopted as adopted_target
from provisioner.targets import web as web_target

SUSPENDABLE = ("provisioned", "suspended")
ARCHIVE_DIR = "archive"


@dataclass
class LifecyclePlan:
    action: str  # suspend | unsuspend | remove
    fqdn: str
    state: str  # the recorded state now
    plan: Plan
    backups: list[dict] = field(default_factory=list)
    noop: bool = False
    why_noop: str = ""

    @property
    def checksum(self) -> str:
        return self.plan.checksum

    def as_dict(self) -> dict:
        return {"action": self.action, "fqdn": self.fqdn, "state": self.state, "noop": self.noop,
                "why_noop": self.why_noop, "backups": self.backups, "checksum": self.checksum,
                "plan": self.plan.as_dict()}

    def render(self, full: bool = True) -> str:
        if self.noop:
            return f"{self.fqdn}: {self.why_noop}: nothing to do\n"
        out = [f"{self.action} {self.fqdn} (recorded state: {self.state})"]
        for backup in self.backups:
            out.append(f"  Backup {backup['host']:<20} {backup['kind']}: {backup['source']} -> {backup['file']}")
        if self.plan.empty:
            out.append(f"  no host changes; the record becomes {TARGET_STATE[self.action]}")
            out.append(f"checksum {self.checksum}")
            return "\n".join(out) + "\n"
        return "\n".join(out) + "\n" + self.plan.render(full=full)


TARGET_STATE = {"suspend": "suspended", "unsuspend": "provisioned", "remove": "removed"}


@dataclass
class LifecycleResult:
    action: str
    fqdn: str
    changed: bool
    state: str
    plan: LifecyclePlan
    checks: dict = field(default_factory=dict)
    archive: dict | None = None

    def as_dict(self) -> dict:
        return {"action": self.action, "fqdn": self.fqdn, "changed": self.changed, "state": self.state,
                "checks": self.checks, "archive": self.archive, "plan": self.plan.as_dict()}


class Lifecycle:
    def __init__(self, config, store, source: str = "cli", actor: str | None = None):
        self.config = config
        self.store = store
        self.source = source
        self.actor = actor or getpass.getuser()
        self.hosting = Hosting(config, store, source=source)

    # -- reading -------------------------------------------------------------------

    def _row(self, fqdn: str) -> SiteRow:
        return records.site_row(self.store, fqdn)

    def _site(self, fqdn: str, suspended: bool = False) -> DesiredSite:
        (site,) = self.hosting.recorded_sites([fqdn])
        return replace(site, suspended=suspended)

    def plan(self, action: str, fqdn: str) -> LifecyclePlan:
        if action == "remove":
            return self.plan_remove(fqdn)
        return self.plan_suspension(fqdn, suspend=(action == "suspend"))

    def plan_suspension(self, fqdn: str, suspend: bool) -> LifecyclePlan:
        action = "suspend" if suspend else "unsuspend"
        row = self._row(fqdn)
        if row.state not in SUSPENDABLE:
            raise StateError(f"{fqdn} is {row.state}; only a provisioned or suspended site can be "
                             f"{'suspended' if suspend else 'unsuspended'}")
        if not suspend and row.state == "provisioned":
            return LifecyclePlan(action, fqdn, row.state, Plan(sites=[fqdn]), noop=True,
                                 why_noop="not suspended")
        site = self._site(fqdn, suspended=suspend)
        live = web_target.read(self.hosting.inventory, [site])
        plan = Plan(changes=_web(site).plan([site], live), sites=[fqdn])
        if plan.empty and row.state == TARGET_STATE[action]:
            return LifecyclePlan(action, fqdn, row.state, plan, noop=True,
                                 why_noop="already suspended" if suspend else "not suspended")
        return LifecyclePlan(action, fqdn, row.state, plan)

    def plan_remove(self, fqdn: str) -> LifecyclePlan:
        row = self._row(fqdn)
        (site,) = self.hosting.recorded_sites([fqdn])
        plan = self.hosting.removal_plan([site])
        kinds = {c.kind for c in plan.changes}
        backups = []
        if "database" in kinds:
            backups.append({"kind": "database", "host": site.db_host, "source": site.names.db_name,
                            "file": f"database-{site.names.db_name}.sql"})
        if "site directory" in kinds:
            backups.append({"kind": "files", "host": site.web_host,
                            "source": f"{site.names.home} {site.names.logdir}", "file": f"files-{fqdn}.tar.gz"})
        held = ipam.allocated(self.store, fqdn) is not None
        if plan.empty and row.state == "removed" and not held:
            return LifecyclePlan("remove", fqdn, row.state, plan, noop=True, why_noop="already removed")
        return LifecyclePlan("remove", fqdn, row.state, plan, backups=backups)

    # -- applying ------------------------------------------------------------------

    def _checked(self, planned: LifecyclePlan, checksum: str | None) -> None:
        if checksum and planned.checksum != checksum:
            raise StateError(f"the plan changed since it was reviewed (checksum {planned.checksum}, "
                             f"expected {checksum}); review it again")

    def _event(self, request_id: str, kind: str, **payload) -> None:
        with self.store.session() as session:
            add_event(session, request_id, kind, actor=self.actor, source=self.source, sop_record="maintenance",
                      **payload)

    def suspend(self, fqdn: str, reason: str, checksum: str | None = None) -> LifecycleResult:
        if not (reason or "").strip():
            raise StateError("a suspension needs a reason (--reason)")
        return self._suspension(fqdn, True, reason.strip(), checksum)

    def unsuspend(self, fqdn: str, reason: str | None = None, checksum: str | None = None) -> LifecycleResult:
        return self._suspension(fqdn, False, (reason or "").strip() or None, checksum)

    def _suspension(self, fqdn: str, suspend: bool, reason: str | None, checksum: str | None) -> LifecycleResult:
        action = "suspend" if suspend else "unsuspend"
        with locks.held(self.store, [f"site:{fqdn}"]):
            planned = self.plan_suspension(fqdn, suspend)
            self._checked(planned, checksum)
            if planned.noop:
                return LifecycleResult(action, fqdn, False, planned.state, planned)
            site = self._site(fqdn, suspended=suspend)
            self._event(site.request_id, "maintenance_intent", fqdn=fqdn, action=action, reason=reason,
                        checksum=planned.checksum)
            try:
                if not planned.plan.empty:
                    _web(site).apply(self.hosting.inventory_path, [site], {"sftp_password_hashes": {}, "tls": {}},
                                     artifact_dir=self.config.artifacts_dir(),
                                     timeout=self.config.hosting.step_timeout)
                status = verify.http_status(site, self.hosting.ca_file(), expect=503 if suspend else 200)
            except ProvisionerError as err:
                self._event(site.request_id, "maintenance_failed", fqdn=fqdn, action=action, error=str(err))
                raise
            state = TARGET_STATE[action]
            with self.store.session() as session:
                row = session.get(SiteRow, fqdn)
                row.state, row.reason, row.updated_at = state, (reason if suspend else None), utcnow()
                add_event(session, site.request_id, f"site_{action}ed", actor=self.actor, source=self.source,
                          sop_record="maintenance", fqdn=fqdn, reason=reason, checksum=planned.checksum,
                          verified={"http": status})
            return LifecycleResult(action, fqdn, True, state, planned, checks={"http": status})

    def remove(self, fqdn: str, reason: str | None = None, checksum: str | None = None) -> LifecycleResult:
        reason = (reason or "").strip() or None
        with locks.held(self.store, [f"site:{fqdn}"]):
            planned = self.plan_remove(fqdn)
            self._checked(planned, checksum)
            if planned.noop:
                return LifecycleResult("remove", fqdn, False, planned.state, planned)
            (site,) = self.hosting.recorded_sites([fqdn])
            self._event(site.request_id, "maintenance_intent", fqdn=fqdn, action="remove", reason=reason,
                        checksum=planned.checksum, backups=planned.backups)
            try:
                archive = backup(self.hosting.inventory, self.config.home() / ARCHIVE_DIR, site, planned.backups,
                                 actor=self.actor, reason=reason) if planned.backups else None
                if archive:
                    self._event(site.request_id, "site_archived", fqdn=fqdn, **archive)
                # Read back inside: the site is removed (its address released) only once nothing is left.
                checks = self.hosting.remove([fqdn], actor=self.actor, sop_record="maintenance", reason=reason,
                                             archive=archive["path"] if archive else None)[fqdn]
            except Exception as err:  # noqa: BLE001 - recorded, then the toolkit's own error
                error = as_error("remove", err)
                self._event(site.request_id, "maintenance_failed", fqdn=fqdn, action="remove", error=str(error))
                reraise(error, err)
            return LifecycleResult("remove", fqdn, True, "removed", planned, checks=checks, archive=archive)


def _web(site: DesiredSite):
    """The web target that suspends a site: the web_site role, or for an adopted site the vhost swap."""
    return adopted_target if site.adopted is not None else web_target


# -- the archive -------------------------------------------------------------------

def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def stream_to_file(host, command: str, path: Path, ok_codes=(0,)) -> tuple[str, int]:
    """Run a command on the host (sudo) and write its stdout to a new 0600 file: (sha256, bytes)."""
    client = ssh.connect(host)
    digest, size = hashlib.sha256(), 0
    try:
        stdin, stdout, stderr = client.exec_command("sudo -n " + command, timeout=1800)
        stdin.channel.shutdown_write()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := stdout.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        errors = stderr.read().decode(errors="replace")
        rc = stdout.channel.recv_exit_status()
    finally:
        client.close()
    if rc not in ok_codes:
        raise HostError(f"{host.name}: {command.split()[0]} failed (exit {rc}): {errors.strip()[-300:]}")
    return digest.hexdigest(), size


def backup(inventory, root: Path, site: DesiredSite, backups: list[dict], actor: str = "system",
           reason: str | None = None) -> dict:
    """Stream each backup into <root>/<fqdn>-<UTC time>/ with SHA256SUMS and a manifest; check each file."""
    _private_dir(root)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    directory = root / f"{site.fqdn}-{stamp}"
    _private_dir(directory)
    files = []
    for item in backups:
        path = directory / item["file"]
        if item["kind"] == "database":
            command = ("mysqldump --single-transaction --routines --events --triggers --databases "
                       + shlex.quote(site.names.db_name))
            digest, size = stream_to_file(inventory.host(site.db_host), command, path)
            _check_dump(path)
        else:
            # An adopted site's home and log directory may be one directory (its document root).
            members = sorted({site.names.home.lstrip("/"), site.names.logdir.lstrip("/")})
            # --ignore-failed-read: a missing log directory is not a failed backup; exit 1 means a
            # file (a log being written) changed while it was read, which is fine for an archive.
            command = ("tar --create --gzip --file=- --ignore-failed-read --directory=/ -- "
                       + " ".join(shlex.quote(m) for m in members))
            digest, size = stream_to_file(inventory.host(site.web_host), command, path, ok_codes=(0, 1))
            _check_tar(path, members[0])
        files.append({"kind": item["kind"], "host": item["host"], "source": item["source"], "file": item["file"],
                      "bytes": size, "sha256": digest})
    sums = "".join(f"{f['sha256']}  {f['file']}\n" for f in files)
    write_atomic(directory / "SHA256SUMS", sums.encode(), mode=0o600, exclusive=True)
    manifest = {"fqdn": site.fqdn, "request_id": site.request_id, "created_at": stamp, "by": actor,
                "reason": reason, "files": files}
    write_atomic(directory / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False).encode(),
                 mode=0o600, exclusive=True)
    return {"path": str(directory), "files": files}


def _check_dump(path: Path) -> None:
    """mysqldump ends with "-- Dump completed"; a dump cut short does not."""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 200))
        tail = handle.read()
    if b"-- Dump completed" not in tail:
        raise HostError(f"the database dump {path.name} is incomplete; nothing was removed")


def _check_tar(path: Path, home: str) -> None:
    try:
        with tarfile.open(path, "r:gz") as archive:
            names = archive.getnames()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise HostError(f"the files archive {path.name} cannot be read ({err}); nothing was removed") from None
    if home not in names:
        raise HostError(f"the files archive {path.name} does not hold {home}; nothing was removed")
