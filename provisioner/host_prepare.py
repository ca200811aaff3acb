"""`provision host prepare`: make fresh Debian 12 servers what the toolkit expects.

playbooks/host_prepare.yml applies the roles host_ns (PowerDNS primary or
secondary), host_db (MariaDB), host_web (Apache, PHP-FPM, SFTP chroot) and
host_backup (the backup repositories' SFTP-only account) by inventory group.
`plan` runs it in check mode with diff and reads, from the run's events, what
each host would change; `apply` runs it for real and then
plans again: a prepared host has nothing left to change, so anything the
second look still finds is an error.

The PowerDNS API key goes to the primary through the runner's secrets (a
private file named on the command line, never the key itself); the tasks
holding it are no_log, so events, plans and artifacts show it censored.
"""

import difflib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from provisioner import runner, ssh
from provisioner.errors import ConfigError, HostError
from provisioner.inventory import Inventory, load_inventory

PLAYBOOK = "host_prepare.yml"
# The groups the playbook prepares, in the order it prepares them.
GROUPS = ("nameservers", "db", "web", "backup")
# The default of step_timeout: installing packages on a fresh server takes a while.
TIMEOUT = 1800
# Diff lines kept per change in a plan; the rest is counted.
DIFF_LINES = 40


@dataclass
class Change:
    """One task that changed (or, in a plan, would change) something on a host."""

    task: str
    role: str = ""
    item: str = ""
    # What changes: a unified diff, `path: key old -> new` lines, or a task's message.
    detail: list[str] = field(default_factory=list)
    censored: bool = False

    def title(self) -> str:
        where = f"{self.role}: " if self.role else ""
        return f"{where}{self.task}" + (f" [{self.item}]" if self.item else "")


@dataclass
class HostPlan:
    host: str
    changes: list[Change] = field(default_factory=list)


@dataclass
class Plan:
    """What a run changed or would change, per host (hosts with nothing to change included)."""

    hosts: dict[str, HostPlan]
    check: bool = True
    # Ansible's own count of changed tasks per host (the play recap), so a
    # change the events did not show still counts.
    counted: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(h.changes for h in self.hosts.values()) or any(self.counted.values())

    def as_dict(self) -> dict:
        return {"check": self.check, "changed": self.changed, "counted": dict(sorted(self.counted.items())),
                "hosts": {name: [asdict(c) for c in h.changes] for name, h in sorted(self.hosts.items())}}

    def lines(self) -> list[str]:
        out = []
        for name, h in sorted(self.hosts.items()):
            if not h.changes and not self.counted.get(name):
                out.append(f"{name}: nothing to change")
                continue
            if not h.changes:
                out.append(f"{name}: {self.counted[name]} change(s) the run's events did not describe")
                continue
            out.append(f"{name}: {len(h.changes)} change(s){'' if self.check else ' made'}")
            for c in h.changes:
                out.append(f"  ~ {c.title()}")
                out.extend(f"      {line}" for line in c.detail)
        return out


@dataclass
class ApplyResult:
    applied: Plan
    proof: Plan

    def as_dict(self) -> dict:
        return {"applied": self.applied.as_dict(), "left": self.proof.as_dict()}


# --- Reading the run's events -------------------------------------------------

def _text_diff(before: str, after: str, header: str) -> list[str]:
    lines = list(difflib.unified_diff(before.splitlines(), after.splitlines(),
                                      f"{header} (now)", f"{header} (after)", lineterm="", n=1))
    if len(lines) > DIFF_LINES:
        lines = lines[:DIFF_LINES] + [f"... {len(lines) - DIFF_LINES} more line(s)"]
    return lines


def _diff_lines(diff, res: dict) -> list[str]:
    """A module's --diff output as readable lines."""
    parts = diff if isinstance(diff, list) else [diff]
    out = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        if "prepared" in part:  # modules that format their own diff (apt, ...)
            out.extend(str(part["prepared"]).splitlines()[:DIFF_LINES])
            continue
        before, after = part.get("before", ""), part.get("after", "")
        if isinstance(before, dict) or isinstance(after, dict):
            # file, group, user...: attributes that differ
            before, after = before or {}, after or {}
            path = after.get("path") or before.get("path") or _where(res)
            for key in sorted(set(before) | set(after)):
                if key != "path" and before.get(key) != after.get(key):
                    out.append(f"{path}: {key} {before.get(key, '-')} -> {after.get(key, '-')}".strip())
            continue
        # after_header of a template is its temporary source: the destination names the file.
        header = _where(res) or part.get("before_header") or "file"
        if before != after:
            out.extend(_text_diff(str(before or ""), str(after or ""), str(header)))
    return out


def _changed(event: dict) -> bool:
    res = (event.get("event_data") or {}).get("res") or {}
    if "censored" in res:
        # A no_log result keeps nothing but the censored note; the line Ansible printed says it.
        return str(event.get("stdout", "")).lstrip().startswith("changed:")
    return bool(res.get("changed"))


def _where(res: dict) -> str:
    """The file a module acted on, from its result or its arguments."""
    args = (res.get("invocation") or {}).get("module_args") or {}
    for source in (res, args):
        for key in ("dest", "path"):
            if isinstance(source.get(key), str) and source[key]:
                return source[key]
    return ""


def _change(data: dict) -> Change:
    res = data.get("res") or {}
    censored = "censored" in res
    item = ""
    if "_ansible_item_label" in res or "item" in res:
        label = res.get("_ansible_item_label", res.get("item"))
        item = label if isinstance(label, str) else json.dumps(label, sort_keys=True)
    if censored:
        detail = ["(details hidden: the task handles a secret)"]
        item = ""  # a censored item label is not shown either
    elif res.get("diff"):
        detail = _diff_lines(res["diff"], res)
    else:
        detail = []
    if not detail and not censored and res.get("msg"):
        detail = [str(res["msg"])]
    return Change(task=str(data.get("task", "")).strip(), role=str(data.get("role") or ""),
                  item=str(item), detail=detail, censored=censored)


def parse_events(events, hosts, check: bool = True) -> Plan:
    """The per-host changes of a run, from ansible-runner's events.

    A loop task reports each item in its own event and then the whole loop
    (with `results`): the items are the changes, the summary is skipped.
    """
    plan = Plan({name: HostPlan(name) for name in hosts}, check=check)
    for event in events or ():
        if event.get("event") not in ("runner_on_ok", "runner_item_on_ok"):
            continue
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        if event["event"] == "runner_on_ok" and "results" in res:
            continue
        if not _changed(event):
            continue
        host = str(data.get("host"))
        plan.hosts.setdefault(host, HostPlan(host)).changes.append(_change(data))
    return plan


def read_events(artifact_dir: Path) -> list[dict]:
    """ansible-runner's events of the run whose artifacts are under artifact_dir, in order."""
    events = []
    for path in artifact_dir.glob("*/job_events/*.json"):
        try:
            events.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a partial event file of an interrupted run
    return sorted(events, key=lambda e: e.get("counter", 0))


# --- Which hosts, with which secrets ----------------------------------------

def select_hosts(inventory: Inventory, target: str | None = None) -> list[str]:
    """The hosts `target` names: a host, a group, or (None, "all") every host of GROUPS."""
    preparable = {h.name for h in inventory.hosts.values() if set(h.groups) & set(GROUPS)}
    if not preparable:
        raise ConfigError(f"inventory {inventory.path}: no host in the groups {', '.join(GROUPS)}")
    if target in (None, "", "all"):
        return sorted(preparable)
    if target in inventory.hosts:
        if target not in preparable:
            raise ConfigError(f"host {target!r} is in none of the groups {', '.join(GROUPS)}: "
                              "host prepare has nothing to make of it")
        return [target]
    members = {h.name for h in inventory.hosts.values() if target in h.groups}
    if not members:
        raise ConfigError(f"inventory {inventory.path}: {target!r} is neither a host nor a group")
    chosen = sorted(members & preparable)
    if not chosen:
        raise ConfigError(f"group {target!r} has no host in the groups {', '.join(GROUPS)}")
    return chosen


def secrets_for(inventory: Inventory, hosts: list[str]) -> dict:
    """What the run needs that must not be logged: the API key when a name server with the
    API (the primary, a secondary with a pdns_api_url) is prepared."""
    names = {h.name for h in inventory.hosts.values() if "nameservers" in h.groups}
    if not names & set(hosts):
        return {}
    with_api = {inventory.primary_nameserver().name} | {h.name for h, _url in inventory.secondary_apis()}
    if not with_api & set(hosts):
        return {}
    _url, key_file = inventory.pdns_api()
    try:
        key = key_file.read_text().strip()
    except OSError as err:
        raise ConfigError(f"cannot read the PowerDNS API key {key_file} (pdns_api_key_file): "
                          f"{err.strerror or err}") from None
    if not key:
        raise ConfigError(f"the PowerDNS API key file {key_file} (pdns_api_key_file) is empty")
    return {"pdns_api_key": key}


# --- Running ------------------------------------------------------------------

def _run(inventory_path: Path, hosts: list[str], secrets: dict, check: bool, timeout: int | None) -> Plan:
    # Events are read from a private artifact directory, removed with the run:
    # with --diff they hold file contents (never the key, whose tasks are no_log).
    with tempfile.TemporaryDirectory(prefix="provisioner-prepare-") as private:
        os.chmod(private, 0o700)
        result = runner.run_playbook(PLAYBOOK, inventory_path, set(hosts), secrets=secrets or None,
                                     limit=",".join(hosts), check=check, artifact_dir=Path(private),
                                     timeout=timeout or TIMEOUT)
        found = parse_events(read_events(Path(private)), hosts, check=check)
        found.counted = {h: n for h, n in result.changed.items() if n}
        return found


def _prepare(inventory_path, target: str | None):
    inventory_path = Path(inventory_path)
    inventory = load_inventory(inventory_path)
    hosts = select_hosts(inventory, target)
    for name in hosts:
        ssh.check_route(inventory.host(name).address)
    return inventory_path, hosts, secrets_for(inventory, hosts)


def plan(inventory_path, target: str | None = None, timeout: int | None = None) -> Plan:
    """What preparing the target would change on each host (check mode with diff)."""
    inventory_path, hosts, secrets = _prepare(inventory_path, target)
    return _run(inventory_path, hosts, secrets, check=True, timeout=timeout)


def apply(inventory_path, target: str | None = None, timeout: int | None = None) -> ApplyResult:
    """Prepare the target for real, then plan again to prove nothing is left to change."""
    inventory_path, hosts, secrets = _prepare(inventory_path, target)
    applied = _run(inventory_path, hosts, secrets, check=False, timeout=timeout)
    proof = _run(inventory_path, hosts, secrets, check=True, timeout=timeout)
    if proof.changed:
        left = "; ".join(f"{h.host}: {', '.join(c.title() for c in h.changes)}"
                         for h in proof.hosts.values() if h.changes)
        err = HostError(f"host prepare ran but a second look still finds changes: {left}")
        err.result = ApplyResult(applied, proof)
        raise err
    return ApplyResult(applied, proof)
