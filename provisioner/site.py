"""A site as it should be: placement, addresses, derived names, rendered files.

Built from a validated request and the inventory; holds no free text from the
request and no secret. The same values feed the plan, the Ansible roles and
the configuration record.
"""

import hashlib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import jinja2
import yaml

from provisioner import naming
from provisioner.naming import SiteNames

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates" / "apache"
WEB_ROLE_DEFAULTS = ROOT / "playbooks" / "roles" / "web_site" / "defaults" / "main.yml"


@dataclass(frozen=True)
class DesiredSite:
    request_id: str
    office: str
    label: str
    zone: str
    names: SiteNames
    web_host: str
    web_address: str  # the web host's lab/management address (database grants allow it)
    db_host: str | None
    public_ip: str
    dedicated_ip: bool
    php: bool
    php_version: str
    database: bool
    tls: bool
    quota_mb: int
    bandwidth_kbps: int
    suspended: bool = False
    allow_exec: bool = False  # PHP may start processes (request option site.allow_exec)
    tls_optional: bool = False  # may go live over HTTP while the CA's limit holds its certificate back
    # An adopted site (provisioner.adopted): its layout as found on the hosts (vhost file and
    # links, pool file, listen addresses, TLS files...); None for a site the toolkit built.
    adopted: dict | None = field(default=None, hash=False)

    @property
    def fqdn(self) -> str:
        return self.names.fqdn

    def web_item(self, state: str = "present", rotate_password: bool = False) -> dict:
        """One entry of the web_site role's `web_site__sites` (see its defaults)."""
        item = {
            "fqdn": self.fqdn, "user": self.names.user, "home": self.names.home,
            "docroot": self.names.docroot, "logdir": self.names.logdir, "php": self.php,
            "php_version": self.php_version, "pool": self.names.pool, "listen_ip": self.public_ip,
            "tls": self.tls, "bandwidth_kbps": self.bandwidth_kbps, "quota_mb": self.quota_mb,
            "suspended": self.suspended, "state": state, "rotate_password": rotate_password,
            "allow_exec": self.allow_exec,
        }
        if state == "present":
            # The role installs exactly what the plan showed.
            item["vhost_content"] = self.vhost()
            if self.php:
                item["pool_content"] = self.pool()
        return item

    def db_item(self, state: str = "present", rotate_password: bool = False) -> dict:
        return {"name": self.names.db_name, "user": self.names.db_user, "client_host": self.web_address,
                "state": state, "rotate_password": rotate_password}

    def ip_item(self, state: str = "present") -> dict:
        # A dedicated address is routed to its web host, so it needs no subnet of its own.
        return {"address": self.public_ip, "prefix": 32, "state": state}

    def vhost(self) -> str:
        return _render("vhost.conf.j2", self.web_item_base())

    def pool(self) -> str:
        return _render("php-fpm-pool.conf.j2", self.web_item_base())

    def web_item_base(self) -> dict:
        return {k: v for k, v in self.web_item(state="absent").items()}

    def record(self) -> dict:
        """The configuration record's body (no secret, no request free text)."""
        return {
            "fqdn": self.fqdn, "request_id": self.request_id, "office": self.office,
            "web_host": self.web_host, "db_host": self.db_host, "public_ip": self.public_ip,
            "dedicated_ip": self.dedicated_ip, "names": asdict(self.names), "php": self.php,
            "php_version": self.php_version if self.php else None, "database": self.database,
            "db_name": self.names.db_name if self.database else None,
            "db_user": self.names.db_user if self.database else None,
            "sftp_user": self.names.user, "tls": self.tls, "quota_mb": self.quota_mb,
            "bandwidth_kbps": self.bandwidth_kbps, "allow_exec": self.allow_exec,
            "vhost_sha256": sha256(self.vhost()),
            "pool_sha256": sha256(self.pool()) if self.php else None,
        }


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@lru_cache(maxsize=1)
def _role_defaults() -> dict:
    return yaml.safe_load(WEB_ROLE_DEFAULTS.read_text()) or {}


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    # The options of Ansible's template module, so files render the same either way.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), trim_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined, autoescape=False,
    )


def _render(template: str, item: dict) -> str:
    defaults = _role_defaults()
    return _environment().get_template(template).render(
        item=item,
        web_site__tls_dir=defaults["web_site__tls_dir"],
        web_site__fpm_max_children=defaults["web_site__fpm_max_children"],
        web_site__disabled_functions=defaults["web_site__disabled_functions"],
    )


def from_request(request, web, db, public_ip: str, dedicated: bool) -> DesiredSite:
    site = request.site
    return DesiredSite(
        request_id=request.id, office=request.office, label=site.subdomain, zone=site.zone,
        names=naming.site_names(site.subdomain, site.zone), web_host=web.name, web_address=web.address,
        db_host=db.name if (db and site.database) else None, public_ip=public_ip, dedicated_ip=dedicated,
        php=site.stack == "php", php_version=site.php_version or "8.2", database=site.database,
        tls=site.tls, quota_mb=site.quota_mb, bandwidth_kbps=site.bandwidth_kbps,
        allow_exec=site.allow_exec, tls_optional=site.tls_optional,
    )
