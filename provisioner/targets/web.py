"""The web server: system user, docroot, PHP-FPM pool, SFTP account, TLS files, vhost."""

from provisioner import parallel, runner
from provisioner.changes import Create, Delete, Update
from provisioner.site import DesiredSite, sha256
from provisioner.targets import adopted, probe

VHOST_DIR = "/etc/apache2/sites-available"
# Modes of a site's directories (see the web_site role's defaults): other site
# users cannot enter the home; Apache, in every site group, serves the docroot.
HOME_MODE = "0750"
DOCROOT_MODE = "0750"


def by_host(sites: list[DesiredSite], host_of, item_of) -> dict[str, list[dict]]:
    """{host: [item of each site on it]}: a run over several hosts gives each only its own."""
    grouped: dict[str, list[dict]] = {}
    for s in sites:
        grouped.setdefault(host_of(s), []).append(item_of(s))
    return grouped


def probe_items(sites: list[DesiredSite]) -> list[dict]:
    return [{"fqdn": s.fqdn, "user": s.names.user, "home": s.names.home, "docroot": s.names.docroot,
             "logdir": s.names.logdir, "pool": s.names.pool, "php_version": s.php_version}
            | (adopted.probe_paths(s) if s.adopted is not None else {}) for s in sites]


def read(inventory, sites: list[DesiredSite]) -> dict[str, dict]:
    """Live state per web host, one SSH session each."""
    by_host: dict[str, list] = {}
    for s in sites:
        by_host.setdefault(s.web_host, []).append(s)
    # One host's probe is an SSH round-trip: the hosts are read at once, results in a stable order.
    hosts = list(by_host)
    return dict(zip(hosts, parallel.each(lambda host: probe.probe_web(inventory.host(host), probe_items(by_host[host])),
                                         hosts)))


def plan(sites: list[DesiredSite], live: dict) -> list:
    changes = []
    for s in sites:
        state = live[s.web_host]["sites"][s.fqdn]
        h, f = s.web_host, s.fqdn
        if state["user"] is None:
            changes.append(Create("web", h, f, "system user", s.names.user, home=s.names.home))
        if state["docroot"] is None:
            changes.append(Create("web", h, f, "docroot", s.names.docroot, owner=s.names.user, mode=DOCROOT_MODE))
        elif (state["docroot"]["owner"], state["docroot"]["mode"]) != (s.names.user, DOCROOT_MODE):
            changes.append(Update("web", h, f, "docroot", s.names.docroot, owner=s.names.user, mode=DOCROOT_MODE,
                                  was=state["docroot"]))
        if state["home"] is not None and (state["home"]["owner"], state["home"]["group"], state["home"]["mode"]) \
                != ("root", s.names.user, HOME_MODE):
            changes.append(Update("web", h, f, "home", s.names.home, owner="root", group=s.names.user,
                                  mode=HOME_MODE, was=state["home"]))
        if state["logdir"] is None:
            changes.append(Create("web", h, f, "log directory", s.names.logdir, owner="root", group="adm"))
        if s.php:
            pool = s.pool()
            if state["pool_sha256"] is None:
                changes.append(Create("web", h, f, "PHP-FPM pool", s.names.pool, allow_exec=s.allow_exec,
                                      content=pool))
            elif state["pool_sha256"] != sha256(pool):
                changes.append(Update("web", h, f, "PHP-FPM pool", s.names.pool, allow_exec=s.allow_exec,
                                      content=pool))
        if not state["sftp"]:
            changes.append(Create("web", h, f, "SFTP account", s.names.user, chroot=s.names.home))
        if state["user"] is not None and state.get("password_set") is False:
            # Made by a run that stopped before its password was set: set the stored one.
            changes.append(Create("web", h, f, "SFTP password", s.names.user))
        if s.tls and not state["tls_cert"]:
            changes.append(Create("web", h, f, "TLS certificate", f"/etc/ssl/provisioner/{f}.crt"))
        vhost = s.vhost()
        path = f"{VHOST_DIR}/{f}.conf"
        if state["vhost_sha256"] is None:
            changes.append(Create("web", h, f, "vhost", path, content=vhost))
        elif state["vhost_sha256"] != sha256(vhost) or not state["vhost_enabled"]:
            changes.append(Update("web", h, f, "vhost", path, content=vhost, enabled=state["vhost_enabled"]))
    changes += _default_vhosts(sites, live)
    return changes


def default_vhost_missing(host_live: dict, address: str) -> bool | None:
    """Whether an address lacks its default vhosts (80 and 443); None if the probe did not say."""
    defaults = host_live.get("default_vhosts")
    if defaults is None:
        return None
    return sorted(defaults.get(address, [])) != [80, 443]


def _default_vhosts(sites: list[DesiredSite], live: dict) -> list:
    """A default vhost for each address of the sites that lacks one, shown once with its first site."""
    changes, seen = [], set()
    for s in sites:
        key = (s.web_host, s.public_ip)
        if key in seen:
            continue
        seen.add(key)
        if default_vhost_missing(live[s.web_host], s.public_ip):
            changes.append(Create("web", s.web_host, s.fqdn, "default vhost", s.public_ip, ports="80, 443",
                                  answers="404, a neutral page"))
    return changes


def made_by_the_role(found: dict | None, owners: tuple, group: str) -> bool:
    """Whether what the probe found at a site's path is a directory owned as the web_site role
    makes it: only that is the site's to remove (a link, a file, or a directory of another
    owner was put there by someone else, and is left)."""
    return found is not None and found.get("kind") == "directory" and found["owner"] in owners \
        and found["group"] == group


def _owned_paths(s: DesiredSite, state: dict) -> list[tuple[str, dict | None, bool]]:
    """(path, what the probe found, whether it is the site's) of the home and the log directory."""
    # The home is root:<site> (a site user may have been given it by hand); the log directory root:adm.
    return [(s.names.home, state["home"], made_by_the_role(state["home"], ("root", s.names.user), s.names.user)),
            (s.names.logdir, state["logdir"], made_by_the_role(state["logdir"], ("root",), "adm"))]


def removal_changes(sites: list[DesiredSite], live: dict) -> list:
    changes = []
    for s in sites:
        state = live[s.web_host]["sites"][s.fqdn]
        if state["vhost_sha256"] is not None:
            changes.append(Delete("web", s.web_host, s.fqdn, "vhost", f"{VHOST_DIR}/{s.fqdn}.conf"))
        if state["pool_sha256"] is not None:
            changes.append(Delete("web", s.web_host, s.fqdn, "PHP-FPM pool", s.names.pool))
        if state["user"] is not None:
            changes.append(Delete("web", s.web_host, s.fqdn, "system user and SFTP account", s.names.user))
        (home, _, own_home), _ = _owned_paths(s, state)
        if own_home:
            changes.append(Delete("web", s.web_host, s.fqdn, "site directory", home))
    return changes


def removal_notes(sites: list[DesiredSite], live: dict) -> dict[str, str]:
    """fqdn -> what a removal leaves at the site's paths because it is not the site's, and why."""
    notes = {}
    for s in sites:
        state = live[s.web_host]["sites"][s.fqdn]
        left = [f"left: {path} is not the site's: {described(found)}"
                for path, found, own in _owned_paths(s, state) if found is not None and not own]
        if left:
            notes[s.fqdn] = "; ".join(left)
    return notes


def described(found: dict) -> str:
    """"a file owned by root", "a directory owned by root:root", as the probe found it."""
    what = found.get("kind")
    if what == "directory":
        return f"a directory owned by {found['owner']}:{found['group']}"
    if what == "link":
        return "a link"
    return f"{'a file' if what == 'file' else 'something'} owned by {found['owner']}"


def apply(inventory_path, sites: list[DesiredSite], secrets: dict, state: str = "present",
          artifact_dir=None, rotate: bool = False, timeout: int | None = None) -> runner.RunResult:
    hosts = {s.web_host for s in sites}
    return runner.run_playbook(
        "web_site.yml", inventory_path, hosts,
        # Each host gets only its own sites (playbooks/web_site.yml picks them by host).
        extravars={"web_site__sites_by_host": by_host(sites, lambda s: s.web_host,
                                                      lambda s: s.web_item(state, rotate_password=rotate))},
        secrets=secrets, limit=",".join(sorted(hosts)), artifact_dir=artifact_dir, timeout=timeout,
    )
