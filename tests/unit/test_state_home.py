"""The state home is 0700; state.db, its journals and secret.key are 0600."""

import os
import stat

import pytest

from provisioner.config import load_config
from provisioner.errors import ConfigError
from provisioner.secretbox import SecretBox
from provisioner.store import open_store
from provisioner.store.models import Lock


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask():
    # The usual umask 022 would leave files 0644 and directories 0755.
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("PROVISIONER_HOME", str(home))
    monkeypatch.delenv("PROVISIONER_STATE_URL", raising=False)
    monkeypatch.delenv("PROVISIONER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return home


def _write(store):
    from provisioner.sop.sla import utcnow

    with store.session() as session:
        session.add(Lock(name="site:x", holder="h:1:t", acquired_at=utcnow()))


def _open_write_and_check(home):
    """Open the home as the toolkit does, write to it, and find every file private."""
    config = load_config()
    store = open_store(config.resolved_state_url())
    SecretBox(config.key_file())
    _write(store)
    assert mode(home) == 0o700
    for name in ("state.db", "secret.key", *(p.name for p in home.glob("state.db-*"))):
        assert mode(home / name) == 0o600, name
    store.close()


def test_a_new_home_is_private_from_the_start(home, loose_umask):
    _open_write_and_check(home)


def test_a_home_found_open_is_narrowed_when_opened(home, loose_umask):
    config = load_config()
    store = open_store(config.resolved_state_url())
    SecretBox(config.key_file())
    store.close()
    os.chmod(home, 0o755)
    os.chmod(home / "state.db", 0o644)
    os.chmod(home / "secret.key", 0o644)
    (home / "state.db-wal").touch(0o644)
    os.chmod(home / "state.db-wal", 0o644)
    _open_write_and_check(home)
    assert (home / "state.db-wal").exists()


def test_an_open_home_owned_by_someone_else_is_refused_with_what_to_do(home, monkeypatch):
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    owner = home.stat().st_uid
    # As if another user ran the toolkit: the home is not ours to tighten.
    monkeypatch.setattr("provisioner.config.os.geteuid", lambda: owner + 1)
    config = load_config()
    with pytest.raises(ConfigError) as caught:
        config.private_home()
    message = str(caught.value)
    assert str(home) in message and "0755" in message and f"uid {owner}" in message
    assert "chmod 700" in message and "PROVISIONER_HOME" in message
    assert mode(home) == 0o755
