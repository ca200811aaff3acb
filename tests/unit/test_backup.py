"""Backups without the lab: a local restic repository in tmp_path, fake site hosts."""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from provisioner import naming
from provisioner.backup import hosts as backup_hosts, records, repository, state, status
from provisioner.backup.repository import Policy, Repository, summary
from provisioner.backup.run import Backups
from provisioner.config import Backup, Config, default_offices
from provisioner.errors import HostError, StateError, UserError
from provisioner.site import DesiredSite
from provisioner.store import open_store
from provisioner.store.models import BackupSnapshot, Event, RequestRow, SiteRow

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")
ZONE = "tarakankota.go.id"
UTC = timezone.utc


def _times(repo: Repository) -> list[str]:
    return sorted(s["time"][:10] for s in repo.snapshots())


def test_retention_keeps_exactly_the_policy_on_snapshots_with_given_dates(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    repo = Repository(str(tmp_path / "repo"), "kata-sandi-uji")
    repo.init()
    dates = ["2025-11-15", "2025-11-30", "2025-12-14", "2025-12-31", "2026-01-10", "2026-01-18", "2026-01-25"]
    dates += [f"2026-01-{d}" for d in range(27, 32)] + [f"2026-02-0{d}" for d in range(1, 10)]
    # restic spends most of each call deriving the repository key: the snapshots are made side by side.
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda day: repo.backup_stdin(day.encode(), "situs.example/files.tar", "situs.example",
                                                    {"kind": "files"}, at=datetime.fromisoformat(f"{day} 03:00:00")),
                      dates))
    assert len(_times(repo)) == 21
    repo.forget(Policy(daily=7, weekly=4, monthly=6), prune=True)
    # By hand: daily 7 = Feb 3..9; weekly 4 (ISO weeks, newest of each) = Feb 9 (W7), Feb 8 (W6),
    # Feb 1 (W5, Jan 26-Feb 1), Jan 25 (W4); monthly 6 = the newest of Feb, Jan, Dec, Nov (only four
    # months have snapshots) = Feb 9, Jan 31, Dec 31, Nov 30.
    assert _times(repo) == ["2025-11-30", "2025-12-31", "2026-01-25", "2026-01-31", "2026-02-01",
                            "2026-02-03", "2026-02-04", "2026-02-05", "2026-02-06", "2026-02-07",
                            "2026-02-08", "2026-02-09"]


def _config(tmp_path, **backup) -> Config:
    return Config(offices=default_offices(), state_dir=tmp_path / "home",
                  backup=Backup(repository=str(tmp_path / "repos" / "{office}"), **backup))


def _site(label: str, database: bool = True) -> DesiredSite:
    return DesiredSite(request_id=f"HST-2026-{abs(hash(label)) % 10000:04d}", office="tarakan", label=label,
                       zone=ZONE, names=naming.site_names(label, ZONE), web_host="web1", web_address="10.77.0.21",
                       db_host="db1" if database else None, public_ip="203.0.113.10", dedicated_ip=False, php=True,
                       php_version="8.2", database=database, tls=False, quota_mb=100, bandwidth_kbps=0)


class FakeHosting:
    def __init__(self, sites):
        self.sites = {s.fqdn: s for s in sites}
        self.inventory = None

    def recorded_sites(self, fqdns):
        return [self.sites[f] for f in fqdns]

    def ca_file(self):
        return None


class FakeHosts:
    """The site hosts: content from memory into restic; a site's dump can be made to fail."""

    def __init__(self, failing=()):
        self.failing = set(failing)

    def file_facts(self, site):
        return {"release": "20260101-030000-abcdef", "index": "public/index.html", "index_sha256": "0" * 64}

    def served(self, site):
        return {"status": 200, "sha256": "1" * 64}

    def files_into(self, site, repo, args):
        _, out, _ = repo.run(*args, input=f"files of {site.fqdn}".encode())
        return summary(out, repo.url)

    def db_into(self, site, repo, args):
        if site.fqdn in self.failing:
            raise HostError("db1: mysqldump exited 2: Can't connect to local server through socket")
        _, out, _ = repo.run(*args, input=f"-- dump of {site.names.db_name}".encode())
        return summary(out, repo.url)

    def row_counts(self, db_host, db_name):
        return {"berita": 3}


@pytest.fixture
def office(tmp_path, monkeypatch):
    monkeypatch.delenv("PROVISIONER_HOME", raising=False)
    monkeypatch.delenv("PROVISIONER_STATE_URL", raising=False)
    monkeypatch.delenv(state.ENV_PASSPHRASE, raising=False)
    config = _config(tmp_path)
    store = open_store(config.resolved_state_url())
    sites = [_site("arsip"), _site("berita"), _site("cuaca", database=False)]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with store.session() as session:
        for s in sites:
            session.add(RequestRow(id=s.request_id, service="hosting", office="tarakan", fqdn=s.fqdn, sha256="0" * 64,
                                   content=b"", source="t", submitted_at=now, state="done", decision="approve"))
            session.flush()
            session.add(SiteRow(fqdn=s.fqdn, request_id=s.request_id, office="tarakan", zone=ZONE, label=s.label,
                                state="provisioned", web_host="web1", db_host=s.db_host, public_ip=s.public_ip,
                                dedicated_ip=False, config={}, created_at=now, provisioned_at=now, updated_at=now))
    yield config, store, sites
    store.close()


def test_the_plan_names_sites_hosts_and_what_and_a_changed_plan_is_refused(office):
    config, store, sites = office
    work = Backups(config, store, hosting=FakeHosting(sites), hosts=FakeHosts())
    planned = work.run()
    text = planned.render()
    assert "backup of 3 site(s) and the toolkit's state" in text
    assert f"files  web1:/srv/www/arsip.{ZONE} (tar, nice/ionice)" in text
    assert f"db     db1: mysqldump --single-transaction {sites[0].names.db_name}" in text
    assert "cuaca" in text and text.count("mysqldump") == 2
    assert "keep 7 daily, 4 weekly, 6 monthly" in text and "key file is not backed up: no passphrase" in text
    assert planned.repositories == {"provisioner": str(config.backup.repository).format(office="provisioner"),
                                    "tarakan": str(config.backup.repository).format(office="tarakan")}
    with pytest.raises(StateError, match="changed since it was reviewed"):
        work.run(apply=True, checksum="0" * 64)
    with store.session() as session:
        assert not session.query(BackupSnapshot).count()


def test_one_failing_site_does_not_stop_the_others_and_no_password_reaches_argv_or_events(office, monkeypatch):
    config, store, sites = office
    seen = []
    real_run, real_popen = subprocess.run, subprocess.Popen

    def spy_run(argv, *args, **kwargs):
        seen.append((list(argv), kwargs.get("env") or {}))
        return real_run(argv, *args, **kwargs)

    class SpyPopen(real_popen):
        def __init__(self, argv, *args, **kwargs):
            seen.append((list(argv), kwargs.get("env") or {}))
            super().__init__(argv, *args, **kwargs)

    monkeypatch.setattr(repository.subprocess, "run", spy_run)
    monkeypatch.setattr(repository.subprocess, "Popen", SpyPopen)
    work = Backups(config, store, hosting=FakeHosting(sites), hosts=FakeHosts(failing={sites[1].fqdn}))
    planned = work.plan()
    result = work.run(apply=True, checksum=planned.checksum)
    outcome = {s.fqdn: s for s in result.sites}
    assert not result.ok and [s.fqdn for s in result.failed] == [sites[1].fqdn]
    assert "mysqldump exited 2" in outcome[sites[1].fqdn].error
    assert set(outcome[sites[0].fqdn].snapshots) == {"files", "db"}
    assert set(outcome[sites[2].fqdn].snapshots) == {"files"}
    assert "id" in result.state["state"] and "left_out" in result.state["key"]
    with store.session() as session:
        kinds = sorted((r.fqdn or "-", r.kind) for r in session.query(BackupSnapshot))
        failed = [e.payload for e in session.query(Event).filter(Event.kind == "backup_failed")]
        payloads = json.dumps([e.payload for e in session.query(Event)])
        sealed = session.query(records.BackupRepository).filter_by(office="tarakan").one().password_sealed
    # The failed site's files were kept; its dump was not; the others are whole.
    assert kinds == sorted([("-", "state"), (sites[0].fqdn, "files"), (sites[0].fqdn, "db"),
                            (sites[1].fqdn, "files"), (sites[2].fqdn, "files")])
    assert failed[0]["fqdn"] == sites[1].fqdn and failed[0]["done"] == ["files"]
    # Every snapshot is tagged with the site, its request, the release, the kind and the run.
    repo = work.repository("tarakan")
    tags = {t for s in repo.snapshots(host=sites[0].fqdn) for t in s["tags"]}
    assert {f"site={sites[0].fqdn}", f"request={sites[0].request_id}", "release=20260101-030000-abcdef",
            "kind=files", "kind=db", f"run={result.run_id}"} <= tags
    # The repository password went to restic in its environment only.
    password = repo._password
    restic_calls = [(argv, env) for argv, env in seen if argv[0] == "restic"]
    assert len(password) == 32 and len(restic_calls) > 10
    assert all(password not in " ".join(argv) for argv, _ in seen)
    assert all(env.get("RESTIC_PASSWORD") == password for argv, env in restic_calls if str(argv[2]) == repo.url)
    assert password not in repr(repo) and password not in payloads and password not in sealed


def test_the_key_file_is_sealed_with_the_passphrase_or_left_out_with_the_reason(office, monkeypatch):
    config, store, sites = office
    key = b"a-key-that-decrypts-every-password\n"
    sealed = state.seal_key(key, "frasa sandi yang panjang")
    assert key not in sealed and state.open_key(sealed, "frasa sandi yang panjang") == key
    with pytest.raises(UserError, match="wrong passphrase"):
        state.open_key(sealed, "salah")
    assert "PROVISIONER_BACKUP_PASSPHRASE" in state.key_left_out_reason(config)
    monkeypatch.setenv(state.ENV_PASSPHRASE, "frasa sandi yang panjang")
    assert state.key_left_out_reason(config) is None
    work = Backups(config, store, hosting=FakeHosting(sites), hosts=FakeHosts())
    repo = work.repository("provisioner")
    done = work.backup_state(repo, records.new_run_id())
    assert set(done) == {"state", "key"} and "id" in done["key"]
    dumped = repo.run("dump", done["key"]["id"], "/state/secret.key.sealed")[1].encode()
    assert state.open_key(dumped, "frasa sandi yang panjang") == config.key_file().read_bytes()


def test_audit_reports_stale_and_unverified_sites_once_backups_are_set_up(office):
    config, store, sites = office
    with store.session() as session:
        rows = list(session.query(SiteRow))
    now = datetime.now(UTC)
    # No repository yet: backups are not set up for the office, nothing to report.
    assert status.findings(store, config, rows, now=now) == []
    work = Backups(config, store, hosting=FakeHosting(sites), hosts=FakeHosts())
    work.run(fqdn=sites[0].fqdn, apply=True)
    found = {(f[0], f[1]) for f in status.findings(store, config, rows, now=now)}
    assert found == {(sites[0].fqdn, "backup-unverified")} | {(s.fqdn, k) for s in sites[1:]
                                                               for k in ("backup-stale", "backup-unverified")}
    # Two days on (the window is 36 h), the one backup is stale too.
    later = {(f[0], f[1]) for f in status.findings(store, config, rows, now=now + timedelta(days=2))}
    assert (sites[0].fqdn, "backup-stale") in later
    with store.session() as session:
        proven = list(session.query(BackupSnapshot).filter_by(fqdn=sites[0].fqdn))
    records.mark_verified(store, proven, "backup_verified")
    found_now = {(f[0], f[1]) for f in status.findings(store, config, rows, now=now)}
    assert not {f for f in found_now if f[0] == sites[0].fqdn}
    # A site younger than the window is not reported yet.
    assert status.findings(store, config, rows, now=datetime(2026, 1, 1, 12, tzinfo=UTC)) == []


def _tar(entries) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.uname = info.gname = "sumber"
            info.mtime = 1767236400  # 2026-01-01 03:00 UTC
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o750
                archive.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, data
                archive.addfile(info)
            else:
                info.size, info.mode = len(data), 0o4755
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.skipif(os.geteuid() != 0, reason="the extraction maps owners: root only")
def test_the_restore_extraction_swaps_the_home_and_refuses_paths_out_of_it(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "lama.txt").write_text("isi lama")
    spec = json.dumps({"home": str(home), "user": "daemon", "source_user": "sumber"})
    good = _tar([(".", "dir", None), ("./public", "dir", None), ("./public/index.html", "file", b"halo"),
                 ("./current", "link", "public")])
    done = subprocess.run([sys.executable, "-c", backup_hosts._EXTRACT, spec], input=good, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"files": 1, "bytes": 4}
    assert sorted(p.name for p in home.iterdir()) == ["current", "public"]
    index = home / "public" / "index.html"
    assert index.read_bytes() == b"halo" and oct(index.stat().st_mode & 0o7777) == "0o755"
    assert index.owner() == "daemon" and os.readlink(home / "current") == "public"
    assert index.stat().st_mtime == (home / "public").stat().st_mtime == 1767236400
    for evil in (_tar([("../luar.txt", "file", b"x")]),
                 _tar([("./public", "link", "/etc"), ("./public/passwd", "file", b"x")])):
        done = subprocess.run([sys.executable, "-c", backup_hosts._EXTRACT, spec], input=evil, capture_output=True)
        assert done.returncode != 0 and b"the home is as it was" in done.stderr
        assert sorted(p.name for p in home.iterdir()) == ["current", "public"]
        assert not (tmp_path / "luar.txt").exists()


class TarHosts(FakeHosts):
    """Fake hosts whose files are a real tar with an index page; scratch databases are counted."""

    INDEX = b"<h1>Dinas Kesehatan</h1>\n"

    def __init__(self):
        super().__init__()
        self.dropped = []

    def file_facts(self, site):
        import hashlib

        return {"release": None, "index": "public/index.html", "index_sha256": hashlib.sha256(self.INDEX).hexdigest()}

    def files_into(self, site, repo, args):
        data = _tar([(".", "dir", None), ("./public", "dir", None), ("./public/index.html", "file", self.INDEX),
                     ("./public/unduhan.bin", "file", os.urandom(200_000))])
        _, out, _ = repo.run(*args, input=data)
        return summary(out, repo.url)

    def restore_db(self, repo, dump_args, db_host, db_name):
        _, out, _ = repo.run(*dump_args)
        assert out.startswith("-- dump of") and db_name.startswith("restorecheck_")

    def row_counts(self, db_host, db_name):
        return {"berita": 3}

    def drop_db(self, db_host, db_name):
        self.dropped.append(db_name)


def test_verify_proves_a_sample_by_scratch_restores_and_finds_a_corrupted_pack(office):
    from provisioner.backup.verify import Verifier

    config, store, sites = office
    fake = TarHosts()
    Backups(config, store, hosting=FakeHosting(sites), hosts=fake).run(fqdn=sites[0].fqdn, apply=True)
    config = config.model_copy(update={"backup": config.backup.model_copy(update={"read_data": "all"})})
    verifier = Verifier(config, store, hosting=FakeHosting(sites), hosts=fake)
    result = verifier.verify(sites[0].fqdn, sample=1)
    assert result.ok, result.as_dict()
    assert result.sites[sites[0].fqdn]["files"]["index"] == "public/index.html"
    assert result.sites[sites[0].fqdn]["db"]["rows"] == {"berita": 3}
    assert len(fake.dropped) == 1 and fake.dropped[0].startswith("restorecheck_")
    assert all(r.verified_at for r in records.snapshots(store, sites[0].fqdn))
    # One byte changed in a pack: restic check reads it back and fails.
    data = Path(config.backup.repository.format(office="tarakan")) / "data"
    packs = sorted((p for p in data.rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)
    with open(packs[0], "r+b") as pack:
        pack.seek(100)
        byte = pack.read(1)
        pack.seek(100)
        pack.write(bytes([byte[0] ^ 0xFF]))
    broken = verifier.verify(sites[0].fqdn, sample=0)
    check = broken.checks[config.backup.repository.format(office="tarakan")]
    assert not broken.ok and not check["ok"] and f"Pack ID does not match, want {packs[0].name}" in check["output"]


@pytest.mark.parametrize("state_url", ["postgresql"], indirect=True)
def test_a_postgresql_state_is_dumped_into_the_repository_without_its_password_in_argv(state_url, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.delenv("PROVISIONER_HOME", raising=False)
    monkeypatch.delenv(state.ENV_PASSPHRASE, raising=False)
    config = _config(tmp_path).model_copy(update={"state_url": state_url})
    store = open_store(state_url)
    seen = []
    real = subprocess.Popen

    class Spy(real):
        def __init__(self, argv, *args, **kwargs):
            seen.append(list(argv))
            super().__init__(argv, *args, **kwargs)

    monkeypatch.setattr(state.subprocess, "Popen", Spy)
    try:
        work = Backups(config, store, hosting=FakeHosting([]), hosts=FakeHosts())
        repo = work.repository("provisioner")
        done = work.backup_state(repo, records.new_run_id())
        assert "error" not in done, done
        dumped = repo.run("dump", done["state"]["id"], "/state/state.sql")[1]
        assert "CREATE TABLE public.backup_snapshots" in dumped
        from sqlalchemy.engine import make_url

        password = make_url(state_url).password
        assert password and all(password not in " ".join(argv) for argv in seen if argv[0] == "pg_dump")
    finally:
        store.close()
