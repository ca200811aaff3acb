"""The approval webhook: an e-office system posts a signed decision; we record it.

A post carries three headers:
  X-Provisioner-Id         a unique id for this post (the replay key), [A-Za-z0-9._:-]{8,128}
  X-Provisioner-Timestamp  Unix time in seconds, within max_skew_seconds of ours (either side)
  X-Provisioner-Signature  sha256=<hex HMAC-SHA256 of "<id>.<timestamp>.<body>" with the secret>
and a JSON body:
  {"request": "HST-2024-0007", "sha256": "<sha256 of the request file as submitted>",
   "decision": "approve" | "reject", "by": "kadis", "reason": "..."}
"by" defaults to the role of the SOP's decision step; "reason" is needed to reject.

Order of checks: size and headers, time, signature (constant time), body,
replay. Only then is the decision handed to Engine.decide, the same function
`provision decide` calls; the post id is stored in that same transaction, so a
refused post changes nothing and an accepted one is accepted exactly once.
"""

import hashlib
import hmac
import json
import re
import sys
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from provisioner.errors import (ActionError, Conflict, NotFound, PermissionDenied, ProvisionerError,
                                Replayed, SignatureError, StateError, UserError)
from provisioner.request import REQUEST_ID

PATH = "/v1/decisions"
MAX_BODY = 16 * 1024
POST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
TIMESTAMP = re.compile(r"[0-9]{1,12}")
SIGNATURE = re.compile(r"sha256=([0-9a-f]{64})")
SHA256 = re.compile(r"[0-9a-f]{64}")


def sign(secret, post_id, timestamp, body):
    """The signature header value for a post (used by senders and by the tests)."""
    message = f"{post_id}.{timestamp}.".encode("ascii") + body
    return "sha256=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


class BadRequest(UserError):
    """A malformed post (HTTP 400)."""


def check_signature(secret, headers, body, now, max_skew):
    """Authenticate a post; return its id. Raises SignatureError or BadRequest."""
    post_id = headers.get("X-Provisioner-Id") or ""
    stamp = headers.get("X-Provisioner-Timestamp") or ""
    signature = headers.get("X-Provisioner-Signature") or ""
    if not (post_id and stamp and signature):
        raise SignatureError("missing X-Provisioner-Id, -Timestamp or -Signature header")
    if not (post_id.isascii() and POST_ID.fullmatch(post_id)):
        raise BadRequest("X-Provisioner-Id must be 8-128 of A-Z a-z 0-9 . _ : -")
    if not (stamp.isascii() and TIMESTAMP.fullmatch(stamp)):
        raise BadRequest("X-Provisioner-Timestamp must be Unix seconds")
    if abs(now - int(stamp)) > max_skew:
        raise SignatureError(f"timestamp is more than {max_skew} s away from the server's clock")
    match = SIGNATURE.fullmatch(signature) if signature.isascii() else None
    expected = sign(secret, post_id, stamp, body)
    # Compare even a malformed header, so timing tells nothing about the secret.
    if not hmac.compare_digest(expected.encode(), (signature if match else "x" * len(expected)).encode()):
        raise SignatureError("bad signature")
    return post_id


def parse_body(body):
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("body is not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    unknown = set(data) - {"request", "sha256", "decision", "by", "reason"}
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
    request_id, digest = data.get("request"), data.get("sha256")
    if not (isinstance(request_id, str) and request_id.isascii() and REQUEST_ID.fullmatch(request_id)):
        raise BadRequest("request: must be a request id like HST-2024-0007")
    if not (isinstance(digest, str) and digest.isascii() and SHA256.fullmatch(digest)):
        raise BadRequest("sha256: must be 64 lowercase hex digits")
    if data.get("decision") not in ("approve", "reject"):
        raise BadRequest("decision: must be approve or reject")
    for key in ("by", "reason"):
        if key in data and not isinstance(data[key], str):
            raise BadRequest(f"{key}: must be text")
    return data


def _status(err):
    if isinstance(err, Replayed):
        return HTTPStatus.CONFLICT
    if isinstance(err, SignatureError):
        return HTTPStatus.UNAUTHORIZED
    if isinstance(err, NotFound):
        return HTTPStatus.NOT_FOUND
    if isinstance(err, PermissionDenied):
        return HTTPStatus.FORBIDDEN
    if isinstance(err, (Conflict, StateError)):
        return HTTPStatus.CONFLICT
    if isinstance(err, UserError):
        return HTTPStatus.BAD_REQUEST
    return HTTPStatus.INTERNAL_SERVER_ERROR


class DecisionServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, engine, secret, max_skew=300, clock=time.time, log=sys.stderr):
        if len(secret) < 32:
            raise ValueError("the webhook secret must be at least 32 bytes")
        self.engine, self.secret, self.max_skew = engine, secret, max_skew
        self.clock, self.log = clock, log
        super().__init__(address, _Handler)

    def handle_decision(self, headers, body):
        """Check and apply one post; return (status, JSON-able dict)."""
        try:
            post_id = check_signature(self.secret, headers, body, int(self.clock()), self.max_skew)
            data = parse_body(body)
            if self.engine.seen_webhook(post_id):
                raise Replayed(f"post id {post_id} was already used")
            approve = data["decision"] == "approve"
            by = data.get("by") or self.engine.decision_role(data["request"])
            outcome = self.engine.decide(
                data["request"], approve, by, reason=data.get("reason"), source="webhook",
                expected_sha256=data["sha256"], replay_key=post_id)
        except ActionError as err:
            # The decision was stored; only the action it started failed.
            return HTTPStatus.OK, {"ok": True, "changed": True, "hook_error": str(err)}
        except ProvisionerError as err:
            return _status(err), {"ok": False, "error": str(err)}
        return HTTPStatus.OK, {"ok": True, **outcome.as_dict()}


class _Handler(BaseHTTPRequestHandler):
    server_version = "provisioner-webhook"

    def _reply(self, status, payload):
        body = json.dumps(payload, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        if self.path != PATH:
            return self._reply(HTTPStatus.NOT_FOUND, {"ok": False, "error": f"post to {PATH}"})
        length = self.headers.get("Content-Length", "")
        if not (length.isascii() and length.isdigit()):
            return self._reply(HTTPStatus.LENGTH_REQUIRED, {"ok": False, "error": "Content-Length needed"})
        if int(length) > MAX_BODY:
            return self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               {"ok": False, "error": f"body over {MAX_BODY} bytes"})
        body = self.rfile.read(int(length))
        status, payload = self.server.handle_decision(self.headers, body)
        self._reply(status, payload)

    def do_GET(self):
        self._reply(HTTPStatus.METHOD_NOT_ALLOWED, {"ok": False, "error": f"POST to {PATH}"})

    def log_message(self, fmt, *args):
        # Never the body or headers: only the line and status.
        self.server.log.write("webhook %s - %s\n" % (self.address_string(), fmt % args))
