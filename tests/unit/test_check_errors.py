"""Failures below the saga carry what it needs to contain them: the toolkit's own error and its flags.

Verification that cannot connect is a VerificationFailed (so the failure is
recorded, never a raw socket or urllib3 error); a refused PowerDNS key changed
nothing (`unchanged`); an API or host that does not answer is not about one
site (`connection`, `unreachable`), so the saga does not retry per site.
"""

import inspect
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest

from provisioner import verify
from provisioner.errors import ConfigError, HostError
from provisioner.inventory import Host, Inventory
from provisioner.runner import check_result
from provisioner.targets import dns as dns_target
from provisioner.targets.dns import DnsTarget

SITE = SimpleNamespace(fqdn="simkes.tarakankota.go.id", public_ip="127.0.0.1", web_host="web1", tls=False,
                       names=SimpleNamespace(user="simkes"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_http_check_that_cannot_connect_is_a_verification_failure(monkeypatch):
    pool, port = verify.urllib3.HTTPConnectionPool, closed_port()  # nothing listens there
    monkeypatch.setattr(verify.urllib3, "HTTPConnectionPool", lambda host, _, **kw: pool(host, port, **kw))
    with pytest.raises(verify.VerificationFailed, match="simkes.tarakankota.go.id: no http answer at 127.0.0.1"):
        verify.http_page(SITE, None)


def test_an_sftp_check_that_cannot_connect_is_a_verification_failure(tmp_path, monkeypatch):
    key = paramiko.ECDSAKey.generate()
    known = tmp_path / "known_hosts"
    known.write_text(f"127.0.0.1,web1 {key.get_name()} {key.get_base64()}\n")
    web = Host("web1", ("web",), {"ansible_host": "127.0.0.1",
                                  "ansible_ssh_common_args": f"-o UserKnownHostsFile={known}"})
    monkeypatch.setattr(verify, "SFTP_PORT", closed_port())
    with pytest.raises(verify.VerificationFailed, match="SFTP login as simkes failed: .*[Cc]onnection refused"):
        verify.sftp_login(SITE, "x", web)


def test_the_sftp_check_is_given_its_web_host_and_reads_no_configuration():
    assert inspect.signature(verify.sftp_login).parameters["web"].default is inspect.Parameter.empty


@pytest.fixture
def refusing_api(tmp_path):
    """A PowerDNS API stand-in on 127.0.0.1 that refuses every key."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server interface
            body = json.dumps({"error": "Unauthorized"}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_PATCH = do_GET

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    server.shutdown()
    server.server_close()


def dns_target_at(url: str, tmp_path: Path) -> DnsTarget:
    key = tmp_path / "pdns-api-key"
    key.write_text("not-the-key")
    ns1 = Host("ns1", ("nameservers",), {"pdns_role": "primary", "pdns_api_url": url, "pdns_api_key_file": str(key)})
    return DnsTarget(Inventory(path=Path("inventory"), hosts={"ns1": ns1}))


def test_a_refused_api_key_changed_nothing(refusing_api, tmp_path):
    with pytest.raises(ConfigError, match=r"the API key was refused \(HTTP 401\)") as caught:
        dns_target_at(refusing_api, tmp_path).read(["tarakankota.go.id"])
    # So an undo does not count DNS among what may have changed.
    assert caught.value.unchanged is True


def test_an_api_that_does_not_answer_is_a_connection_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(dns_target, "_pause", lambda seconds: None)
    with pytest.raises(HostError, match="connection refused") as caught:
        dns_target_at(f"http://127.0.0.1:{closed_port()}/api/v1", tmp_path).read(["tarakankota.go.id"])
    assert caught.value.connection is True


def test_an_unreachable_host_is_marked_so_and_a_failed_task_is_not():
    processed = {"processed": {"web1": 1, "db1": 1}}
    with pytest.raises(HostError, match="unreachable: db1") as dark:
        check_result("failed", 4, processed | {"dark": {"db1": 1}}, {"web1", "db1"})
    with pytest.raises(HostError, match="failed: web1") as failed:
        check_result("failed", 2, processed | {"failures": {"web1": 1}}, {"web1", "db1"})
    assert dark.value.unreachable is True and failed.value.unreachable is False
