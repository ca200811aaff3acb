"""After the lab tests: no generated secret anywhere it should not be.

Every password of every office the lab tests of this run used (read back from
their state homes with their keys), every SFTP password hash and TLS private
key made in this process (lab CA keys, ACME site keys) and every ACME account
key (made in this process, and read back from the state homes), searched for in
the state databases (and their events, decoded), the runner artifacts and
everything else in those homes (the credentials sheets aside: showing them is
their purpose), the controller's logs and shared memory, /var/log (journal
included) of every lab host, and the command lines (argv) of every process on
the controller and the lab hosts, sampled while a site is issued, provisioned
and removed. Zero hits.

Named to run after the other lab tests of the directory (test_zz_lab_lifecycle
takes the lab down and up, so it comes after this one).
"""

import json
import secrets
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from provisioner.lab import topology
from provisioner.secretbox import SecretBox
from provisioner.store import open_store
from provisioner.store.models import Credential, Event

# Every lab host: a secret must reach none of their logs or process lists.
LAB_HOSTS = tuple(h.name for h in topology.HOSTS)


def _passwords(home: Path) -> set[str]:
    db, key = home / "state.db", home / "secret.key"
    if not (db.exists() and key.exists()):
        return set()
    store = open_store(f"sqlite:///{db}")
    try:
        with store.session() as session:
            tokens = [row.ciphertext for row in session.query(Credential)]
    finally:
        store.close()
    box = SecretBox(key)
    return {box.open(token) for token in tokens}


def _account_key(home: Path) -> str | None:
    """The home's ACME account key, opened with its state key (it is kept sealed)."""
    sealed, key = home / "acme-account.key", home / "secret.key"
    if not (sealed.exists() and key.exists()):
        return None
    return SecretBox(key).open(sealed.read_text().strip())


def _pem_lines(pem: str) -> list[str]:
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def _needles(generated) -> dict[str, str]:
    """{needle: what it is}; a TLS key is searched for by each line of its PEM body."""
    needles = {}
    for home in generated.homes:
        for password in _passwords(home):
            needles[password] = f"password from {home}"
    for made in generated.sftp_hashes:
        needles[made] = "SFTP password hash"
    for key in generated.tls_keys + generated.acme_site_keys:
        for line in _pem_lines(key):
            needles[line] = "TLS private key"
    accounts = set(generated.acme_account_keys) | {k for h in generated.homes if (k := _account_key(h))}
    for key in accounts:
        for line in _pem_lines(key):
            needles[line] = "ACME account key"
    return needles


def _event_hits(generated, needles) -> list[str]:
    """Needles in the events of every state home, decoded (a JSON escape cannot hide one)."""
    hits = []
    for home in generated.homes:
        db = home / "state.db"
        if not db.exists():
            continue
        store = open_store(f"sqlite:///{db}")
        try:
            with store.session() as session:
                payloads = [(e.kind, json.dumps(e.payload, ensure_ascii=False)) for e in session.query(Event)]
        finally:
            store.close()
        hits += [f"{home} event {kind}: {needles[n]}" for kind, text in payloads for n in needles if n in text]
    return hits


class ArgvSampler:
    """Every command line on the controller and the lab hosts while it runs: /proc read here
    every 50 ms, `ps` on each host every 200 ms (the host's loop ends when its ssh is gone,
    at its next write, or after 15 minutes)."""

    def __init__(self, hosts):
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._local, daemon=True)
        self._remote = {host: subprocess.Popen(
            ["ssh", "-F", str(topology.SSH_CONFIG), host,
             "sudo -n sh -c 'end=$(( $(date +%s) + 900 )); while [ $(date +%s) -lt $end ]; do "
             "ps -eww -o args= || exit; sleep 0.2; done'"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for host in hosts}
        # Read as it comes: a full pipe would stop the host's loop.
        self._readers = [threading.Thread(target=self._read, args=(host, proc), daemon=True)
                         for host, proc in self._remote.items()]

    def _read(self, host, proc):
        for line in proc.stdout:
            self.seen.add(f"{host}: {line.rstrip()}")

    def _local(self):
        while not self._stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    self.seen.add(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    pass
            time.sleep(0.05)

    def __enter__(self):
        for thread in [self._thread, *self._readers]:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for proc in self._remote.values():
            proc.terminate()  # the ssh this sampler started; the remote loop dies on its next write
            proc.wait(timeout=30)
        for thread in self._readers:
            thread.join(timeout=30)
        return False

    def hits(self, needles) -> list[str]:
        return [f"argv {line[:80]}: {needles[n]}" for line in self.seen for n in needles if n in line]


def _controller_files(generated) -> list[Path]:
    roots = [Path("/var/log"), Path("/dev/shm"), *Path(tempfile.gettempdir()).glob("provisioner-*")]
    files = []
    for home in generated.homes:
        sheets = home / "credentials"
        files += [p for p in home.rglob("*") if p.is_file() and sheets not in p.parents]
    for root in roots:
        files += [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return files


def _controller_hits(files, needles) -> list[str]:
    hits = []
    encoded = [(n.encode(), n) for n in needles]
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        hits += [f"{path}: {needles[n]}" for raw, n in encoded if raw in data]
    return hits


def _host_hits(host: str, needles) -> list[str]:
    """Files under the host's /var/log holding any needle (the needles go on stdin, never argv)."""
    result = subprocess.run(
        ["ssh", "-F", str(topology.SSH_CONFIG), host, "sudo -n grep -rlaF -f - /var/log"],
        input="\n".join(needles) + "\n", capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), f"{host}: {result.stderr}"  # 1: nothing found
    return [f"{host}:{line}" for line in result.stdout.splitlines()]


def test_no_generated_secret_in_databases_artifacts_or_logs(office, generated_secrets, lab_host):
    # One TLS site issued by the ACME CA, provisioned and removed while every command line is
    # watched (and, run on its own, something to look for everywhere else).
    canary_argv = f"canary{secrets.token_hex(12)}"
    with ArgvSampler(LAB_HOSTS) as argv:
        time.sleep(1)  # every sampler has started
        request_id = office.through_review("tarakan-simkes.yaml")
        office.approve_without_hook(request_id)
        result = office.hosting.apply([request_id])
        fqdn = result.sites[0]["fqdn"]
        assert office.hosting.certs.rows(fqdn)[0].source == "acme"
        office.hosting.remove([fqdn])
        # The sampler sees a short-lived command line here and on a host (`; true` keeps sh from
        # exec-ing sleep, so the canary stays in its argv).
        subprocess.run(["sh", "-c", "sleep 0.5; true", canary_argv], check=True)
        subprocess.run(["ssh", "-F", str(topology.SSH_CONFIG), "web1", f"sh -c 'sleep 1; true' {canary_argv}"],
                       check=True, timeout=60)
        time.sleep(0.5)
    assert any(canary_argv in line and not line.startswith("web1: ") for line in argv.seen)
    assert any(line.startswith("web1: ") and canary_argv in line for line in argv.seen)
    assert any(line.startswith("web1: ") and "apache2" in line for line in argv.seen)
    needles = _needles(generated_secrets)
    assert any(what.startswith("password") for what in needles.values())
    assert any(what == "ACME account key" for what in needles.values())
    assert generated_secrets.acme_site_keys, "no ACME site key was made in this run"

    # The search itself finds what is there: a canary in a home and in each host's /var/log.
    canary = f"canary{secrets.token_hex(12)}"
    (office.home / "canary.txt").write_text(f"x {canary} y")
    files = _controller_files(generated_secrets)
    assert _controller_hits(files, {canary: "canary"}) == [f"{office.home / 'canary.txt'}: canary"]
    (office.home / "canary.txt").unlink()
    for host in LAB_HOSTS:
        put = subprocess.run(["ssh", "-F", str(topology.SSH_CONFIG), host,
                              "sudo -n tee /var/log/provisioner-canary.log >/dev/null"],
                             input=canary + "\n", capture_output=True, text=True, timeout=60)
        assert put.returncode == 0, put.stderr
        try:
            assert _host_hits(host, {canary: "canary"}) == [f"{host}:/var/log/provisioner-canary.log"]
        finally:
            lab_host(host).run("rm -f /var/log/provisioner-canary.log")

    files = [p for p in files if p.name != "canary.txt"]
    hits = argv.hits(needles) + _event_hits(generated_secrets, needles) + _controller_hits(files, needles)
    for host in LAB_HOSTS:
        hits += _host_hits(host, needles)
    counts = {kind: sum(1 for what in needles.values() if what.startswith(kind))
              for kind in ("password", "SFTP", "TLS", "ACME")}
    print(f"searched {len(needles)} secrets ({counts}) in {len(files)} controller files "
          f"from {len(generated_secrets.homes)} state homes, /var/log of {len(LAB_HOSTS)} lab hosts "
          f"and {len(argv.seen)} command lines")
    assert hits == [], "\n".join(hits)
