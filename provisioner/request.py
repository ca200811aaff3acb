"""A hosting request: its model, and validation that reports every problem at once.

The request's identity is the sha256 of the exact bytes submitted; an approval
names that hash, so an edited file is a different request.

Free text (names, subject, purpose, letter number) is checked only to be
printable and bounded; it is stored and shown, never put into a shell line,
SQL, an Apache config or an Ansible template. Host-side names come from
`site.subdomain` through `provisioner.naming`.
"""

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from provisioner import naming, yamlsrc
from provisioner.errors import ValidationError
from provisioner.yamlsrc import Problem

SERVICES = ("hosting", "website", "konsultasi-aplikasi", "aplikasi-api")
STACKS = ("static", "php")
MAX_BYTES = 64 * 1024
MAX_PROBLEMS = 50

# Full-match patterns with explicit ASCII classes: \d would accept Arabic-Indic
# or fullwidth digits, and `$` would accept a trailing newline.
REQUEST_ID = re.compile(r"[A-Z]{2,5}-[0-9]{4}-[0-9]{4}")
NIP = re.compile(r"[0-9]{18}")
PHONE = re.compile(r"(\+62|0)8[0-9]{8,11}")
AGENCY_CODE = re.compile(r"[A-Z][A-Z0-9]{1,19}")
EMAIL = re.compile(
    r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class Letter:
    number: str
    date: date
    subject: str


@dataclass(frozen=True)
class Agency:
    code: str
    name: str


@dataclass(frozen=True)
class Contact:
    name: str
    nip: str
    position: str
    phone: str
    email: str


@dataclass(frozen=True)
class Site:
    subdomain: str
    zone: str
    stack: str
    php_version: str | None
    database: bool
    quota_mb: int
    bandwidth_kbps: int
    dedicated_ip: bool
    tls: bool
    allow_exec: bool = False  # optional; PHP sites only
    # Optional: when the CA's weekly limit leaves no certificate for now, go live over
    # HTTP and get the certificate later, rather than wait for the next slot.
    tls_optional: bool = False

    @property
    def fqdn(self):
        return naming.fqdn(self.subdomain, self.zone)


@dataclass(frozen=True)
class Request:
    id: str
    service: str
    letter: Letter
    agency: Agency
    contact: Contact
    site: Site
    purpose: str
    office: str  # office key, from the zone
    raw: bytes
    sha256: str
    source: str

    def summary(self):
        """A plain dict of the validated fields, for --json and the store."""
        return {
            "id": self.id, "service": self.service, "office": self.office,
            "letter": {"number": self.letter.number, "date": self.letter.date.isoformat(),
                       "subject": self.letter.subject},
            "agency": {"code": self.agency.code, "name": self.agency.name},
            "contact": vars(self.contact).copy(),
            "site": dict(vars(self.site), fqdn=self.site.fqdn),
            "purpose": self.purpose, "sha256": self.sha256,
        }


def content_sha256(raw):
    return hashlib.sha256(raw).hexdigest()


class _Checker:
    """Walks the parsed document, collecting Problems instead of stopping at the first."""

    def __init__(self, doc):
        self.doc = doc
        self.problems = list(doc.problems)

    def fail(self, path, rule):
        self.problems.append(Problem(yamlsrc.field_name(path), rule, self.doc.line_of(path)))

    def section(self, data, key):
        if key not in data or data[key] is None:
            self.fail((key,), "required")
            return None
        if not isinstance(data[key], dict):
            self.fail((key,), "must be a mapping of fields")
            return None
        return data[key]

    def value(self, data, path, kinds, required=True):
        """The value at the last key of `path` in `data` if it has one of `kinds`, else None."""
        key = path[-1]
        if data is None:
            return None
        if key not in data or data[key] is None:
            if required:
                self.fail(path, "required")
            return None
        value = data[key]
        # bool is an int in Python; a quota of `true` is a mistake, not 1.
        if isinstance(value, bool) and bool not in kinds:
            value_ok = False
        else:
            value_ok = isinstance(value, kinds)
        if not value_ok:
            names = {str: "text (quote it)", int: "a whole number", bool: "true or false",
                     date: "a date YYYY-MM-DD"}
            self.fail(path, "must be " + " or ".join(names.get(k, k.__name__) for k in kinds))
            return None
        return value

    def pattern(self, data, path, regex, rule):
        value = self.value(data, path, (str,))
        if value is not None and not (value.isascii() and regex.fullmatch(value)):
            self.fail(path, rule)
            return None
        return value

    def text(self, data, path, max_len, multiline=False):
        value = self.value(data, path, (str,))
        if value is None:
            return None
        lines = value.split("\n") if multiline else [value]
        if not value.strip():
            self.fail(path, "must not be empty")
        elif len(value) > max_len:
            self.fail(path, f"must be at most {max_len} characters")
        elif not all(line.isprintable() for line in lines):
            what = "control characters" if multiline else "line breaks or control characters"
            self.fail(path, f"must be printable text without {what}")
        else:
            return value
        return None


def validate(raw, config, source="<request>", today=None, stored=False):
    """Parse and check request bytes; return a Request or raise ValidationError.

    `today` is the date in the office's time zone (tests pin it). `stored` reads
    content accepted earlier (removal, rotation, letters, audit): the rules that
    only gate new submissions (encoded or reserved labels, a service the office
    still runs) are skipped, so a rule added later never strands a live site.
    Provisioning from a stored request uses the full rules.
    """
    if len(raw) > MAX_BYTES:
        raise ValidationError([Problem("(document)", f"larger than {MAX_BYTES} bytes")], source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValidationError([Problem("(document)", f"not UTF-8 text ({err.reason})")], source)
    doc = yamlsrc.load(text)
    if doc.problems and doc.data is None:
        raise ValidationError(_shown(doc.problems), source)
    if not isinstance(doc.data, dict):
        raise ValidationError([Problem("(document)", "must be a mapping of fields", 1)], source)
    check = _Checker(doc)
    data = doc.data

    request_id = check.pattern(data, ("id",), REQUEST_ID,
                               "must look like HST-2024-0007 (2-5 capital letters, 4 digits, 4 digits)")
    service = check.value(data, ("service",), (str,))
    if service is not None and service not in SERVICES:
        check.fail(("service",), f"must be one of: {', '.join(SERVICES)}")

    letter = check.section(data, "letter")
    letter_number = check.text(letter, ("letter", "number"), 100)
    letter_date = _letter_date(check, letter, config, today)
    subject = check.text(letter, ("letter", "subject"), 300)

    agency = check.section(data, "agency")
    agency_code = check.pattern(agency, ("agency", "code"), AGENCY_CODE,
                                "must be 2-20 capital letters or digits, starting with a letter")
    agency_name = check.text(agency, ("agency", "name"), 200)

    contact = check.section(data, "contact")
    contact_name = check.text(contact, ("contact", "name"), 100)
    nip = check.pattern(contact, ("contact", "nip"), NIP, "must be exactly 18 digits 0-9")
    position = check.text(contact, ("contact", "position"), 150)
    phone = check.pattern(contact, ("contact", "phone"), PHONE,
                          "must be an Indonesian mobile number: 08 or +628, then 8-11 digits")
    email = check.pattern(contact, ("contact", "email"), EMAIL, "must be an ASCII e-mail address")

    site = check.section(data, "site")
    subdomain = check.value(site, ("site", "subdomain"), (str,))
    if subdomain is not None:
        for rule in naming.label_problems(subdomain, config.reserved_labels, stored=stored):
            check.fail(("site", "subdomain"), rule)
    zone = check.value(site, ("site", "zone"), (str,))
    office = config.office_for_zone(zone) if zone is not None else None
    if zone is not None and office is None:
        check.fail(("site", "zone"), "must be a zone the office manages: " + ", ".join(sorted(config.zones)))
    if office is not None and service in SERVICES and service not in office.sops and not stored:
        check.fail(("service",), f"must be a service office {office.key} runs (offices.{office.key}.sops): "
                                 + (", ".join(office.sops) or "none"))
    stack = check.value(site, ("site", "stack"), (str,))
    if stack is not None and stack not in STACKS:
        check.fail(("site", "stack"), f"must be one of: {', '.join(STACKS)}")
    php_version = _php_version(check, site, stack, config)
    database = check.value(site, ("site", "database"), (bool,))
    quota = check.value(site, ("site", "quota_mb"), (int,))
    if quota is not None and not 1 <= quota <= config.limits.quota_mb_max:
        check.fail(("site", "quota_mb"), f"must be between 1 and {config.limits.quota_mb_max}")
    bandwidth = check.value(site, ("site", "bandwidth_kbps"), (int,))
    if bandwidth is not None and not 0 <= bandwidth <= config.limits.bandwidth_kbps_max:
        check.fail(("site", "bandwidth_kbps"),
                   f"must be between 0 (unlimited) and {config.limits.bandwidth_kbps_max}")
    dedicated_ip = check.value(site, ("site", "dedicated_ip"), (bool,))
    tls = check.value(site, ("site", "tls"), (bool,))
    allow_exec = _allow_exec(check, site, stack)
    tls_optional = _tls_optional(check, site, tls)

    purpose = check.text(data, ("purpose",), 1000, multiline=True)

    if check.problems:
        problems = sorted(check.problems, key=lambda p: (p.line or 0, p.field))
        raise ValidationError(_shown(problems), source)
    return Request(
        id=request_id, service=service,
        letter=Letter(letter_number, letter_date, subject),
        agency=Agency(agency_code, agency_name),
        contact=Contact(contact_name, nip, position, phone, email),
        site=Site(subdomain, zone, stack, php_version, database, quota, bandwidth, dedicated_ip, tls, allow_exec,
                  tls_optional),
        purpose=purpose, office=office.key, raw=bytes(raw), sha256=content_sha256(raw),
        source=source,
    )


def _shown(problems):
    """At most MAX_PROBLEMS, so 64 KB of duplicate keys is not 13,000 lines of output."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    rest = len(problems) - MAX_PROBLEMS
    return problems[:MAX_PROBLEMS] + [Problem("(document)", f"{rest} more problem(s) not shown")]


def _letter_date(check, letter, config, today):
    path = ("letter", "date")
    value = check.value(letter, path, (date, str))
    if isinstance(value, datetime):
        check.fail(path, "must be a date YYYY-MM-DD without a time")
        return None
    if isinstance(value, str):
        if not (value.isascii() and ISO_DATE.fullmatch(value)):
            check.fail(path, "must be a date YYYY-MM-DD")
            return None
        try:
            value = date.fromisoformat(value)
        except ValueError:
            check.fail(path, "must be a real calendar date")
            return None
    if value is not None:
        if today is None:
            # The latest "today" of any office: a letter dated today in WITA is not "future".
            today = max(datetime.now(o.tz).date() for o in config.offices.values())
        if value > today:
            check.fail(path, "must not be in the future")
            return None
    return value


def _php_version(check, site, stack, config):
    path = ("site", "php_version")
    if site is None:
        return None
    if stack == "static":
        if site.get("php_version") is not None:
            check.fail(path, "only for stack php; remove it for a static site")
        return None
    if isinstance(site.get("php_version"), float):
        check.fail(path, 'must be text (quote it: "8.2")')
        return None
    value = check.value(site, path, (str,), required=stack == "php")
    if value is not None and value not in config.php_versions:
        check.fail(path, f"must be one of the supported versions: {', '.join(config.php_versions)}")
        return None
    return value


def read_request_file(path):
    """The bytes of a request file, refusing one over MAX_BYTES without reading it all.

    The size is checked before reading, and at most MAX_BYTES + 1 bytes are
    read, so a 10 MB file or a device that never ends costs no time or memory.
    """
    path = Path(path)
    too_big = ValidationError([Problem("(document)", f"larger than {MAX_BYTES} bytes")], str(path))
    try:
        if path.stat().st_size > MAX_BYTES:
            raise too_big
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as err:
        raise ValidationError([Problem("(file)", f"cannot read: {err.strerror}")], str(path)) from None
    if len(raw) > MAX_BYTES:
        raise too_big
    return raw


def _allow_exec(check, site, stack):
    """Optional: PHP may start processes (exec, shell_exec, proc_open...); off unless asked for."""
    path = ("site", "allow_exec")
    value = check.value(site, path, (bool,), required=False)
    if value and stack == "static":
        check.fail(path, "only for stack php; remove it for a static site")
        return False
    return bool(value)


def _tls_optional(check, site, tls):
    """Optional: may the site go live without TLS while the CA's limit holds its certificate back?"""
    path = ("site", "tls_optional")
    value = check.value(site, path, (bool,), required=False)
    if value and tls is False:
        check.fail(path, "only with tls: true; remove it for a site without TLS")
        return False
    return bool(value)


def load_request(path, config, today=None):
    """Read and validate a request file."""
    return validate(read_request_file(path), config, source=str(path), today=today)
