"""The approval webhook over real HTTP on 127.0.0.1 (ephemeral port)."""

import hashlib
import http.client
import io
import json
import socket
import threading
import time

import pytest

from provisioner.webhook import PATH, DecisionServer, sign

SECRET = b"k" * 20 + b"0123456789abcdef"  # 36 bytes


@pytest.fixture
def serving():
    """Start DecisionServers on 127.0.0.1 (ephemeral ports); all stopped at the end."""
    started = []

    def start(engine, **options):
        srv = DecisionServer(("127.0.0.1", 0), engine, SECRET, max_skew=300, log=io.StringIO(), **options)
        thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((srv, thread))
        return srv

    yield start
    for srv, thread in started:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture
def reviewed(engine, clock, simkes_bytes):
    from test_engine import through_review

    through_review(engine, clock, simkes_bytes)
    clock.now = clock.now.replace(minute=30)
    return engine


@pytest.fixture
def server(reviewed, serving):
    return serving(reviewed)


def post(server, body, post_id="post-000001", stamp=None, secret=SECRET, signature=None, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    stamp = str(int(time.time())) if stamp is None else str(stamp)
    headers = {"Content-Type": "application/json", "X-Provisioner-Id": post_id,
               "X-Provisioner-Timestamp": stamp,
               "X-Provisioner-Signature": signature or sign(secret, post_id, stamp, data)}
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        conn.request("POST", PATH, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def approval(simkes_bytes, **changes):
    body = {"request": "HST-2024-0007", "sha256": hashlib.sha256(simkes_bytes).hexdigest(),
            "decision": "approve"}
    body.update(changes)
    return body


def unchanged(engine, actions):
    shown = engine.show("HST-2024-0007")
    return shown["state"] == "submitted" and shown["current_step"] == "keputusan" and not actions.calls


def test_good_post_is_accepted_exactly_once(server, engine, actions, simkes_bytes):
    status, reply = post(server, approval(simkes_bytes))
    assert status == 200 and reply["changed"] is True
    assert [a["action"] for a in reply["actions"]] == ["provision_site", "render_letter"]
    assert actions.count("provision_site") == 1
    decided = [e for e in engine.events("HST-2024-0007") if e["kind"] == "decided"]
    assert decided[0]["source"] == "webhook" and decided[0]["payload"]["webhook_id"] == "post-000001"

    status, reply = post(server, approval(simkes_bytes))  # the same post again
    assert status == 409 and "already used" in reply["error"]
    status, reply = post(server, approval(simkes_bytes), post_id="post-000002")  # a second approval
    assert status == 200 and reply["changed"] is False
    assert actions.count("provision_site") == 1


@pytest.mark.parametrize("case", ["forged", "wrong-secret", "no-signature", "stale-past", "stale-future",
                                  "sha-mismatch", "unknown-request", "not-json", "bad-decision",
                                  "wrong-role", "unknown-field", "reject-without-reason", "body-changed"])
def test_bad_posts_get_4xx_and_change_nothing(server, engine, actions, simkes_bytes, case):
    body = approval(simkes_bytes)
    now = int(time.time())
    kwargs = {}
    expected = 400
    if case == "forged":
        kwargs["signature"] = "sha256=" + "0" * 64
        expected = 401
    elif case == "wrong-secret":
        kwargs["secret"] = b"x" * 40
        expected = 401
    elif case == "no-signature":
        kwargs["signature"] = "nope"
        expected = 401
    elif case == "stale-past":
        kwargs["stamp"] = now - 301
        expected = 401
    elif case == "stale-future":
        kwargs["stamp"] = now + 301
        expected = 401
    elif case == "sha-mismatch":
        body["sha256"] = hashlib.sha256(simkes_bytes + b"# edited\n").hexdigest()
        expected = 409
    elif case == "unknown-request":
        body["request"] = "HST-2024-0999"
        expected = 404
    elif case == "not-json":
        kwargs["raw"] = b"{not json"
    elif case == "bad-decision":
        body["decision"] = "maybe"
    elif case == "wrong-role":
        body["by"] = "opd"
        expected = 403
    elif case == "unknown-field":
        body["extra"] = 1
    elif case == "reject-without-reason":
        body["decision"] = "reject"
    elif case == "body-changed":
        # Signed as an approval by kadis, then the "by" changed on the way.
        kwargs["stamp"] = now
        kwargs["signature"] = sign(SECRET, f"post-{case}", str(now), json.dumps(body).encode())
        body["by"] = "bagian_umum"
        expected = 401
    status, reply = post(server, body, post_id=f"post-{case}", **kwargs)
    assert status == expected, reply
    assert reply["ok"] is False and reply["error"]
    assert unchanged(engine, actions)
    assert not engine.seen_webhook(f"post-{case}")
    # The refused post's id is still free: a correct post with it is accepted.
    status, _ = post(server, approval(simkes_bytes), post_id=f"post-{case}")
    assert status == 200


def test_secret_must_be_long(engine):
    with pytest.raises(ValueError):
        DecisionServer(("127.0.0.1", 0), engine, b"short", log=io.StringIO())


# -- slow, dropped, oversized, many: the server stays bounded and answering ---------


def _half_sent(server):
    """A connection that starts a post and never finishes its headers."""
    sock = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30)
    sock.sendall(b"POST /v1/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 200\r\n")
    return sock


def _closed_by_server(sock, wait):
    """True if the server closed the connection within `wait` seconds (0: right now)."""
    sock.settimeout(wait or None)
    if not wait:
        sock.setblocking(False)
    try:
        return sock.recv(1024) == b"" or True
    except (BlockingIOError, socket.timeout):
        return False
    except ConnectionResetError:
        return True


def _log_lines(server, needle, wait=20.0):
    """The log lines containing `needle`, once there is one (or after `wait` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        lines = [line for line in server.log.getvalue().splitlines() if needle in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_300_half_sent_posts_hold_no_thread_and_do_not_block_a_good_post(reviewed, serving, actions,
                                                                         simkes_bytes):
    server = serving(reviewed, timeout=120, workers=4)  # the slow ones stay held during the test
    threads_before = threading.active_count()
    slow = [_half_sent(server) for _ in range(300)]
    try:
        status, reply = post(server, approval(simkes_bytes))
        threads_during = threading.active_count() - threads_before
        still_held = sum(not _closed_by_server(sock, 0) for sock in slow)
    finally:
        for sock in slow:
            sock.close()
    assert status == 200 and reply["ok"] is True and actions.count("provision_site") == 1
    assert still_held == 300  # answered while all 300 were still open, not after they timed out
    assert threads_during <= 4  # the worker pool; half-sent posts hold no thread


def test_a_slow_client_is_dropped_after_the_timeout_in_one_log_line(reviewed, serving, capfd):
    server = serving(reviewed, timeout=0.5)
    sock = _half_sent(server)
    try:
        assert _closed_by_server(sock, wait=30)
    finally:
        sock.close()
    (line,) = _log_lines(server, "timed out")
    assert line.startswith("webhook 127.0.0.1 - ")
    assert "Traceback" not in server.log.getvalue() + "".join(capfd.readouterr())


def test_a_dropped_connection_is_one_log_line_without_traceback(server, capfd):
    sock = _half_sent(server)
    # Reset rather than close politely: what a client that dies mid-post does.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
    (line,) = _log_lines(server, "dropped")
    assert line == "webhook 127.0.0.1 - dropped the connection before the request was complete"
    assert "Traceback" not in server.log.getvalue() + "".join(capfd.readouterr())


def test_connections_beyond_the_limit_get_503_and_the_server_recovers(reviewed, serving, actions, simkes_bytes):
    server = serving(reviewed, timeout=60, max_connections=5)
    slow = [_half_sent(server) for _ in range(5)]
    deadline = time.monotonic() + 20
    while server._open < 5 and time.monotonic() < deadline:  # a loaded machine accepts them late
        time.sleep(0.01)
    try:
        status, reply = post(server, approval(simkes_bytes))
        assert status == 503 and reply["ok"] is False and "too many connections" in reply["error"]
    finally:
        for sock in slow:
            sock.close()
    deadline = time.monotonic() + 20
    while status == 503 and time.monotonic() < deadline:  # until the server has seen the five go
        time.sleep(0.05)
        status, reply = post(server, approval(simkes_bytes), post_id="post-000002")
    assert status == 200 and actions.count("provision_site") == 1


def test_1000_forged_posts_then_a_good_one_accepted_once(server, engine, actions, simkes_bytes):
    refused = 0
    for i in range(1000):
        status, reply = post(server, approval(simkes_bytes), post_id=f"forged-{i:06d}",
                             signature="sha256=" + f"{i:064x}")
        refused += status == 401 and reply["ok"] is False
    assert refused == 1000 and unchanged(engine, actions)
    status, reply = post(server, approval(simkes_bytes), post_id="good-000001")
    assert status == 200 and reply["changed"] is True
    status, reply = post(server, approval(simkes_bytes), post_id="good-000001")
    assert status == 409
    assert actions.count("provision_site") == 1


def test_an_oversized_body_is_refused_unread(server, engine, actions, simkes_bytes):
    from provisioner.webhook import MAX_BODY

    body = json.dumps(approval(simkes_bytes, reason="x" * MAX_BODY)).encode()
    status, reply = post(server, None, raw=body, post_id="post-oversized")
    assert status == 413 and reply["ok"] is False and "body over" in reply["error"]
    assert unchanged(engine, actions) and not engine.seen_webhook("post-oversized")


def test_a_decision_whose_action_failed_answers_502_with_the_reason(server, engine, actions, simkes_bytes):
    actions.fail.add("provision_site")
    status, reply = post(server, approval(simkes_bytes))
    assert status == 502 and reply["ok"] is False and reply["decided"] is True
    assert "decision recorded, but its action failed" in reply["error"] and "broke on purpose" in reply["error"]
    assert [e for e in engine.events("HST-2024-0007") if e["kind"] == "decided"]
    status, reply = post(server, approval(simkes_bytes))  # resending the same post is a replay
    assert status == 409
