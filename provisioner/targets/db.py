"""The database server: a database, a user allowed only from its web server, one grant."""

from provisioner import parallel, runner
from provisioner.changes import Create, Delete, Update
from provisioner.site import DesiredSite
from provisioner.targets import probe
from provisioner.targets.web import by_host


def expected_grant(s: DesiredSite) -> str:
    return f"GRANT ALL PRIVILEGES ON `{s.names.db_name}`.* TO `{s.names.db_user}`@`{s.web_address}`"


def read(inventory, sites: list[DesiredSite]) -> dict[str, dict]:
    by_host: dict[str, list] = {}
    for s in sites:
        if s.database:
            by_host.setdefault(s.db_host, []).append({"name": s.names.db_name, "user": s.names.db_user})
    hosts = list(by_host)  # read at once, as the web hosts are
    return dict(zip(hosts, parallel.each(lambda host: probe.probe_db(inventory.host(host), by_host[host]), hosts)))


def plan(sites: list[DesiredSite], live: dict) -> list:
    changes = []
    for s in sites:
        if not s.database:
            continue
        state = live[s.db_host]["databases"][s.names.db_name]
        h, f = s.db_host, s.fqdn
        if not state["exists"]:
            changes.append(Create("db", h, f, "database", s.names.db_name, charset="utf8mb4"))
        account = f"{s.names.db_user}@{s.web_address}"
        if s.web_address not in state["user_hosts"]:
            changes.append(Create("db", h, f, "database user", account))
        others = [host for host in state["user_hosts"] if host != s.web_address]
        if others:
            changes.append(Delete("db", h, f, "database user", ", ".join(f"{s.names.db_user}@{o}" for o in others),
                                  reason="allowed from a host other than its web server"))
        wanted = expected_grant(s)
        extra = extra_grants(s, state["grants"])
        if wanted not in state["grants"] and not any(g.startswith(wanted) for g in extra):
            changes.append(Create("db", h, f, "grant", wanted))
        if extra:
            # The role (exact_grants) revokes everything and grants the one privilege again.
            changes.append(Update("db", h, f, "grant", wanted, extra=extra))
    return changes


def account(s: DesiredSite) -> str:
    return f"`{s.names.db_user}`@`{s.web_address}`"


def extra_grants(s: DesiredSite, grants: list[str]) -> list[str]:
    """Grants of the site's account beyond the recorded one (the probe strips password hashes)."""
    mine = f" TO {account(s)}"
    usage = f"GRANT USAGE ON *.*{mine}"
    return [g for g in grants if mine in g and g not in (usage, expected_grant(s))]


def removal_changes(sites: list[DesiredSite], live: dict) -> list:
    changes = []
    for s in sites:
        if not s.database:
            continue
        state = live[s.db_host]["databases"][s.names.db_name]
        if state["user_hosts"]:
            changes.append(Delete("db", s.db_host, s.fqdn, "database user", s.names.db_user))
        if state["exists"]:
            changes.append(Delete("db", s.db_host, s.fqdn, "database", s.names.db_name))
    return changes


def apply(inventory_path, sites: list[DesiredSite], secrets: dict, state: str = "present",
          artifact_dir=None, rotate: bool = False, timeout: int | None = None) -> runner.RunResult | None:
    sites = [s for s in sites if s.database]
    if not sites:
        return None
    hosts = {s.db_host for s in sites}
    return runner.run_playbook(
        "db_site.yml", inventory_path, hosts,
        # Each host gets only its own databases (playbooks/db_site.yml picks them by host).
        extravars={"mariadb_site__databases_by_host": by_host(
            sites, lambda s: s.db_host, lambda s: s.db_item(state, rotate_password=rotate) | {"exact_grants": True})},
        secrets=secrets, limit=",".join(sorted(hosts)), artifact_dir=artifact_dir, timeout=timeout,
    )
