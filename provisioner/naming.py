"""Names on hosts: the DNS label rules, and names derived from a validated label.

Host-side names (system user, database, PHP-FPM pool) are derived here, never
taken from request text, so nothing an agency types reaches a shell or SQL.
"""

import hashlib
import re
from dataclasses import dataclass

# ASCII only: [a-z0-9] instead of \w or \d, which would also match Unicode
# letters and digits. Used with fullmatch, so a trailing newline fails too.
LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
SLUG_MAX = 30  # fits a Linux user name (32) and old MariaDB user names (32)


def label_problems(label, reserved=(), stored=False):
    """Every rule a subdomain label breaks, as short sentences (empty list if none).

    `stored`: a label already accepted and recorded is held only to the rules that
    keep it safe on the hosts, not to those that gate new names (encoded names,
    reserved labels), which may have been added since.
    """
    if not isinstance(label, str):
        return ["must be a text label"]
    if not label.isascii():
        return ["must be ASCII only (no Unicode letters, digits or look-alike characters)"]
    problems = []
    if len(label) > 63:
        problems.append("must be at most 63 characters (one DNS label)")
    elif label[2:4] == "--" and not stored:
        # RFC 5891 reserves '--' at positions 3-4 for encoded names; xn-- is
        # punycode, which can spell a look-alike of another name (xn--80ak6aa92e).
        problems.append("must not be punycode (xn--...): internationalized names are not accepted"
                        if label.startswith("xn--") else
                        "must not have '--' at positions 3-4 (reserved for encoded names such as xn--)")
    elif not LABEL.fullmatch(label):
        problems.append(
            "must be one DNS label: 1-63 of a-z, 0-9 and '-', starting and ending "
            "with a letter or digit, lowercase, no dots or spaces")
    elif label.isdigit():
        problems.append("must not be all digits")
    if label in set(reserved) and not stored:
        problems.append(f"'{label}' is reserved for the office's own services")
    return problems


def fqdn(label, zone):
    return f"{label}.{zone}"


def site_slug(label, zone):
    """A short, safe, unique name for a site on the hosts, e.g. `simkes_3fa2c1`.

    The hash of the full name keeps `simkes.tarakankota.go.id` and
    `simkes.bulelengkab.go.id` apart on a shared web server; the label part keeps
    it readable. Only call this with a label that passed `label_problems`.
    """
    if label_problems(label, stored=True):
        raise ValueError(f"not a valid label: {label!r}")
    digest = hashlib.sha256(fqdn(label, zone).encode("ascii")).hexdigest()[:6]
    base = label.replace("-", "_")
    if base[0].isdigit():
        base = "s" + base  # user and database names should not start with a digit
    return f"{base[:SLUG_MAX - 7]}_{digest}"


WEB_ROOT = "/srv/www"
LOG_ROOT = "/var/log/apache2/sites"


@dataclass(frozen=True)
class SiteNames:
    """Every name a site has on the hosts, all derived from its validated label.

    Database names and users are [a-z][a-z0-9]* only: no '_' or '%', which
    are wildcards in a MariaDB GRANT, and no quoting needed anywhere.
    """

    fqdn: str
    slug: str
    user: str
    home: str
    docroot: str
    logdir: str
    pool: str
    db_name: str
    db_user: str


def site_names(label, zone):
    slug = site_slug(label, zone)
    name = fqdn(label, zone)
    db = slug.replace("_", "")
    home = f"{WEB_ROOT}/{name}"
    return SiteNames(
        fqdn=name,
        slug=slug,
        user=slug.replace("_", "-"),
        home=home,
        docroot=f"{home}/public",
        logdir=f"{LOG_ROOT}/{name}",
        pool=name,
        db_name=db,
        db_user=db,
    )
