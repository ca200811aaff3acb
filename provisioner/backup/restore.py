"""`provision backup restore`: a site's files and database back from a snapshot, then proven from outside.

Planned first (which snapshots, into which site and hosts; with a checksum).
Applied as planned, holding the target site's lock:

1. the target's current state is backed up first, so the restore can be
   undone (its snapshot ids are in the result);
2. the home's content is replaced from the tar (extracted as root into a
   staging directory inside the home, owners mapped to the target's user,
   nothing outside the home, swapped in at the end);
3. the target's database is dropped, made again and loaded from the dump;
4. checked from outside: the page answers 200 with the body recorded at backup
   time, every table has the rows counted at backup time, and the site's own
   database account logs in. Only then are the snapshots marked proven.

`--as NEW_FQDN` restores into another recorded, provisioned site of the same
office (made by hosting: a restore never makes accounts itself).
"""

from dataclasses import dataclass

from provisioner import credentials, locks, records as site_records
from provisioner.backup import records
from provisioner.backup.run import Backups, Reviewed
from provisioner.errors import HostError, NotFound, ProvisionerError, StateError
from provisioner.sop.sla import utcnow
from provisioner.store.events import add_event
from provisioner.store.models import SiteRow


@dataclass
class RestorePlan(Reviewed):
    fqdn: str
    target: str
    run_id: str
    files: dict | None  # {snapshot, taken_at, release}
    db: dict | None
    web_host: str
    home: str
    db_host: str | None
    db_name: str | None

    def reviewed(self) -> dict:
        return {"fqdn": self.fqdn, "target": self.target, "run": self.run_id, "files": self.files, "db": self.db,
                "web_host": self.web_host, "home": self.home, "db_host": self.db_host, "db_name": self.db_name}

    def render(self) -> str:
        where = "in place" if self.fqdn == self.target else f"into {self.target}"
        lines = [f"restore of {self.fqdn} {where}, from backup run {self.run_id}",
                 f"  first    back up {self.target} as it is now (so this restore can be undone)"]
        if self.files:
            lines.append(f"  files    snapshot {self.files['snapshot']} ({self.files['taken_at']}, release "
                         f"{self.files['release'] or 'none'}) replaces the content of {self.web_host}:{self.home}")
        if self.db:
            lines.append(f"  db       snapshot {self.db['snapshot']} ({self.db['taken_at']}) replaces database "
                         f"{self.db_name} on {self.db_host} (dropped and loaded)")
        lines.append("  then     checked from outside: the page, the rows of every table, the site's DB login")
        return "\n".join(lines) + "\n"


class Restores(Backups):
    def _row(self, fqdn: str) -> SiteRow:
        return site_records.site_row(self.store, fqdn)

    def plan_restore(self, fqdn: str, snapshot: str | None = None, as_fqdn: str | None = None) -> RestorePlan:
        source = self._row(fqdn)
        target_fqdn = as_fqdn or fqdn
        target = self._row(target_fqdn)
        if target.state != "provisioned":
            raise StateError(f"{target_fqdn} is {target.state}: a restore goes only into a provisioned site "
                             "(a new one is made by hosting first)")
        if target.office != source.office:
            raise StateError(f"{target_fqdn} belongs to office {target.office}, {fqdn} to {source.office}: "
                             "a restore never crosses offices")
        rows = records.snapshots(self.store, fqdn)
        if not rows:
            raise NotFound(f"{fqdn} has no backup in the records (run `provision backup run --site {fqdn}`)")
        if snapshot:
            chosen = [r for r in rows if r.snapshot_id.startswith(snapshot) or snapshot.startswith(r.snapshot_id)]
            if not chosen:
                raise NotFound(f"{fqdn} has no snapshot {snapshot!r} (see `provision backup list {fqdn}`)")
            run_id = chosen[0].run_id
        else:
            # The latest regular run: a backup taken just before a restore is only the way back.
            run_id = next((r.run_id for r in rows if r.kind == "files" and not r.run_id.startswith(records.UNDO_PREFIX)),
                          None) or next(r.run_id for r in rows if r.kind == "files")
        of_run = {r.kind: r for r in rows if r.run_id == run_id}
        (site,) = self.hosting.recorded_sites([target_fqdn])
        if "db" in of_run and not site.database:
            raise StateError(f"{target_fqdn} has no database to load {fqdn}'s dump into")

        def shown(row):
            return {"snapshot": row.snapshot_id, "taken_at": row.taken_at.isoformat(timespec="seconds"),
                    "release": row.release} if row else None

        return RestorePlan(fqdn=fqdn, target=target_fqdn, run_id=run_id, files=shown(of_run.get("files")),
                           db=shown(of_run.get("db")), web_host=site.web_host, home=site.names.home,
                           db_host=site.db_host if "db" in of_run else None,
                           db_name=site.names.db_name if "db" in of_run else None)

    def restore(self, fqdn: str, snapshot: str | None = None, as_fqdn: str | None = None, apply: bool = False,
                checksum: str | None = None):
        planned = self.plan_restore(fqdn, snapshot, as_fqdn)
        if not apply:
            return planned
        if checksum and checksum != planned.checksum:
            raise StateError(f"the restore plan changed since it was reviewed (checksum {planned.checksum[:12]}, "
                             f"reviewed {checksum[:12]}); review it again")
        with locks.held(self.store, [f"site:{planned.target}"]):
            return self._apply(planned)

    def _apply(self, planned: RestorePlan) -> dict:
        source = self._row(planned.fqdn)
        target_row = self._row(planned.target)
        (target,) = self.hosting.recorded_sites([planned.target])
        source_names = self.hosting.recorded_sites([planned.fqdn])[0].names if planned.fqdn != planned.target \
            else target.names
        repo = self.repository(source.office)
        target_repo = self.repository(target_row.office)
        undo = self.backup_site(target, target_repo, records.UNDO_PREFIX + records.new_run_id(), as_found=True)
        if not undo.ok:
            raise HostError(f"{planned.target}: the backup before the restore failed, nothing was restored: "
                            f"{undo.error}")
        rows = {r.kind: r for r in records.snapshots(self.store, planned.fqdn) if r.run_id == planned.run_id}
        result = {"fqdn": planned.fqdn, "target": planned.target, "run": planned.run_id,
                  "undo": {k: v["id"] for k, v in undo.snapshots.items() if v["id"]}}
        try:
            if planned.files:
                result["files"] = self.hosts.restore_files(
                    repo, ["dump", rows["files"].snapshot_id, f"/{planned.fqdn}/files.tar"], target,
                    source_user=source_names.user)
            if planned.db:
                self.hosts.restore_db(repo, ["dump", rows["db"].snapshot_id, f"/{planned.fqdn}/db.sql"],
                                      target.db_host, target.names.db_name)
            result["checks"] = self.check_restored(target, rows)
        except ProvisionerError as err:
            with self.store.session() as session:
                add_event(session, target_row.request_id, "backup_restore_failed", source=self.source,
                          fqdn=planned.fqdn, target=planned.target, run=planned.run_id, reason=str(err)[:1000],
                          undo=result["undo"])
            raise type(err)(f"{err} (undo: `provision backup restore {planned.target} --snapshot "
                            f"{result['undo'].get('files', '?')} --apply`)") from None
        records.mark_verified(self.store, list(rows.values()), "backup_restored", source=self.source,
                              fqdn=planned.fqdn, target=planned.target, run=planned.run_id, undo=result["undo"],
                              checks=result["checks"])
        return result

    def check_restored(self, site, rows: dict) -> dict:
        """From outside: the page as at backup time, the rows per table, the site's own DB login."""
        checks = {}
        files = rows.get("files")
        if files is not None:
            served = files.facts.get("served") or {}
            now = self.hosts.served(site)
            if now["status"] != 200:
                raise HostError(f"{site.fqdn}: after the restore / answers {now['status'] or now.get('error')}")
            if served.get("sha256") and now["sha256"] != served["sha256"]:
                raise HostError(f"{site.fqdn}: after the restore / serves another page than at backup time "
                                f"(sha256 {now['sha256'][:12]}, recorded {served['sha256'][:12]}; a page that "
                                "changes by itself cannot be compared)")
            checks["page"] = {"status": 200, "sha256": now["sha256"]}
        db = rows.get("db")
        if db is not None:
            counts = self.hosts.row_counts(site.db_host, site.names.db_name)
            if counts != db.facts.get("rows", {}):
                raise HostError(f"{site.fqdn}: after the restore the rows per table are {counts}, "
                                f"recorded {db.facts.get('rows')}")
            checks["rows"] = counts
            password = credentials.get(self.store, self.box, site.fqdn).get("db")
            if password:
                from provisioner import verify

                checks["db_login"] = verify.database_login(self.hosting.inventory, site, password)
        checks["at"] = utcnow().isoformat(timespec="seconds")
        return checks
