"""`provision backup verify`: restic's check, and test restores of a sample of sites.

The check reads back part (or all) of the packs (`backup.read_data`), so a
damaged pack is found. Then, for `backup.verify_sample` sites (never proven
ones first, then the longest unproven): the latest files snapshot is
extracted into a scratch directory on the controller and its index page
checked against the sha256 recorded at backup time; the dump is loaded into a
scratch database `restorecheck_<random>` on the site's database host, whose
rows per table must equal those recorded, and which is dropped afterwards,
also on failure. The result is recorded per snapshot (verified_at) and as an event.
"""

import hashlib
import secrets
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import select

from provisioner.backup import records, stream
from provisioner.backup.run import Backups
from provisioner.errors import HostError, ProvisionerError
from provisioner.store.events import add_event
from provisioner.store.models import BackupRepository


@dataclass
class VerifyResult:
    checks: dict = field(default_factory=dict)  # repository -> {"ok": bool, "output": str}
    sites: dict = field(default_factory=dict)  # fqdn -> {"ok": bool, ...}

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks.values()) and all(s["ok"] for s in self.sites.values())

    def as_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}


class Verifier(Backups):
    def verify(self, fqdn: str | None = None, sample: int | None = None) -> VerifyResult:
        result = VerifyResult()
        rows = self.live_rows(fqdn)
        offices = sorted({r.office for r in rows} | (self._state_office() if fqdn is None else set()))
        repos = {}
        for office in offices:
            try:
                repos[office] = repo = self.repository(office)
                ok, output = repo.check(self.config.backup.read_data)
            except ProvisionerError as err:
                ok, output = False, str(err)
            result.checks[records.repository_url(self.config, office)] = {"ok": ok, "output": output}
        chosen = self._sample(rows, self.config.backup.verify_sample if sample is None else sample)
        desired = self.sites([r.fqdn for r in chosen])
        for row in chosen:
            if row.office not in repos:
                result.sites[row.fqdn] = {"ok": False, "error": "the repository could not be opened"}
                continue
            result.sites[row.fqdn] = self.verify_site(desired[row.fqdn], repos[row.office])
        with self.store.session() as session:
            add_event(session, None, "backup_verify", source=self.source, ok=result.ok,
                      checks={k: v["ok"] for k, v in result.checks.items()},
                      sites={k: v["ok"] for k, v in result.sites.items()})
        return result

    def _state_office(self) -> set[str]:
        """The toolkit's own repository, once a run has made it."""
        with self.store.session() as session:
            made = session.scalar(select(BackupRepository.url).where(BackupRepository.office == records.STATE_OFFICE))
        return {records.STATE_OFFICE} if made else set()

    def _sample(self, rows, count: int):
        """Sites with a backup, never proven first, then the longest since proven."""
        scored = []
        for row in rows:
            snaps = records.snapshots(self.store, row.fqdn)
            if not snaps:
                continue
            proven = max((s.verified_at for s in snaps if s.verified_at), default=None)
            scored.append((proven is not None, proven.timestamp() if proven else 0, row.fqdn, row))
        return [item[-1] for item in sorted(scored)[:count]]

    def verify_site(self, site, repo) -> dict:
        snaps = records.snapshots(self.store, site.fqdn)
        run_id = next((s.run_id for s in snaps if s.kind == "files"), None)
        rows = {s.kind: s for s in snaps if s.run_id == run_id}
        out = {"ok": False, "run": run_id}
        try:
            if "files" in rows:
                out["files"] = self.scratch_files(repo, site.fqdn, rows["files"])
            if "db" in rows:
                out["db"] = self.scratch_db(repo, site, rows["db"])
            out["ok"] = True
        except ProvisionerError as err:
            out["error"] = str(err)
            with self.store.session() as session:
                add_event(session, site.request_id, "backup_verify_failed", source=self.source, fqdn=site.fqdn,
                          run=run_id, reason=str(err)[:1000])
            return out
        records.mark_verified(self.store, list(rows.values()), "backup_verified", source=self.source,
                              fqdn=site.fqdn, run=run_id)
        return out

    def scratch_files(self, repo, fqdn: str, row) -> dict:
        """The tar extracted into a scratch directory (removed after); the index page's sha256 checked."""
        with tempfile.TemporaryDirectory(prefix="restorecheck-", dir=self.config.private_home()) as scratch:
            archive = Path(scratch) / "files.tar"
            with open(archive, "wb") as out:
                stream.restic_to_file(repo, ["dump", row.snapshot_id, f"/{fqdn}/files.tar"], out)
            target = Path(scratch) / "home"
            target.mkdir()
            try:
                with tarfile.open(archive) as tar:
                    count = len(tar.getmembers())
                    tar.extractall(target, filter="tar")
            except (tarfile.TarError, OSError) as err:
                raise HostError(f"{fqdn}: snapshot {row.snapshot_id} does not extract: {err}") from None
            archive.unlink()
            index, expected = row.facts.get("index"), row.facts.get("index_sha256")
            if index and expected:
                page = (target / index).resolve()
                inside = page.is_relative_to(target.resolve())
                got = hashlib.sha256(page.read_bytes()).hexdigest() if inside and page.is_file() else None
                if got != expected:
                    raise HostError(f"{fqdn}: {index} in snapshot {row.snapshot_id} has sha256 "
                                    f"{(got or 'missing')[:12]}, recorded {expected[:12]}")
            return {"snapshot": row.snapshot_id, "entries": count, "index": index}

    def scratch_db(self, repo, site, row) -> dict:
        """The dump loaded into restorecheck_<random> on the site's database host, counted, dropped."""
        scratch = f"restorecheck_{secrets.token_hex(4)}"
        try:
            self.hosts.restore_db(repo, ["dump", row.snapshot_id, f"/{site.fqdn}/db.sql"], site.db_host, scratch)
            counts = self.hosts.row_counts(site.db_host, scratch)
        finally:
            self.hosts.drop_db(site.db_host, scratch)
        expected = row.facts.get("rows", {})
        if counts != expected:
            raise HostError(f"{site.fqdn}: the dump of snapshot {row.snapshot_id} loads {counts} rows per table, "
                            f"recorded {expected}")
        return {"snapshot": row.snapshot_id, "rows": counts}
