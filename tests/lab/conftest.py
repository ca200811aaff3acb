"""Lab tests run against the real lab hosts; they need `provision lab up`.

Every test here first checks that the lab is up (its bridge carries the lab
networks), so no packet for a lab address leaves the machine when it is down.
With PROVISIONER_REQUIRE_LAB=1 (as `make test` sets) a down lab is an error,
not a skip.
"""

import os
from pathlib import Path

import pytest
import testinfra

from provisioner.lab import network, topology

from labkit import Office


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.lab)


def require_lab() -> None:
    """Skip (or fail, under PROVISIONER_REQUIRE_LAB) unless the lab's bridge is up."""
    if os.geteuid() != 0:
        pytest.skip("lab tests run as root")
    # The bridge alone, as lifecycle.status() decides `bridge`: status() also probes every host
    # (about a second), and this runs before every lab test.
    if not network.bridge_addresses():
        message = "the lab is down (run `provision lab up`)"
        if os.environ.get("PROVISIONER_REQUIRE_LAB"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(autouse=True)
def lab_up():
    require_lab()


@pytest.fixture(scope="session")
def lab_host():
    """testinfra hosts reached over SSH with the lab's ssh_config, as root via sudo."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = testinfra.get_host(f"ssh://{name}", ssh_config=str(topology.SSH_CONFIG), sudo=True)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def generated_secrets():
    """What this run made that must never leak: every office's state home (its passwords are
    read back from it), and the SFTP hashes, TLS private keys (lab CA and ACME site keys) and
    ACME account keys made in this process.
    test_zz_hardening_secrets.py searches for all of them at the end."""
    from types import SimpleNamespace

    from provisioner import acme, credentials, tls

    made = SimpleNamespace(homes=[], sftp_hashes=[], tls_keys=[], acme_site_keys=[], acme_account_keys=[])
    hash_of, issue = credentials.sftp_hash, tls.issue
    site_key, account_key = acme.new_site_key, acme.new_account_key

    def recorded_site_key():
        made.acme_site_keys.append(site_key())
        return made.acme_site_keys[-1]

    def recorded_account_key(*args, **kwargs):
        made.acme_account_keys.append(account_key(*args, **kwargs))
        return made.acme_account_keys[-1]

    def recorded_hash(password):
        made.sftp_hashes.append(hash_of(password))
        return made.sftp_hashes[-1]

    def recorded_issue(*args, **kwargs):
        bundle = issue(*args, **kwargs)
        made.tls_keys.append(bundle.key)
        return bundle

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(credentials, "sftp_hash", recorded_hash)
        patch.setattr(tls, "issue", recorded_issue)
        patch.setattr(acme, "new_site_key", recorded_site_key)
        patch.setattr(acme, "new_account_key", recorded_account_key)
        yield made


@pytest.fixture
def office(tmp_path, monkeypatch, generated_secrets):
    generated_secrets.homes.append(tmp_path)  # pytest keeps tmp_path until the session ends
    monkeypatch.setenv("PROVISIONER_HOME", str(tmp_path))
    monkeypatch.delenv("PROVISIONER_STATE_URL", raising=False)
    monkeypatch.delenv("PROVISIONER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    o = Office(tmp_path)
    yield o
    o.cleanup()


@pytest.fixture(scope="module")
def module_office(tmp_path_factory, generated_secrets):
    """An office like `office`, shared by the tests of one module (module fixtures are set
    up before the autouse `lab_up`, so it checks the lab itself); its sites are removed at
    the end of the module."""
    require_lab()
    home = tmp_path_factory.mktemp("office")
    generated_secrets.homes.append(home)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROVISIONER_HOME", str(home))
        patch.delenv("PROVISIONER_STATE_URL", raising=False)
        patch.delenv("PROVISIONER_CONFIG", raising=False)
        patch.chdir(home)
        office = Office(home)
        try:
            yield office
        finally:
            office.cleanup()
