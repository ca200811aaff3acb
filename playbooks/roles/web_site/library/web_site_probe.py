#!/usr/bin/python
"""Ask every site on this web server over HTTP(S) what a client would get, in one call.

Replaces one curl task per site: the checks run from the host itself, in
parallel, and those not yet answering as expected are asked again (a graceful
reload lets old Apache children finish first) until they do or the tries run
out. Each check connects to the site's address and names the site in the Host
header, and for HTTPS in the TLS SNI; certificates are not checked (a lab or a
fresh certificate may not chain to the host's store; the toolkit verifies TLS
from outside).
"""

import http.client
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: web_site_probe
short_description: HTTP(S) checks of many sites from the web server (web_site role)
options:
  checks:
    description: "Each {scheme: http|https, address, port, host, expect}; expect is the status,
      followed by a space and the Location for a redirect (\"301 https://name/\")."
    type: list
    elements: dict
    default: []
  retries: {type: int, default: 10}
  delay: {type: float, default: 1.0}
  timeout: {type: float, default: 5.0}
"""


class _SNIConnection(http.client.HTTPSConnection):
    """HTTPS to a given address with the site's name in SNI and Host (curl --resolve)."""

    def __init__(self, address, host, port, timeout):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def answer(check, timeout=5.0):
    """What the site answers: "200", "503", or "301 <Location>" for a redirect; "error: ..." if none."""
    port = int(check.get("port") or (443 if check["scheme"] == "https" else 80))
    try:
        if check["scheme"] == "https":
            connection = _SNIConnection(check["address"], check["host"], port, timeout)
        else:
            connection = http.client.HTTPConnection(check["address"], port, timeout=timeout)
        try:
            connection.request("GET", "/", headers={"Host": check["host"]})
            response = connection.getresponse()
            response.read()
            location = response.getheader("Location") if 300 <= response.status < 400 else None
            return f"{response.status} {location}" if location else str(response.status)
        finally:
            connection.close()
    except (OSError, http.client.HTTPException) as error:
        return f"error: {error}"


def probe(checks, retries=10, delay=1.0, timeout=5.0, ask=answer):
    """Ask every check until each answers as expected; returns the checks that never did, with what they got."""
    pending = list(checks)
    got = {}
    for attempt in range(max(retries, 1)):
        with ThreadPoolExecutor(max_workers=min(16, len(pending) or 1)) as pool:
            answers = list(pool.map(lambda c: ask(c, timeout), pending))
        got = {id(c): a for c, a in zip(pending, answers)}
        pending = [c for c in pending if got[id(c)] != str(c["expect"])]
        if not pending:
            return []
        if attempt + 1 < retries:
            time.sleep(delay)
    return [{**c, "got": got[id(c)]} for c in pending]


def main():
    module = AnsibleModule(
        argument_spec={
            "checks": {"type": "list", "elements": "dict", "default": []},
            "retries": {"type": "int", "default": 10},
            "delay": {"type": "float", "default": 1.0},
            "timeout": {"type": "float", "default": 5.0},
        },
        supports_check_mode=True,
    )
    p = module.params
    if module.check_mode:
        # Nothing was reloaded in check mode: there is nothing new to ask about.
        module.exit_json(changed=False, skipped=True, msg="check mode: not probed")
    failed = probe(p["checks"], p["retries"], p["delay"], p["timeout"])
    if failed:
        module.fail_json(msg="sites not answering as expected: " + "; ".join(
            f"{c['scheme']}://{c['host']}/ at {c['address']}: expected {c['expect']}, got {c['got']}"
            for c in failed), not_answering=failed)
    module.exit_json(changed=False, probed=len(p["checks"]))


if __name__ == "__main__":
    main()
