"""`provision backup run`: every live site's files and database, and the toolkit's state, into restic.

Planned first (which sites, hosts and what; with a checksum), applied as
planned: per site, the home as a tar from its web host and a
`--single-transaction` dump from its database host, each streamed into the
office's repository and tagged site, request, release, kind and run. A site
that fails does not stop the others; the result says which and why. Then
retention per site and kind (`forget --prune`), and the records: a row per
snapshot and an event.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field

from sqlalchemy import select

from provisioner.backup import records, state as toolkit_state
from provisioner.backup.hosts import SiteHosts
from provisioner.errors import NotFound, ProvisionerError, StateError
from provisioner.store.events import add_event
from provisioner.store.models import SiteRow

LIVE_STATES = ("provisioned",)
STATE_HOST = "provisioner-state"  # restic's host of the toolkit's own snapshots


@dataclass(frozen=True)
class SitePlan:
    fqdn: str
    office: str
    request_id: str
    web_host: str
    home: str
    db_host: str | None
    db_name: str | None


class Reviewed:
    """A plan shown before it is applied: `reviewed()` is what the checksum binds."""

    def reviewed(self) -> dict:
        raise NotImplementedError

    @property
    def checksum(self) -> str:
        return hashlib.sha256(json.dumps(self.reviewed(), sort_keys=True).encode()).hexdigest()

    def as_dict(self) -> dict:
        return self.reviewed() | {"checksum": self.checksum}


@dataclass
class BackupPlan(Reviewed):
    repositories: dict  # office -> repository URL
    sites: list
    state: bool  # the toolkit's state database (and the key file when a passphrase is set)
    key: str | None  # why the key file is left out, or None
    policy: dict

    def reviewed(self) -> dict:
        return {"repositories": self.repositories, "sites": [asdict(s) for s in self.sites], "state": self.state,
                "key": self.key, "policy": self.policy}

    def render(self) -> str:
        lines = [f"backup of {len(self.sites)} site(s)" + (" and the toolkit's state" if self.state else "")]
        for s in self.sites:
            lines.append(f"  {s.fqdn}  -> {self.repositories[s.office]}")
            lines.append(f"    files  {s.web_host}:{s.home} (tar, nice/ionice)")
            if s.db_host:
                lines.append(f"    db     {s.db_host}: mysqldump --single-transaction {s.db_name}")
        if self.state:
            lines.append(f"  state  the state database -> {self.repositories[records.STATE_OFFICE]}")
            lines.append("    key    " + (self.key or "the key file, sealed with the backup passphrase"))
        p = self.policy
        lines.append(f"  then retention: keep {p['daily']} daily, {p['weekly']} weekly, {p['monthly']} monthly "
                     f"per site and kind (forget --prune)")
        return "\n".join(lines) + "\n"


@dataclass
class SiteResult:
    fqdn: str
    ok: bool
    snapshots: dict = field(default_factory=dict)  # kind -> {id, bytes_added, total_bytes}
    error: str | None = None


@dataclass
class RunResult:
    run_id: str
    plan: BackupPlan
    sites: list
    state: dict | None = None
    retention: dict = field(default_factory=dict)  # repository -> {"removed": n} or {"error": ...}

    @property
    def failed(self) -> list:
        return [s for s in self.sites if not s.ok]

    @property
    def ok(self) -> bool:
        return not self.failed and not (self.state or {}).get("error") and \
            not any("error" in r for r in self.retention.values())

    def as_dict(self) -> dict:
        return {"run": self.run_id, "ok": self.ok, "sites": [asdict(s) for s in self.sites], "state": self.state,
                "retention": self.retention, "plan": self.plan.as_dict()}


class Backups:
    """Backups of the recorded sites; `hosts` is the site hosts (SiteHosts, or a fake in tests)."""

    def __init__(self, config, store, source: str = "cli", hosts=None, hosting=None):
        self.config = config
        self.store = store
        self.source = source
        self._hosting = hosting
        self._hosts = hosts
        self._box = None

    @property
    def hosting(self):
        if self._hosting is None:
            from provisioner.hosting import Hosting

            self._hosting = Hosting(self.config, self.store, source=self.source)
        return self._hosting

    @property
    def hosts(self):
        if self._hosts is None:
            self._hosts = SiteHosts(self.hosting.inventory, nice=self.config.backup.nice,
                                    timeout=self.config.backup.timeout, ca_file=self.hosting.ca_file())
        return self._hosts

    @property
    def box(self):
        if self._box is None:
            from provisioner.secretbox import SecretBox

            self._box = SecretBox(self.config.key_file())
        return self._box

    def repository(self, office: str):
        return records.open_repository(self.config, self.store, self.box, office, source=self.source)

    def live_rows(self, fqdn: str | None = None) -> list[SiteRow]:
        with self.store.session() as session:
            query = select(SiteRow).where(SiteRow.state.in_(LIVE_STATES))
            if fqdn:
                query = query.where(SiteRow.fqdn == fqdn)
            rows = list(session.scalars(query.order_by(SiteRow.fqdn)))
        if fqdn and not rows:
            raise NotFound(f"no provisioned site {fqdn!r} in the records")
        return rows

    def sites(self, fqdns: list[str]) -> dict:
        return {s.fqdn: s for s in self.hosting.recorded_sites(fqdns)} if fqdns else {}

    # -- plan --------------------------------------------------------------------------

    def plan(self, fqdn: str | None = None) -> BackupPlan:
        rows = self.live_rows(fqdn)
        desired = self.sites([r.fqdn for r in rows])
        sites = [SitePlan(fqdn=r.fqdn, office=r.office, request_id=r.request_id, web_host=r.web_host,
                          home=desired[r.fqdn].names.home, db_host=r.db_host if desired[r.fqdn].database else None,
                          db_name=desired[r.fqdn].names.db_name if desired[r.fqdn].database else None)
                 for r in rows]
        with_state = fqdn is None
        offices = {s.office for s in sites} | ({records.STATE_OFFICE} if with_state else set())
        p = records.policy(self.config)
        return BackupPlan(repositories={o: records.repository_url(self.config, o) for o in sorted(offices)},
                          sites=sites, state=with_state,
                          key=toolkit_state.key_left_out_reason(self.config) if with_state else None,
                          policy={"daily": p.daily, "weekly": p.weekly, "monthly": p.monthly})

    # -- apply ---------------------------------------------------------------------------

    def run(self, fqdn: str | None = None, apply: bool = False, checksum: str | None = None):
        planned = self.plan(fqdn)
        if not apply:
            return planned
        if checksum and checksum != planned.checksum:
            raise StateError(f"the backup plan changed since it was reviewed (checksum {planned.checksum[:12]}, "
                             f"reviewed {checksum[:12]}); review it again")
        return self.apply(planned)

    def apply(self, planned: BackupPlan, run_id: str | None = None) -> RunResult:
        run_id = run_id or records.new_run_id()
        result = RunResult(run_id=run_id, plan=planned, sites=[])
        repos, repo_errors = {}, {}
        for office in planned.repositories:
            try:
                repos[office] = self.repository(office)
            except ProvisionerError as err:
                repo_errors[office] = str(err)
        desired = self.sites([s.fqdn for s in planned.sites])
        for s in planned.sites:
            if s.office in repo_errors:
                outcome = SiteResult(s.fqdn, False, error=f"repository: {repo_errors[s.office]}")
            else:
                outcome = self.backup_site(desired[s.fqdn], repos[s.office], run_id)
            result.sites.append(outcome)
        if planned.state:
            if records.STATE_OFFICE in repo_errors:
                result.state = {"error": f"repository: {repo_errors[records.STATE_OFFICE]}"}
            else:
                result.state = self.backup_state(repos[records.STATE_OFFICE], run_id)
        for office, repo in repos.items():
            result.retention[repo.url] = self.retain(repo)
        with self.store.session() as session:
            add_event(session, None, "backup_run", source=self.source, run=run_id, ok=result.ok,
                      sites=len(result.sites), failed={s.fqdn: s.error for s in result.failed},
                      state_error=(result.state or {}).get("error"))
        return result

    def backup_site(self, site, repo, run_id: str, as_found: bool = False) -> SiteResult:
        """The site's files, then its database; a failure is the site's own, recorded and returned.

        `as_found` (the backup before a restore): a database that is gone is part of the state
        being kept, so it is noted instead of failing.
        """
        outcome = SiteResult(site.fqdn, True)
        try:
            facts = self.hosts.file_facts(site)
            facts["served"] = self.hosts.served(site)
            release = facts["release"] or "none"
            tags = {"site": site.fqdn, "request": site.request_id, "release": release, "run": run_id}
            summary = self.hosts.files_into(site, repo, repo.backup_command(
                f"{site.fqdn}/files.tar", site.fqdn, tags | {"kind": "files"}))
            self._record(repo, site, "files", run_id, summary, facts, release)
            outcome.snapshots["files"] = _figures(summary)
            if site.database and as_found and not self.hosts.db_exists(site.db_host, site.names.db_name):
                outcome.snapshots["db"] = {"id": None, "missing": f"database {site.names.db_name} does not exist"}
            elif site.database:
                summary = self.hosts.db_into(site, repo, repo.backup_command(
                    f"{site.fqdn}/db.sql", site.fqdn, tags | {"kind": "db"}))
                # Right after the dump (no writes expected in between at night): what a restore must show.
                counts = self.hosts.row_counts(site.db_host, site.names.db_name)
                self._record(repo, site, "db", run_id, summary, {"rows": counts, "db_name": site.names.db_name},
                             release)
                outcome.snapshots["db"] = _figures(summary)
        except ProvisionerError as err:
            outcome.ok, outcome.error = False, str(err)
            with self.store.session() as session:
                add_event(session, site.request_id, "backup_failed", source=self.source, fqdn=site.fqdn, run=run_id,
                          reason=str(err)[:1000], done=sorted(outcome.snapshots))
        return outcome

    def _record(self, repo, site, kind, run_id, summary, facts, release) -> None:
        with self.store.session() as session:
            records.record_snapshot(session, repo.url, site.office, site.fqdn, kind, run_id, summary, facts,
                                    request_id=site.request_id, release=None if release == "none" else release,
                                    source=self.source)

    def backup_state(self, repo, run_id: str) -> dict:
        """The state database (and the sealed key file); {kind: figures} or {"error": ...}."""
        office, done = records.STATE_OFFICE, {}
        tags = {"kind": "state", "run": run_id}
        try:
            path, argv, env = toolkit_state.state_copy(self.config.resolved_state_url(), self.config.private_home())
            try:
                if path is not None:
                    summary = repo.backup_file(path, "state/state.db", STATE_HOST, tags)
                else:
                    summary = toolkit_state.stream_pg(argv, env, repo, repo.backup_command(
                        "state/state.sql", STATE_HOST, tags))
            finally:
                if path is not None:
                    path.unlink(missing_ok=True)
            with self.store.session() as session:
                records.record_snapshot(session, repo.url, office, None, "state", run_id, summary, {},
                                        source=self.source)
            done["state"] = _figures(summary)
            secret = toolkit_state.passphrase(self.config)
            if secret is None:
                done["key"] = {"left_out": toolkit_state.key_left_out_reason(self.config)}
            else:
                sealed = toolkit_state.seal_key(self.config.key_file().read_bytes(), secret)
                summary = repo.backup_stdin(sealed, "state/secret.key.sealed", STATE_HOST, tags | {"kind": "key"})
                with self.store.session() as session:
                    records.record_snapshot(session, repo.url, office, None, "key", run_id, summary, {},
                                            source=self.source)
                done["key"] = _figures(summary)
        except (ProvisionerError, OSError) as err:
            done["error"] = str(err)
            with self.store.session() as session:
                add_event(session, None, "backup_failed", source=self.source, fqdn=None, run=run_id,
                          reason=f"toolkit state: {err}"[:1000])
        return done

    def retain(self, repo) -> dict:
        """Retention per site and kind, then the rows of the snapshots restic no longer has."""
        try:
            repo.run("unlock")  # only stale locks (a run that was killed): never a live one
            groups = repo.forget(records.policy(self.config), prune=True)
            kept = {s["id"] for s in repo.snapshots()}
        except ProvisionerError as err:
            return {"error": str(err)}
        gone = records.mark_forgotten(self.store, repo.url, kept)
        with self.store.session() as session:
            add_event(session, None, "backup_retention", source=self.source, repository=repo.url, removed=gone,
                      groups=len(groups))
        return {"removed": len(gone)}


def _figures(summary: dict) -> dict:
    return {"id": summary["snapshot_id"], "bytes_added": int(summary.get("data_added", 0)),
            "total_bytes": int(summary.get("total_bytes_processed", 0))}
