"""The PowerDNS client's failures, against a small HTTP server on 127.0.0.1 that misbehaves on cue.

Each failure becomes the toolkit's own error naming the server, the zone and
the cause; transient ones (refused, reset, timeout, 5xx) are tried again with a
doubling pause, a 4xx and a refused key are not.
"""

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from provisioner.errors import ConfigError, HostError
from provisioner.inventory import Host, Inventory
from provisioner.targets import dns as dns_target
from provisioner.targets.dns import DnsTarget

ZONE = "tarakankota.go.id"
ZONE_PATH = f"/api/v1/servers/localhost/zones/{ZONE}."
RRSETS = {"name": f"{ZONE}.", "rrsets": [{"name": f"simkes.{ZONE}.", "type": "A", "ttl": 300,
                                          "records": [{"content": "203.0.113.10", "disabled": False}],
                                          "comments": [{"account": "provisioner", "content": "x"}]}]}


class Script:
    """What the server answers, one entry per request (the last one repeats): (status, body) or 'sleep'."""

    def __init__(self):
        self.answers: list = [(200, RRSETS)]
        self.seen: list[tuple[str, str, str | None]] = []

    def next(self):
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def api(tmp_path):
    yield from _serve(tmp_path)


@pytest.fixture
def secondary_api(tmp_path):
    """A second server, as a secondary's API (the same key file as the primary's)."""
    yield from _serve(tmp_path)


def _serve(tmp_path):
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            script.seen.append((self.command, self.path, self.headers.get("X-API-Key")))
            answer = script.next()
            if answer == "sleep":
                time.sleep(1.0)
                answer = (200, RRSETS)
            if answer == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.connection.close()
                return
            status, body = answer
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_PUT = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    key = tmp_path / "pdns-api-key"
    key.write_text("right-key\n")
    script.url = f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    script.key = key
    yield script
    server.shutdown()
    server.server_close()


def inventory(url: str, key: Path, secondary_url: str | None = None) -> Inventory:
    ns1 = Host("ns1", ("nameservers",), {"pdns_role": "primary", "pdns_api_url": url, "pdns_api_key_file": str(key)})
    ns2 = Host("ns2", ("nameservers",), {"pdns_role": "secondary",
                                         **({"pdns_api_url": secondary_url} if secondary_url else {})})
    return Inventory(path=Path("inventory"), hosts={"ns1": ns1, "ns2": ns2})


@pytest.fixture
def pauses(monkeypatch):
    """The backoff pauses asked for, without waiting them out."""
    asked = []
    monkeypatch.setattr(dns_target, "_pause", asked.append)
    return asked


def target(api, **kw) -> DnsTarget:
    return DnsTarget(inventory(api.url, api.key), **kw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_making_a_target_talks_to_nobody(api, tmp_path):
    made = DnsTarget(inventory(f"http://127.0.0.1:{closed_port()}/api/v1", tmp_path / "no-such-key"))
    assert made.host == "ns1"
    target(api)
    assert api.seen == []


def test_a_read_sends_the_key_and_keys_the_rrsets(api):
    live = target(api).read({ZONE})
    assert api.seen == [("GET", ZONE_PATH, "right-key")]
    assert (f"simkes.{ZONE}.", "A") in live[ZONE]


def test_connection_refused_is_retried_with_a_bounded_backoff_then_named(tmp_path, pauses):
    key = tmp_path / "key"
    key.write_text("k")
    dns = DnsTarget(inventory(f"http://127.0.0.1:{closed_port()}/api/v1", key))
    with pytest.raises(HostError) as caught:
        dns.read({ZONE})
    message = str(caught.value)
    assert message.startswith("PowerDNS API on ns1: cannot read zone tarakankota.go.id: connection refused")
    assert "tried 3 times" in message and "Traceback" not in message and "\n" not in message
    assert pauses == [0.5, 1.0]
    # Refused before the server acted: nothing can have changed.
    assert caught.value.unchanged is True


def test_a_5xx_is_retried_and_a_later_success_is_taken(api, pauses):
    api.answers = [(503, {"error": "busy"}), (500, {"error": "oops"}), (200, RRSETS)]
    live = target(api).read({ZONE})
    assert len(api.seen) == 3 and pauses == [0.5, 1.0]
    assert (f"simkes.{ZONE}.", "A") in live[ZONE]


def test_a_5xx_that_lasts_fails_with_its_status_after_a_few_tries(api, pauses):
    api.answers = [(500, {"error": "backend down"})]
    with pytest.raises(HostError, match=r"change to zone tarakankota.go.id: HTTP 500: backend down \(tried 3 times\)") \
            as caught:
        target(api)._patch(ZONE, [])
    assert len(api.seen) == 3
    # A 5xx may come after the server acted: the caller must read the live state.
    assert caught.value.unchanged is False


def test_a_422_is_not_retried_and_says_why(api, pauses):
    api.answers = [(422, {"error": "RRset simkes. IN A: Conflicts with pre-existing RRset"})]
    with pytest.raises(HostError, match=r"change to zone tarakankota.go.id: refused \(HTTP 422: RRset .*Conflicts"):
        target(api)._patch(ZONE, [])
    assert len(api.seen) == 1 and pauses == []


def test_a_wrong_key_is_a_configuration_error_naming_the_key_file(api, pauses):
    api.answers = [(401, {"error": "Unauthorized"})]
    with pytest.raises(ConfigError, match=r"ns1: cannot read zone tarakankota.go.id: the API key was refused "
                                          r"\(HTTP 401\); check .*pdns-api-key"):
        target(api).read({ZONE})
    assert len(api.seen) == 1


def test_a_missing_zone_is_a_configuration_error(api):
    api.answers = [(404, {"error": "Not Found"})]
    with pytest.raises(ConfigError, match="zone tarakankota.go.id does not exist on ns1"):
        target(api).read({ZONE})


def test_a_server_slower_than_the_timeout_is_tried_again_then_named(api, pauses):
    api.answers = ["sleep"]
    with pytest.raises(HostError, match=r"cannot read zone tarakankota.go.id: no answer in time \(timeout\) "
                                        r"\(tried 2 times\)"):
        target(api, timeout=0.2, attempts=2).read({ZONE})
    assert len(api.seen) == 2 and pauses == [0.5]


def test_a_reset_connection_is_transient(api, pauses):
    api.answers = ["reset", (200, RRSETS)]
    assert (f"simkes.{ZONE}.", "A") in target(api).read({ZONE})[ZONE]
    assert len(api.seen) == 2


def _site():
    from provisioner import naming
    from provisioner.site import DesiredSite

    return DesiredSite(request_id="HST-2024-0007", office="tarakan", label="simkes", zone=ZONE,
                       names=naming.site_names("simkes", ZONE), web_host="web1", web_address="10.77.0.21",
                       db_host=None, public_ip="203.0.113.10", dedicated_ip=False, php=True, php_version="8.2",
                       database=False, tls=False, quota_mb=1024, bandwidth_kbps=0)


def test_a_failed_notify_after_a_written_record_is_a_warning_not_a_failure(api, pauses):
    site = _site()
    api.answers = [(204, None), (500, {"error": "notify failed"})]
    warnings = target(api).apply([site], {site.fqdn: site.request_id})
    assert [m for m, *_ in api.seen] == ["PATCH", "PUT", "PUT", "PUT"]
    assert list(warnings) == [ZONE] and "NOTIFY of zone tarakankota.go.id: HTTP 500" in warnings[ZONE]


def test_a_secondary_with_an_api_is_asked_for_the_transfer_right_after_the_change(api, secondary_api, pauses):
    site = _site()
    api.answers = [(204, None)]
    secondary_api.answers = [(200, {"result": "Added retrieval request"})]
    dns = DnsTarget(inventory(api.url, api.key, secondary_url=secondary_api.url))
    assert dns.apply([site], {site.fqdn: site.request_id}) == {}
    assert [(m, p) for m, p, _ in api.seen] == [("PATCH", ZONE_PATH), ("PUT", ZONE_PATH + "/notify")]
    # With the primary's key: the secondary's API is the toolkit's as much as the primary's.
    assert secondary_api.seen == [("PUT", ZONE_PATH + "/axfr-retrieve", "right-key")]


@pytest.mark.parametrize("answer, cause", [((500, {"error": "oops"}), "HTTP 500: oops"),
                                           ((401, {"error": "Unauthorized"}), "the API key was refused"),
                                           ("sleep", "no answer in time")])
def test_a_secondary_that_cannot_be_asked_is_a_warning_tried_once(api, secondary_api, pauses, monkeypatch,
                                                                  answer, cause):
    monkeypatch.setattr(dns_target, "TRANSFER_TIMEOUT", 0.2)
    site = _site()
    api.answers, secondary_api.answers = [(204, None)], [answer]
    warnings = DnsTarget(inventory(api.url, api.key, secondary_url=secondary_api.url)).apply(
        [site], {site.fqdn: site.request_id})
    # The record is written and the NOTIFY sent: the secondary follows that, later.
    assert [m for m, *_ in api.seen] == ["PATCH", "PUT"]
    assert len(secondary_api.seen) == 1 and pauses == []
    assert list(warnings) == [ZONE]
    assert warnings[ZONE].startswith("PowerDNS API on ns2: transfer of zone tarakankota.go.id: ") and cause in warnings[ZONE]


def test_an_unreachable_secondary_api_is_a_warning_too(api, pauses):
    site = _site()
    api.answers = [(204, None)]
    dns = DnsTarget(inventory(api.url, api.key, secondary_url=f"http://127.0.0.1:{closed_port()}/api/v1"))
    warnings = dns.apply([site], {site.fqdn: site.request_id})
    assert warnings == {ZONE: "PowerDNS API on ns2: transfer of zone tarakankota.go.id: connection refused "
                              "(tried once)"}



class _Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_the_client_library_logs_nothing_out_and_never_the_api_key(api, pauses, capsys):
    # The root logger at DEBUG with a handler, as a verbose run of an embedding program would have it.
    # (Not caplog: pytest also attaches it to loggers that do not propagate.)
    root, kept = logging.getLogger(), _Kept()
    level = root.level
    root.addHandler(kept)
    root.setLevel(logging.DEBUG)
    try:
        api.answers = [(401, {"error": "Unauthorized"})]
        with pytest.raises(ConfigError):
            target(api).read({ZONE})
    finally:
        root.removeHandler(kept)
        root.setLevel(level)
    assert api.seen and api.seen[0][2] == "right-key"
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    assert not [r for r in kept.records if r.name.startswith("powerdns")]
    assert not [r for r in kept.records if "right-key" in r.getMessage()]
