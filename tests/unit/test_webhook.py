"""The approval webhook over real HTTP on 127.0.0.1 (ephemeral port)."""

import hashlib
import http.client
import io
import json
import threading
import time

import pytest

from provisioner.webhook import PATH, DecisionServer, sign

SECRET = b"k" * 20 + b"0123456789abcdef"  # 36 bytes


@pytest.fixture
def server(engine, clock, simkes_bytes):
    from test_engine import through_review

    through_review(engine, clock, simkes_bytes)
    clock.now = clock.now.replace(minute=30)
    srv = DecisionServer(("127.0.0.1", 0), engine, SECRET, max_skew=300, log=io.StringIO())
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


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
                                  "wrong-role", "unknown-field", "reject-without-reason"])
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
