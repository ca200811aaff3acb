"""The contract of web_site__sites, checked for every item in one pass.

One filter instead of an assert looped over each site: the answer names every
refused item and the rule it broke, so a batch of a hundred sites is checked in
one step and a refusal lists all that is wrong at once.
"""

import posixpath
import re

FQDN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
USER = re.compile(r"[a-z][a-z0-9-]{0,31}")
DIRNAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,252}")
PATH = re.compile(r"(/[A-Za-z0-9_-][A-Za-z0-9._-]*)+")
PHP_VERSION = re.compile(r"[0-9]\.[0-9]{1,2}")
POOL = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
IPV4 = re.compile(r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}")
NUMBER = re.compile(r"[0-9]{1,9}")


def _full(pattern, value):
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def item_problems(item, home_base, log_base):
    """The rules one item breaks (empty when it keeps them all)."""
    rules = [
        ("state", item.get("state") in ("present", "absent")),
        ("fqdn", _full(FQDN, item.get("fqdn"))),
        ("user", _full(USER, item.get("user"))),
        ("home", isinstance(item.get("home"), str) and posixpath.dirname(item["home"]) == home_base
         and _full(DIRNAME, posixpath.basename(item["home"]))),
        ("docroot", _full(PATH, item.get("docroot")) and isinstance(item.get("home"), str)
         and item["docroot"].startswith(item["home"] + "/") and "/." not in item["docroot"]),
        ("logdir", isinstance(item.get("logdir"), str) and posixpath.dirname(item["logdir"]) == log_base
         and _full(DIRNAME, posixpath.basename(item["logdir"]))),
        ("php, tls, suspended, rotate_password, allow_exec",
         all(isinstance(item.get(k), bool) for k in ("php", "tls", "suspended", "rotate_password", "allow_exec"))),
        ("php_version", _full(PHP_VERSION, str(item.get("php_version")))),
        ("pool", _full(POOL, item.get("pool", item.get("fqdn")))),
        ("listen_ip", _full(IPV4, item.get("listen_ip"))),
        ("bandwidth_kbps", not isinstance(item.get("bandwidth_kbps"), bool)
         and _full(NUMBER, str(item.get("bandwidth_kbps")))),
        ("quota_mb", not isinstance(item.get("quota_mb"), bool) and _full(NUMBER, str(item.get("quota_mb")))),
    ]
    return [name for name, kept in rules if not kept]


def web_site_refusals(items, home_base, log_base):
    """One line per refused item: its name (truncated) and the fields outside the contract."""
    refused = []
    for item in items:
        problems = item_problems(item, home_base, log_base) if isinstance(item, dict) else ["item"]
        if problems:
            name = str(item.get("fqdn", "?") if isinstance(item, dict) else "?")[:80]
            refused.append(f"{name}: {', '.join(problems)} outside the contract")
    return refused


def web_site_takeovers(present, passwd):
    """Sites whose user exists on the host with another home (getent passwd facts)."""
    return [f"{s['fqdn']}: user {s['user']} already exists with another home"
            for s in present if s["user"] in passwd and passwd[s["user"]][4] != s["home"]]


def web_site_pool(item):
    """The pool name of an item: its own, or its fqdn."""
    return item.get("pool") or item.get("fqdn")


class FilterModule:
    def filters(self):
        return {"web_site_refusals": web_site_refusals, "web_site_takeovers": web_site_takeovers,
                "web_site_pool": web_site_pool}
