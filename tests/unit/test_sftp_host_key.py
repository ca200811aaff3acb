"""SFTP verification logs in only to a server showing the pinned host key (paramiko server on 127.0.0.1)."""

import socket
import threading
from types import SimpleNamespace

import paramiko
import pytest

from provisioner import verify
from provisioner.inventory import Host


class _Server(paramiko.ServerInterface):
    def __init__(self, seen):
        self.seen = seen

    def get_allowed_auths(self, username):
        return "password"

    def check_auth_password(self, username, password):
        self.seen.append((username, password))
        return paramiko.AUTH_FAILED


@pytest.fixture
def sshd(monkeypatch):
    """One-connection SSH server with its own ECDSA host key; records password attempts."""
    key = paramiko.ECDSAKey.generate()
    listener = socket.create_server(("127.0.0.1", 0))
    seen, done = [], threading.Event()

    def serve():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        transport = paramiko.Transport(conn)
        transport.add_server_key(key)
        try:
            transport.start_server(server=_Server(seen))
            transport.accept(timeout=5)
            done.wait(10)
        except (paramiko.SSHException, EOFError, OSError):
            pass
        finally:
            transport.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    monkeypatch.setattr(verify, "SFTP_PORT", listener.getsockname()[1])
    yield SimpleNamespace(key=key, seen=seen)
    done.set()
    listener.close()
    thread.join(5)


def _web(tmp_path, key):
    known = tmp_path / "known_hosts"
    known.write_text(f"127.0.0.1,web1 {key.get_name()} {key.get_base64()}\n")
    return Host("web1", ("web",), {"ansible_host": "127.0.0.1",
                                   "ansible_ssh_common_args": f"-o UserKnownHostsFile={known}"})


SITE = SimpleNamespace(fqdn="simkes.tarakankota.go.id", public_ip="127.0.0.1", web_host="web1",
                       names=SimpleNamespace(user="simkes"))


def test_a_wrong_host_key_fails_before_the_password_is_sent(sshd, tmp_path):
    impostor_pin = paramiko.ECDSAKey.generate()  # known_hosts pins another key than the server's
    with pytest.raises(verify.VerificationFailed, match="not the one pinned for web1") as err:
        verify.sftp_login(SITE, "Sup3rSecretPassw0rd", _web(tmp_path, impostor_pin))
    assert "no password was sent" in str(err.value) and "Sup3rSecret" not in str(err.value)
    assert sshd.seen == []


def test_the_pinned_host_key_lets_the_login_go_on(sshd, tmp_path):
    with pytest.raises(verify.VerificationFailed, match="SFTP login as simkes failed"):
        verify.sftp_login(SITE, "Sup3rSecretPassw0rd", _web(tmp_path, sshd.key))
    assert sshd.seen == [("simkes", "Sup3rSecretPassw0rd")]


def test_no_pinned_key_for_the_host_is_a_clear_failure(tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    web = Host("web1", ("web",), {"ansible_host": "127.0.0.1",
                                  "ansible_ssh_common_args": f"-o UserKnownHostsFile={known}"})
    with pytest.raises(verify.VerificationFailed, match="no host key pinned for 127.0.0.1"):
        verify.sftp_login(SITE, "x", web)
