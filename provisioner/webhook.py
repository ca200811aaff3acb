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

The decision is recorded before anything else, while the post waits. What it
starts (provisioning, a letter) runs at once with a batch window of 0; with a
window (webhook.batch_window_seconds), the approvals that arrive within it are
gathered and run as one batch (Engine.resume_many: one plan and one apply for
all their sites). Each post is still answered with its own request's outcome.
"""

import asyncio
import concurrent.futures
import hashlib
import hmac
import http.client
import io
import json
import re
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

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


class ApprovalBatcher:
    """Gathers the requests decided within `window` seconds of the first, then runs their due
    actions as one batch on its own thread; submit() gives each caller a future of its own
    request's Outcome (its error in Outcome.error, never raised through the future).

    One batch runs at a time: approvals that arrive while one runs are gathered for the next.
    `wait` is how the window passes (time.sleep; a test passes a gate it opens).
    """

    def __init__(self, engine, window, wait=time.sleep):
        self.engine, self.window, self._wait = engine, window, wait
        self._lock = threading.Lock()
        self._gathering: dict[str, concurrent.futures.Future] = {}
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-batch")

    def submit(self, request_id):
        with self._lock:
            future = self._gathering.get(request_id)
            if future is None:
                if not self._gathering:  # the first of a batch opens its window
                    self._runner.submit(self._run)
                future = self._gathering[request_id] = concurrent.futures.Future()
        return future

    def gathering(self):
        """The requests gathered for the next batch so far."""
        with self._lock:
            return list(self._gathering)

    def _run(self):
        self._wait(self.window)
        with self._lock:
            gathered, self._gathering = self._gathering, {}
        try:
            # As the hook runs after one decision: no take-over of a running action, no waiting one.
            outcomes = self.engine.resume_many(list(gathered), include_waiting=False)
        except Exception as err:  # noqa: BLE001 - every post of the batch is answered with it
            from provisioner.sop.engine import Outcome

            outcomes = {r: Outcome(r, False, f"{r}: the batch stopped", error=err) for r in gathered}
        for request_id, future in gathered.items():
            future.set_result(outcomes[request_id])

    def close(self):
        self._runner.shutdown(wait=False, cancel_futures=True)


class _Gathered:
    """A recorded decision whose actions wait for their batch: the decision's Outcome and the
    future of the batch's Outcome for the same request."""

    def __init__(self, decided, future):
        self.decided, self.future = decided, future

    def outcome(self, ran):
        """The decision's outcome (its message) with what the batch ran for it."""
        self.decided.actions, self.decided.error = ran.actions, ran.error
        return self.decided


def _answer_outcome(outcome):
    """The reply for a recorded decision whose actions ran: ok, or what failed (the decision stays)."""
    error = outcome.error
    if error is None:
        return HTTPStatus.OK, {"ok": True, **outcome.as_dict()}
    if isinstance(error, ProvisionerError):
        return HTTPStatus.BAD_GATEWAY, {"ok": False, "decided": True,
                                        "error": f"decision recorded, but its action failed: {error}"}
    # Not the toolkit's error: the reason is for the log of whoever runs the server, not the sender.
    return HTTPStatus.INTERNAL_SERVER_ERROR, {"ok": False, "decided": True, "error": (
        f"decision recorded, but its action failed unexpectedly ({type(error).__name__}); "
        f"see `provision request show {outcome.request_id}`")}


class DecisionServer:
    """The webhook's HTTP server: slow clients cost no thread, decisions a bounded pool.

    Connections are read by one event loop: a client that has not sent its
    whole request within `timeout` seconds is dropped, so half-sent posts hold
    only a socket (at most `max_connections`; beyond that: 503). Complete
    requests are checked and decided by a pool of `workers` threads (more wait
    their turn). Each connection carries one request; every outcome, a drop
    included, is one log line without headers or body.
    """

    def __init__(self, address, engine, secret, max_skew=300, clock=time.time, log=sys.stderr,
                 timeout=10.0, workers=8, max_connections=1000, batch_window=0.0, batch_wait=time.sleep):
        if len(secret) < 32:
            raise ValueError("the webhook secret must be at least 32 bytes")
        self.engine, self.secret, self.max_skew = engine, secret, max_skew
        self.clock, self.log = clock, log
        self.timeout, self.max_connections = timeout, max_connections
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook")
        # A post waiting for its batch holds no thread of the pool: only the batch's own thread.
        self.batcher = ApprovalBatcher(engine, batch_window, batch_wait) if batch_window > 0 else None
        self._socket = socket.create_server(address)
        self.server_address = self._socket.getsockname()
        self._open = 0
        self._loop = None
        self._stop = None
        self._running = threading.Event()
        self._finished = threading.Event()

    def handle_decision(self, headers, body):
        """Check and apply one post; return (status, JSON-able dict)."""
        answer = self._decide(headers, body)
        if isinstance(answer, _Gathered):
            return _answer_outcome(answer.outcome(answer.future.result()))
        return answer

    def _decide(self, headers, body):
        """Check one post and record its decision: (status, dict), or with a batch window, the
        decision gathered for its batch (_Gathered)."""
        batched = self.batcher is not None
        try:
            post_id = check_signature(self.secret, headers, body, int(self.clock()), self.max_skew)
            data = parse_body(body)
            if self.engine.seen_webhook(post_id):
                raise Replayed(f"post id {post_id} was already used")
            approve = data["decision"] == "approve"
            by = data.get("by") or self.engine.decision_role(data["request"])
            outcome = self.engine.decide(
                data["request"], approve, by, reason=data.get("reason"), source="webhook",
                expected_sha256=data["sha256"], replay_key=post_id, run_actions=not batched)
        except ActionError as err:
            # The decision is recorded (a resend is a replay); the action it started failed.
            return HTTPStatus.BAD_GATEWAY, {"ok": False, "decided": True,
                                            "error": f"decision recorded, but its action failed: {err}"}
        except ProvisionerError as err:
            return _status(err), {"ok": False, "error": str(err)}
        if batched and outcome.changed:
            return _Gathered(outcome, self.batcher.submit(outcome.request_id))
        return HTTPStatus.OK, {"ok": True, **outcome.as_dict()}

    # -- serving -------------------------------------------------------------------

    def serve_forever(self, poll_interval=None):
        """Serve until shutdown() (poll_interval is accepted for socketserver's callers)."""
        try:
            asyncio.run(self._serve())
        finally:
            self._finished.set()

    def shutdown(self):
        """Stop serve_forever (from another thread) and wait for it to return."""
        if self._running.wait(5) and self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._finished.wait(10)

    def server_close(self):
        self._socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.batcher is not None:
            self.batcher.close()

    async def _serve(self):
        self._loop = asyncio.get_running_loop()
        self._loop.set_exception_handler(self._loop_error)
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self._socket, limit=MAX_HEADER)
        self._running.set()
        async with server:
            await self._stop.wait()

    def _line(self, peer, text):
        self.log.write(f"webhook {peer} - {text}\n")
        self.log.flush()

    def _loop_error(self, loop, context):
        # Whatever escapes a connection is one line, never a traceback.
        error = context.get("exception")
        self._line("-", f"error: {type(error).__name__ if error else ''} {context.get('message', '')}".strip())

    async def _connection(self, reader, writer):
        peer = (writer.get_extra_info("peername") or ("-",))[0]
        if self._open >= self.max_connections:
            await self._answer(writer, peer, "-", HTTPStatus.SERVICE_UNAVAILABLE,
                               {"ok": False, "error": "too many connections; try again later"},
                               reader=reader)
            return
        self._open += 1
        try:
            try:
                request = await asyncio.wait_for(_read_request(reader), self.timeout)
            except asyncio.TimeoutError:
                self._line(peer, f"timed out after {self.timeout:g} s before the request was complete; closed")
                return
            except (ConnectionError, asyncio.IncompleteReadError):
                self._line(peer, "dropped the connection before the request was complete")
                return
            except _Refused as refused:
                await self._answer(writer, peer, refused.line, refused.status, {"ok": False, "error": str(refused)})
                return
            line, headers, body = request
            answer = await self._loop.run_in_executor(self._pool, self._decide, headers, body)
            if isinstance(answer, _Gathered):
                answer = _answer_outcome(answer.outcome(await asyncio.wrap_future(answer.future)))
            status, payload = answer
            await self._answer(writer, peer, line, status, payload)
        finally:
            self._open -= 1
            writer.close()

    async def _answer(self, writer, peer, line, status, payload, reader=None):
        """Send the reply and close. With `reader` (a request left unread), what the client is
        still sending is read away for a moment first: closing on unread data resets the
        connection, and the client may then never see the reply."""
        body = json.dumps(payload, default=str).encode()
        head = (f"HTTP/1.1 {status.value} {status.phrase}\r\nServer: provisioner-webhook\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode("ascii")
        try:
            writer.write(head + body)
            await asyncio.wait_for(writer.drain(), self.timeout)
            self._line(peer, f'"{line}" {status.value}')
            if reader is not None:
                writer.write_eof()
                await asyncio.wait_for(_drain_input(reader), LINGER)
        except (ConnectionError, asyncio.TimeoutError):
            self._line(peer, f'"{line}" {status.value}: dropped the connection before the reply')
        finally:
            writer.close()


MAX_HEADER = 16 * 1024
# Seconds a refused connection's input is read away before it is closed.
LINGER = 1.0


async def _drain_input(reader, limit: int = 1024 * 1024) -> None:
    """Read and drop what the client sends, until it closes or `limit` bytes."""
    seen = 0
    while seen < limit:
        chunk = await reader.read(65536)
        if not chunk:
            return
        seen += len(chunk)


class _Refused(Exception):
    """A request refused before it reaches the decision (status and the request line to log)."""

    def __init__(self, status, message, line="-"):
        super().__init__(message)
        self.status, self.line = status, line


async def _read_request(reader):
    """(request line, headers, body) of one HTTP/1.x request, or _Refused."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"headers over {MAX_HEADER} bytes") from None
    first, _, rest = head.partition(b"\r\n")
    parts = first.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Refused(HTTPStatus.BAD_REQUEST, "not an HTTP/1.x request")
    method, path, _ = parts
    line = f"{method[:16]} {path[:64]}"
    try:
        headers = http.client.parse_headers(io.BytesIO(rest))
    except http.client.HTTPException:
        raise _Refused(HTTPStatus.BAD_REQUEST, "malformed headers", line) from None
    if method != "POST":
        raise _Refused(HTTPStatus.METHOD_NOT_ALLOWED, f"POST to {PATH}", line)
    if path != PATH:
        raise _Refused(HTTPStatus.NOT_FOUND, f"post to {PATH}", line)
    length = headers.get("Content-Length", "")
    if headers.get("Transfer-Encoding") or not (length.isascii() and length.isdigit()):
        raise _Refused(HTTPStatus.LENGTH_REQUIRED, "Content-Length needed", line)
    if int(length) > MAX_BODY:
        raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes", line)
    return line, headers, await reader.readexactly(int(length))
