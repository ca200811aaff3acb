"""A request for one of the offices' services: its model, and validation that reports every problem at once.

Each service has its own shape: hosting gives `site:`, website gives `website:`
(the site's name, where its content comes from, and the hosting it needs if
the name has no site yet), the two application services give `application:`
(the agency's need; an optional `hosting:` for what the application will run on).

The request's identity is the sha256 of the exact bytes submitted; an approval
names that hash, so an edited file is a different request.

Free text (names, subject, purpose, letter number) is checked only to be
printable and bounded; it is stored and shown, never put into a shell line,
SQL, an Apache config or an Ansible template. Host-side names come from
`site.subdomain` through `provisioner.naming`.
"""

import hashlib
import re
import urllib.parse
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from provisioner import naming, yamlsrc
from provisioner.errors import ValidationError
from provisioner.yamlsrc import Problem

SERVICES = ("hosting", "website", "konsultasi-aplikasi", "aplikasi-api")
APPLICATION_SERVICES = ("konsultasi-aplikasi", "aplikasi-api")
# The section each service's request gives (an unknown service is checked as hosting).
SECTIONS = {"hosting": "site", "website": "website", "konsultasi-aplikasi": "application",
            "aplikasi-api": "application"}
HOSTING_FIELDS = ("stack", "php_version", "database", "quota_mb", "bandwidth_kbps", "dedicated_ip", "tls",
                  "allow_exec", "tls_optional")
SITE_FIELDS = ("subdomain", "zone") + HOSTING_FIELDS
WEBSITE_FIELDS = ("subdomain", "zone", "source", "health_check", "hosting")
APPLICATION_FIELDS = ("name", "need", "users", "data", "budget_source", "kind", "extends", "scope",
                      "integrations", "hosting")
# The top level of a request; a section of another service is refused with its own message.
TOP_FIELDS = ("id", "service", "letter", "agency", "contact", "site", "website", "application", "office",
              "purpose", "linked_request")
LINKED_RULE = "set only by `provision request spawn-hosting`"
APPLICATION_KINDS = {"new": "pembuatan", "extend": "pengembangan"}
MAX_INTEGRATIONS = 20
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
# Where a website's content comes from: an absolute path on the controller, or a git URL.
# A user or host starting with "-" would reach ssh as an option (-oProxyCommand=...): the
# first character of each is a letter, digit or "_" (a host: a letter or digit).
_USER = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}"
_HOST = r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}"
SOURCE_URL = re.compile(rf"(https://|ssh://)({_USER}@)?{_HOST}(:[0-9]{{1,5}})?/\S+|file:///\S+|"
                        rf"{_USER}@{_HOST}:[^\s/-]\S*")
MAX_SOURCE = 500
# A git ref as `git check-ref-format` allows it (and a commit id): no space, ~ ^ : ? * [ \ or "..".
REF = re.compile(r"[A-Za-z0-9._/+-]{1,200}")
HEALTH_CHECK = re.compile(r"/[!-~]{0,199}")


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
class HostingOptions:
    """A site section without its name: the hosting a website needs when its name has no site yet."""

    stack: str
    php_version: str | None
    database: bool
    quota_mb: int
    bandwidth_kbps: int
    dedicated_ip: bool
    tls: bool
    allow_exec: bool = False
    tls_optional: bool = False

    def site(self, subdomain, zone):
        return Site(subdomain, zone, **vars(self))


@dataclass(frozen=True)
class Website:
    subdomain: str
    zone: str
    source: str  # an absolute controller path or a git URL, without its @REF
    ref: str | None
    health_check: str
    hosting: HostingOptions | None

    @property
    def fqdn(self):
        return naming.fqdn(self.subdomain, self.zone)

    @property
    def hosting_site(self):
        """The Site a hosting request for this website asks for (None without `hosting:`)."""
        return self.hosting.site(self.subdomain, self.zone) if self.hosting else None


@dataclass(frozen=True)
class Application:
    name: str
    need: str
    users: str
    data: str
    budget_source: str | None
    kind: str | None  # aplikasi-api: new | extend
    extends: str | None
    scope: str | None
    integrations: tuple = ()
    hosting: Site | None = None

    @property
    def kind_text(self):
        """The kind as the SOP says it: pembuatan / pengembangan."""
        return APPLICATION_KINDS.get(self.kind)


@dataclass(frozen=True)
class Request:
    id: str
    service: str
    letter: Letter
    agency: Agency
    contact: Contact
    site: Site | None  # hosting requests (and requests stored before the services had shapes)
    purpose: str
    office: str  # office key, from the zone (or the service, for an application without hosting)
    raw: bytes
    sha256: str
    source: str
    website: Website | None = None
    application: Application | None = None
    linked_request: str | None = None

    @property
    def fqdn(self):
        """The site the request is about, or None (an application without hosting)."""
        if self.site is not None:
            return self.site.fqdn
        if self.website is not None:
            return self.website.fqdn
        if self.application is not None and self.application.hosting is not None:
            return self.application.hosting.fqdn
        return None

    @property
    def hosting_site(self):
        """The Site a hosting request spawned from this one would ask for, or None."""
        if self.website is not None:
            return self.website.hosting_site
        if self.application is not None:
            return self.application.hosting
        return None

    def summary(self):
        """A plain dict of the validated fields, for --json and the store."""
        out = {
            "id": self.id, "service": self.service, "office": self.office, "fqdn": self.fqdn,
            "letter": {"number": self.letter.number, "date": self.letter.date.isoformat(),
                       "subject": self.letter.subject},
            "agency": {"code": self.agency.code, "name": self.agency.name},
            "contact": vars(self.contact).copy(),
            "purpose": self.purpose, "sha256": self.sha256, "linked_request": self.linked_request,
        }
        if self.site is not None:
            out["site"] = dict(vars(self.site), fqdn=self.site.fqdn)
        if self.website is not None:
            out["website"] = dict(vars(self.website), fqdn=self.website.fqdn,
                                  hosting=vars(self.website.hosting).copy() if self.website.hosting else None)
        if self.application is not None:
            app = self.application
            out["application"] = dict(vars(app), integrations=list(app.integrations),
                                      hosting=dict(vars(app.hosting), fqdn=app.hosting.fqdn) if app.hosting else None)
        return out


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

    def subsection(self, data, path, required=True):
        """The mapping at the last key of `path` in `data`, or None (a problem if required)."""
        if data is None:
            return None
        key = path[-1]
        if key not in data or data[key] is None:
            if required:
                self.fail(path, "required")
            return None
        if not isinstance(data[key], dict):
            self.fail(path, "must be a mapping of fields")
            return None
        return data[key]

    def only(self, data, path, allowed):
        """A section's keys beyond `allowed` are refused: a misspelt optional field must not pass unseen."""
        for key in (data or {}):
            if key not in allowed:
                self.fail(path + (str(key),), "unknown field; allowed: " + ", ".join(allowed))

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
                     date: "a date YYYY-MM-DD", list: "a list"}
            self.fail(path, "must be " + " or ".join(names.get(k, k.__name__) for k in kinds))
            return None
        return value

    def pattern(self, data, path, regex, rule):
        value = self.value(data, path, (str,))
        if value is not None and not (value.isascii() and regex.fullmatch(value)):
            self.fail(path, rule)
            return None
        return value

    def text_list(self, data, path, max_items, max_len, required=False, min_items=0):
        """A list of one-line texts (None if absent or of a wrong length); every bad item is its own problem."""
        value = self.value(data, path, (list,), required=required)
        if value is None:
            return None
        if len(value) < min_items:
            self.fail(path, f"must have at least {min_items} item(s)")
            return None
        if len(value) > max_items:
            self.fail(path, f"must have at most {max_items} items")
            return None
        items = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip() or len(item) > max_len or not item.isprintable():
                self.fail(path + (i,), f"must be printable text of at most {max_len} characters on one line")
            else:
                items.append(item)
        return items

    def text(self, data, path, max_len, multiline=False, required=True):
        value = self.value(data, path, (str,), required=required)
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


def validate(raw, config, source="<request>", today=None, stored=False, spawned=False, registered=False):
    """Parse and check request bytes; return a Request or raise ValidationError.

    `today` is the date in the office's time zone (tests pin it). `stored` reads
    content accepted earlier (removal, rotation, letters, audit): the rules that
    only gate new submissions (encoded or reserved labels, a service the office
    still runs) are skipped, so a rule added later never strands a live site.
    Provisioning from a stored request uses the full rules.
    `spawned` is for provisioner.sop.spawn only: the hosting request it writes names
    its parent in `linked_request`, a field a person's request may not give (it would
    tie the request to another one's waiting step). `registered` reads content the
    engine registered earlier under the full rules (provisioning from the store): the
    shape it was accepted in (its fields, a linked_request spawn-hosting set) stands.
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
    accepted = stored or registered
    if not accepted:
        # A misspelt optional field must not pass unseen; requests stored earlier still load.
        check.only(data, (), TOP_FIELDS)

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

    site = website = application = None
    own = SECTIONS.get(service, "site")
    # Requests stored before each service had its own shape gave every service a `site:`;
    # they are read as they were accepted (letters, records), never refused now.
    legacy = stored and own != "site" and own not in data and isinstance(data.get("site"), dict)
    if legacy:
        own = "site"
    for name in sorted(set(SECTIONS.values()) - {own}):
        if name in data:
            owners = sorted(k for k, v in SECTIONS.items() if v == name)
            check.fail((name,), f"only for service {' or '.join(owners)}; service {service or '(none)'} "
                                f"gives {own}:")
    zone = None
    if own == "site":
        site_data = check.section(data, "site")
        site, zone = _site(check, site_data, ("site",), config, stored, closed=not accepted)
    elif own == "website":
        website, zone = _website(check, data, config, stored)
    else:
        application = _application(check, data, service, config, stored)
        if application is not None and application.hosting is not None:
            zone = application.hosting.zone
    if zone is None and own != "site" and own not in data and isinstance(data.get("site"), dict):
        # A request in another service's shape still says which office it is for: refusing the
        # service that office does not run is the more useful answer than the shape alone.
        misplaced = data["site"].get("zone")
        zone = misplaced if isinstance(misplaced, str) and config.office_for_zone(misplaced) else None
    office = _office(check, data, service, zone, config, stored)
    if office is None and not check.problems:
        # A stored application request whose service no office runs any more, say.
        check.fail(("office",), f"required: no office runs {service} now; name the office")
    linked = None
    if "linked_request" in data and not (accepted or spawned):
        check.fail(("linked_request",), LINKED_RULE)
    elif data.get("linked_request") is not None:
        linked = check.pattern(data, ("linked_request",), REQUEST_ID,
                               "must be a request id like HST-2024-0007")

    purpose = check.text(data, ("purpose",), 1000, multiline=True)

    if check.problems:
        problems = sorted(check.problems, key=lambda p: (p.line or 0, p.field))
        raise ValidationError(_shown(problems), source)
    return Request(
        id=request_id, service=service,
        letter=Letter(letter_number, letter_date, subject),
        agency=Agency(agency_code, agency_name),
        contact=Contact(contact_name, nip, position, phone, email),
        site=site, website=website, application=application, linked_request=linked,
        purpose=purpose, office=office.key, raw=bytes(raw), sha256=content_sha256(raw),
        source=source,
    )


def _name(check, section, prefix, config, stored):
    """A section's subdomain and zone, checked as a hosting request's are."""
    subdomain = check.value(section, prefix + ("subdomain",), (str,))
    if subdomain is not None:
        for rule in naming.label_problems(subdomain, config.reserved_labels, stored=stored):
            check.fail(prefix + ("subdomain",), rule)
            subdomain = None
    zone = check.value(section, prefix + ("zone",), (str,))
    if zone is not None and config.office_for_zone(zone) is None:
        check.fail(prefix + ("zone",), "must be a zone the office manages: " + ", ".join(sorted(config.zones)))
        zone = None
    return subdomain, zone


def _hosting_options(check, section, prefix, config):
    """The fields of a site section other than its name; None if any is wrong."""
    before = len(check.problems)
    stack = check.value(section, prefix + ("stack",), (str,))
    if stack is not None and stack not in STACKS:
        check.fail(prefix + ("stack",), f"must be one of: {', '.join(STACKS)}")
    php_version = _php_version(check, section, stack, config, prefix)
    database = check.value(section, prefix + ("database",), (bool,))
    quota = check.value(section, prefix + ("quota_mb",), (int,))
    if quota is not None and not 1 <= quota <= config.limits.quota_mb_max:
        check.fail(prefix + ("quota_mb",), f"must be between 1 and {config.limits.quota_mb_max}")
    bandwidth = check.value(section, prefix + ("bandwidth_kbps",), (int,))
    if bandwidth is not None and not 0 <= bandwidth <= config.limits.bandwidth_kbps_max:
        check.fail(prefix + ("bandwidth_kbps",),
                   f"must be between 0 (unlimited) and {config.limits.bandwidth_kbps_max}")
    dedicated_ip = check.value(section, prefix + ("dedicated_ip",), (bool,))
    tls = check.value(section, prefix + ("tls",), (bool,))
    allow_exec = _allow_exec(check, section, stack, prefix)
    tls_optional = _tls_optional(check, section, tls, prefix)
    if section is None or len(check.problems) > before:
        return None
    return HostingOptions(stack, php_version, database, quota, bandwidth, dedicated_ip, tls, allow_exec,
                          tls_optional)


def _site(check, section, prefix, config, stored, closed=True):
    """A whole site section (name and hosting fields); `closed` refuses unknown keys in it."""
    if closed:
        check.only(section, prefix, SITE_FIELDS)
    subdomain, zone = _name(check, section, prefix, config, stored)
    options = _hosting_options(check, section, prefix, config)
    if options is None or subdomain is None or zone is None:
        return None, zone
    return options.site(subdomain, zone), zone


def _website(check, data, config, stored):
    prefix = ("website",)
    section = check.subsection(data, prefix)
    check.only(section, prefix, WEBSITE_FIELDS)
    subdomain, zone = _name(check, section, prefix, config, stored)
    source, ref = _source(check, section, prefix + ("source",), None if stored else config.website.source_roots)
    health = "/"
    if section is not None and section.get("health_check") is not None:
        health = check.pattern(section, prefix + ("health_check",), HEALTH_CHECK,
                               "must be a path starting with /, printable ASCII without spaces, "
                               "at most 200 characters")
    hosting = None
    hosting_section = check.subsection(section, prefix + ("hosting",), required=False)
    if hosting_section is not None:
        check.only(hosting_section, prefix + ("hosting",), HOSTING_FIELDS)
        hosting = _hosting_options(check, hosting_section, prefix + ("hosting",), config)
    if section is None or None in (subdomain, zone, source, health) or (hosting_section and hosting is None):
        return None, zone
    return Website(subdomain, zone, source, ref, health, hosting), zone


def _source(check, section, path, roots=None):
    """`source`: an absolute controller path or a git URL, with an optional @REF at the end.

    `roots` (website.source_roots, when configured): a local path or file:// must be under one
    of them (checked again at the deploy with symlinks resolved)."""
    value = check.value(section, path, (str,))
    if value is None:
        return None, None
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        check.fail(path, "must be printable ASCII without spaces")
        return None, None
    if len(value) > MAX_SOURCE:
        check.fail(path, f"must be at most {MAX_SOURCE} characters")
        return None, None
    location, ref = _split_ref(value)
    scheme, sep, rest = location.partition("://")
    if sep and ":" in rest.partition("/")[0].rpartition("@")[0]:
        # user:secret@ would be kept in the request, its plans, events and records.
        check.fail(path, "must not hold a password or token (user:secret@): use an SSH key or a git "
                         "credential helper")
        return None, None
    if ref is not None and (not REF.fullmatch(ref) or ".." in ref or ref.startswith(("-", "/"))
                            or ref.endswith(("/", ".", ".lock")) or "//" in ref or "/." in ref):
        check.fail(path, f"@{ref}: must be a git branch, tag or commit (letters, digits, . _ / + -; "
                         f"no '..', not starting with - or /)")
        return None, None
    if location.startswith("/"):
        if any(part in ("..", ".") for part in location.split("/")):
            check.fail(path, "must be an absolute path without . or .. components")
            return None, None
    elif not SOURCE_URL.fullmatch(location):
        check.fail(path, "must be an absolute path on the controller (.tar.gz, .tgz, .zip or a git work tree) "
                         "or a git URL (https://, ssh://, file://, git@host:path; user and host not starting "
                         "with -), with an optional @REF")
        return None, None
    else:
        # git decodes %XX: a space, a control character or a dot component may hide behind one.
        decoded = urllib.parse.unquote(location)
        if not decoded.isprintable() or any(c.isspace() for c in decoded):
            check.fail(path, "must not contain spaces or control characters, percent-encoded or not")
            return None, None
        if location.startswith("file://") and any(
                part in ("..", ".") for part in decoded[len("file://"):].split("/")):
            check.fail(path, "file:// must name an absolute path without . or .. components")
            return None, None
    local = location if location.startswith("/") else (
        urllib.parse.unquote(location)[len("file://"):] if location.startswith("file://") else None)
    if roots and local is not None and not any(local == r.rstrip("/") or local.startswith(r.rstrip("/") + "/")
                                               for r in roots):
        check.fail(path, f"a path on the controller must be under website.source_roots ({', '.join(roots)})")
        return None, None
    return location, ref


def _split_ref(value):
    """'git@host:org/app.git@v1.2' -> ('git@host:org/app.git', 'v1.2').

    Only an @ inside the path part can start the ref: the @ of `git@host:` or of
    `https://user@host/` is part of the address.
    """
    if value.startswith("/"):
        path_start = 0
    elif "://" in value:
        scheme_end = value.index("://") + 3
        slash = value.find("/", scheme_end)
        path_start = slash if slash >= 0 else len(value)
    else:
        colon = value.find(":")
        path_start = colon if colon >= 0 else len(value)
    at = value.rfind("@")
    if at > path_start:
        return value[:at], value[at + 1:]
    return value, None


def _application(check, data, service, config, stored):
    prefix = ("application",)
    section = check.subsection(data, prefix)
    check.only(section, prefix, APPLICATION_FIELDS)
    before = len(check.problems)
    api = service == "aplikasi-api"
    name = check.text(section, prefix + ("name",), 200)
    need = check.text(section, prefix + ("need",), 3000, multiline=True)
    users = check.text(section, prefix + ("users",), 500)
    data_text = check.text(section, prefix + ("data",), 1000, multiline=True)
    budget = check.text(section, prefix + ("budget_source",), 300, required=not api)
    kind = extends = scope = None
    integrations = ()
    if api:
        kind = check.value(section, prefix + ("kind",), (str,))
        if kind is not None and kind not in APPLICATION_KINDS:
            check.fail(prefix + ("kind",), "must be new (pembuatan) or extend (pengembangan)")
        extends = check.text(section, prefix + ("extends",), 200, required=kind == "extend")
        if extends is not None and kind == "new":
            check.fail(prefix + ("extends",), "only with kind: extend; remove it for a new application")
        scope = check.text(section, prefix + ("scope",), 3000, multiline=True)
        integrations = _text_list(check, section, prefix + ("integrations",), MAX_INTEGRATIONS, 200)
    elif section is not None:
        for key in ("kind", "extends", "scope", "integrations"):
            if key in section:
                check.fail(prefix + (key,), "only for service aplikasi-api")
    hosting = None
    hosting_section = check.subsection(section, prefix + ("hosting",), required=False)
    if hosting_section is not None:
        hosting, _zone = _site(check, hosting_section, prefix + ("hosting",), config, stored)
    if section is None or len(check.problems) > before:
        return None
    return Application(name, need, users, data_text, budget, kind, extends, scope, integrations, hosting)


def _text_list(check, section, path, max_items, max_len):
    return tuple(check.text_list(section, path, max_items, max_len) or ())


def _office(check, data, service, zone, config, stored):
    """The office: from the zone; for an application without hosting, the one office running the service.

    A top-level `office:` names it where several offices run the service.
    """
    named = None
    if data.get("office") is not None:
        named = check.value(data, ("office",), (str,))
        if named is not None and named not in config.offices:
            check.fail(("office",), "must be one of the offices: " + ", ".join(sorted(config.offices)))
            named = None
    office = config.office_for_zone(zone) if zone is not None else None
    if office is not None and named is not None and named != office.key:
        check.fail(("office",), f"must be {office.key}, the office of zone {zone}, or left out")
    if office is None and named is not None:
        office = config.office(named)
    if office is None and zone is None and service in APPLICATION_SERVICES:
        running = sorted(o.key for o in config.offices.values() if service in o.sops)
        if len(running) == 1:
            office = config.office(running[0])
        elif len(running) > 1:
            check.fail(("office",), f"required: offices {', '.join(running)} all run {service}; "
                                    f"name one (or give application.hosting)")
        elif not stored:
            check.fail(("service",), f"must be a service an office runs; none runs {service}")
    if office is not None and service in SERVICES and service not in office.sops and not stored:
        check.fail(("service",), f"must be a service office {office.key} runs (offices.{office.key}.sops): "
                                 + (", ".join(office.sops) or "none"))
    return office


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


def _php_version(check, site, stack, config, prefix=("site",)):
    path = prefix + ("php_version",)
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


def _allow_exec(check, site, stack, prefix=("site",)):
    """Optional: PHP may start processes (exec, shell_exec, proc_open...); off unless asked for."""
    path = prefix + ("allow_exec",)
    value = check.value(site, path, (bool,), required=False)
    if value and stack == "static":
        check.fail(path, "only for stack php; remove it for a static site")
        return False
    return bool(value)


def _tls_optional(check, site, tls, prefix=("site",)):
    """Optional: may the site go live without TLS while the CA's limit holds its certificate back?"""
    path = prefix + ("tls_optional",)
    value = check.value(site, path, (bool,), required=False)
    if value and tls is False:
        check.fail(path, "only with tls: true; remove it for a site without TLS")
        return False
    return bool(value)


def line_of(raw, path):
    """The line of the field at `path` in request bytes (or of its nearest parent), for a later check's problem."""
    try:
        return yamlsrc.load(raw.decode("utf-8")).line_of(path)
    except (UnicodeDecodeError, ValueError):
        return None


def load_request(path, config, today=None):
    """Read and validate a request file."""
    return validate(read_request_file(path), config, source=str(path), today=today)
