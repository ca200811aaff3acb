"""After the lab tests: no generated secret anywhere it should not be.

Every password of every office the lab tests of this run used (read back from
their state homes with their keys), every SFTP password hash and TLS private
key made in this process, searched for in the state databases, the runner
artifacts and everything else in those homes (the credentials sheets aside:
showing them is their purpose), the controller's logs and shared memory, and
/var/log (journal included) of every lab host. Zero hits.

Named to run after the other lab tests of the directory (test_zz_lab_lifecycle
takes the lab down and up, so it comes after this one).
"""

import secrets
import subprocess
import tempfile
from pathlib import Path

from provisioner.lab import topology
from provisioner.secretbox import SecretBox
from provisioner.store import open_store
from provisioner.store.models import Credential

LAB_HOSTS = ("ns1", "ns2", "web1", "db1")


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


def _needles(generated) -> dict[str, str]:
    """{needle: what it is}; a TLS key is searched for by each line of its PEM body."""
    needles = {}
    for home in generated.homes:
        for password in _passwords(home):
            needles[password] = f"password from {home}"
    for made in generated.sftp_hashes:
        needles[made] = "SFTP password hash"
    for key in generated.tls_keys:
        for line in key.splitlines():
            if not line.startswith("-----"):
                needles[line] = "TLS private key"
    return needles


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
    needles = _needles(generated_secrets)
    if not any(what.startswith("password") for what in needles.values()):
        # Run on its own: make one site so there is something to look for.
        request_id = office.through_review("tarakan-simkes.yaml")
        office.approve_without_hook(request_id)
        office.hosting.apply([request_id])
        needles = _needles(generated_secrets)
    assert any(what.startswith("password") for what in needles.values())

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
    hits = _controller_hits(files, needles)
    for host in LAB_HOSTS:
        hits += _host_hits(host, needles)
    counts = {kind: sum(1 for what in needles.values() if what.startswith(kind))
              for kind in ("password", "SFTP", "TLS")}
    print(f"searched {len(needles)} secrets ({counts}) in {len(files)} controller files "
          f"from {len(generated_secrets.homes)} state homes and /var/log of {len(LAB_HOSTS)} lab hosts")
    assert hits == []
