"""The office profile and paths: which offices, zones, hours, calendars, state URL.

Looked up in this order: `--config PATH`, env PROVISIONER_CONFIG, ./provisioner.yaml,
/etc/provisioner/provisioner.yaml; with none of them, built-in defaults that
describe the two offices. Secrets never live in this file: the webhook secret
comes from env PROVISIONER_WEBHOOK_SECRET or from a file the config points to.
"""

import os
import re
import stat
from datetime import time
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError as PydanticError, field_validator

from provisioner import yamlsrc
from provisioner.errors import ConfigError

ENV_CONFIG = "PROVISIONER_CONFIG"
ENV_STATE_URL = "PROVISIONER_STATE_URL"
ENV_HOME = "PROVISIONER_HOME"
ENV_WEBHOOK_SECRET = "PROVISIONER_WEBHOOK_SECRET"
SEARCH_PATHS = (Path("provisioner.yaml"), Path("/etc/provisioner/provisioner.yaml"))

# The repository's own sop/ directory: the default when the config names none.
REPO_ROOT = Path(__file__).resolve().parent.parent
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_PERIOD = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])")

# Labels an agency may not take: they name the office's own services.
DEFAULT_RESERVED_LABELS = (
    "www", "mail", "smtp", "imap", "pop", "pop3", "webmail", "mx", "ns", "ns1", "ns2",
    "ns3", "dns", "ftp", "sftp", "ssh", "vpn", "proxy", "admin", "root", "localhost",
    "autodiscover", "autoconfig", "cpanel", "whm", "portal", "intranet", "lab",
)

_TYPICAL_HOURS = {
    # Mon-Thu 07:30-16:00, Fri 07:30-16:30: the usual local-government week.
    "mon": ["07:30-16:00"], "tue": ["07:30-16:00"], "wed": ["07:30-16:00"],
    "thu": ["07:30-16:00"], "fri": ["07:30-16:30"],
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Signer(_Strict):
    """Who signs the office's letters: jabatan, full name with degrees, pangkat/golongan, NIP."""

    position: str
    name: str
    rank: str | None = None
    nip: str | None = None


# Placeholders of a letter-number pattern; {urut} (the running number) is required.
LETTER_NUMBER_FIELDS = ("klasifikasi", "urut", "tahun")


class LetterProfile(_Strict):
    """The office as its letters show it (kop surat, date line, signature, tembusan, numbering)."""

    government: str  # "PEMERINTAH KOTA TARAKAN"
    office_name: str  # the agency line(s) of the kop, in capitals as printed
    address: str
    telephone: str | None = None
    website: str | None = None
    email: str | None = None
    logo: Path | None = None  # PNG, JPEG or SVG shown left of the kop
    city: str  # the date line: "<city>, 22 November 2026"
    signer: Signer
    copies: list[str] = Field(default_factory=list)  # tembusan
    # The full jabatan of an SOP role as documents address it (role key -> title), for the
    # roles the SOP names only by level: kabid: "Kepala Bidang Aplikasi Informatika". A role
    # left out prints as a placeholder to be written in ("[Kepala Bidang ...]").
    positions: dict[str, str] = Field(default_factory=dict)
    # Archive classification code and pattern of the letter number, with a
    # running number per office and year: "{klasifikasi}/{urut}/DKISP/{tahun}".
    classification: str
    number_pattern: str = "{klasifikasi}/{urut}/{tahun}"

    @field_validator("number_pattern")
    @classmethod
    def _pattern(cls, value):
        import string

        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        except ValueError as err:
            raise ValueError(f"{value!r}: {err}") from None
        unknown = [f for f in fields if f not in LETTER_NUMBER_FIELDS]
        if unknown or "urut" not in fields:
            raise ValueError(f"{value!r}: use only {{klasifikasi}}, {{urut}}, {{tahun}}, "
                             f"and {{urut}} at least once")
        return value


class Office(_Strict):
    key: str
    name: str
    short_name: str
    timezone: str = "Asia/Makassar"
    zones: list[str]
    # weekday -> list of "HH:MM-HH:MM" working periods; a missing day is a day off.
    hours: dict[str, list[str]] = Field(default_factory=lambda: dict(_TYPICAL_HOURS))
    # An editable YAML file of extra holidays/cuti bersama and removals.
    calendar: Path | None = None
    # Kop, signer, tembusan and numbering of the office's letters.
    letters: LetterProfile | None = None
    # The SOPs the office runs: service -> SOP name in sop_dir (whose `office:`
    # must be this office). A request for a service not listed is refused.
    sops: dict[str, str] = Field(default_factory=dict)
    # How the ACME CA checks this office's names: dns-01 through the office's PowerDNS
    # API (works before the name is public) or http-01 on the site's port 80.
    tls_challenge: Literal["dns-01", "http-01"] = "dns-01"
    # Names on the hosts and in the zones that the office leaves unmanaged (see Hosting.unmanaged).
    unmanaged: list[str] = Field(default_factory=list)

    @field_validator("sops")
    @classmethod
    def _sops(cls, value):
        from provisioner.request import SERVICES

        for service, name in value.items():
            if service not in SERVICES:
                raise ValueError(f"{service!r} is not a service ({', '.join(SERVICES)})")
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,39}", name):
                raise ValueError(f"{service}: {name!r} is not an SOP name")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value):
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("hours")
    @classmethod
    def _hours(cls, value):
        for day, periods in value.items():
            if day not in WEEKDAYS:
                raise ValueError(f"{day!r} is not a weekday key ({', '.join(WEEKDAYS)})")
            for period in periods:
                match = _PERIOD.fullmatch(period)
                if not match or match.group(1, 2) >= match.group(3, 4):
                    raise ValueError(f"{day}: {period!r} is not a HH:MM-HH:MM period")
        return value

    @property
    def tz(self):
        return ZoneInfo(self.timezone)

    def periods(self, weekday):
        """Working periods of a weekday (0 = Monday) as (start, end) times."""
        out = []
        for period in self.hours.get(WEEKDAYS[weekday], []):
            start, end = period.split("-")
            out.append((time.fromisoformat(start), time.fromisoformat(end)))
        return sorted(out)


class Webhook(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    secret_file: Path | None = None
    max_skew_seconds: int = Field(default=300, ge=1, le=3600)
    # A client must have sent its whole post within this many seconds.
    client_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Threads that check and apply decisions; further posts wait their turn.
    workers: int = Field(default=8, ge=1, le=64)
    # Open connections at once; beyond this a client gets 503.
    max_connections: int = Field(default=1000, ge=1, le=100000)
    # Approvals that arrive within this many seconds of the first are provisioned as one
    # batch (one plan and one apply); 0 provisions each approval as it arrives.
    batch_window_seconds: float = Field(default=2.0, ge=0, le=60)


class Limits(_Strict):
    quota_mb_max: int = Field(default=102400, ge=1)
    bandwidth_kbps_max: int = Field(default=10_000_000, ge=0)


# The lab's ACME CA (Pebble on ca1) and its files: see provisioner/lab/topology.py.
LAB_ACME_DIRECTORY = "https://10.77.0.41:14000/dir"
LAB_STATE = Path("/var/lib/provisioner-lab")


class Acme(_Strict):
    """The ACME CA that issues the sites' certificates (`tls_source: acme`)."""

    # The CA's directory URL; the lab's Pebble by default.
    directory: str = LAB_ACME_DIRECTORY
    # Contact address of the account (the CA writes to it about expiry and incidents).
    email: str = "hostmaster@tarakankota.go.id"
    # The account key, sealed with the state key like the passwords; made and
    # registered on first use. Default: <state home>/acme-account.key.
    account_key_file: Path | None = None
    # CA certificates the directory's HTTPS is checked against (None: the system's).
    directory_ca_bundle: Path | None = LAB_STATE / "ca" / "ca.crt"
    # Roots the served site certificates must chain to (None: the system's store).
    trust: Path | None = LAB_STATE / "acme" / "roots.pem"
    # The CA's limit of new certificates per registered domain in 7 days (Let's
    # Encrypt: 50), counted here; the registered domains default to the offices' zones.
    weekly_limit: int = Field(default=50, ge=1, le=100000)
    registered_domains: list[str] = Field(default_factory=list)
    # `tls renew` renews certificates that expire within this many days, at most
    # max_renewals a run (the soonest first; the rest wait for the next run).
    renew_within_days: int = Field(default=30, ge=1, le=3650)
    max_renewals: int = Field(default=20, ge=1, le=10000)
    # Seconds to wait for the challenge records at every name server, and for an order.
    propagation_timeout: float = Field(default=60.0, gt=0, le=3600)
    order_timeout: int = Field(default=180, ge=10, le=3600)


class Hosting(_Strict):
    """Where hosting finds its hosts, certificates and keys, and where it keeps its files."""

    # Ansible inventory (groups nameservers, web, db); the lab's by default.
    inventory: Path = REPO_ROOT / "inventory" / "lab"
    dns_ttl: int = Field(default=300, ge=60, le=86400)
    # Seconds one PowerDNS API request may take (each is tried up to 3 times).
    dns_api_timeout: float = Field(default=10.0, gt=0, le=300)
    # Seconds one Ansible step (ip, db, web) may run before it is stopped and undone.
    step_timeout: int = Field(default=1800, ge=10, le=86400)
    # Sites checked from outside at once after an apply (each check mostly waits on the network).
    verify_workers: int = Field(default=16, ge=1, le=256)
    # acme: from the ACME CA in `acme` (the lab's Pebble by default);
    # lab-ca: certificates signed by the lab CA made at `lab up`;
    # files: <tls_dir>/<fqdn>.crt, .key and optional .chain issued elsewhere.
    tls_source: Literal["acme", "lab-ca", "files"] = "acme"
    tls_dir: Path = LAB_STATE / "ca"
    acme: Acme = Field(default_factory=Acme)
    # Key that encrypts stored credentials; kept outside the state database.
    key_file: Path | None = None
    # ansible-runner artifacts and credentials sheets (default: under the state home).
    artifacts_dir: Path | None = None
    credentials_dir: Path | None = None
    # Names the office leaves unmanaged on purpose (a site name, vhost file, PHP-FPM pool,
    # database or database user): the audit does not report them as extra and `provision
    # import` lists them as ignored. Offices may add their own in offices.<key>.unmanaged.
    unmanaged: list[str] = Field(default_factory=list)


# The lab's backup host (backup1): restic repositories over SFTP, one per office.
LAB_BACKUP_REPOSITORY = "sftp:restic@10.77.0.51:/srv/restic/{office}"


class Backup(_Strict):
    """Backups with restic (`provision backup`, docs/backups.md); the lab's backup1 by default."""

    # The restic repository of each office: a template where {office} is the office key (the
    # toolkit's own state goes to office "provisioner"): sftp:USER@HOST:/PATH, a local
    # directory, or s3:... (credentials for S3 from the environment, as restic reads them).
    repository: str = LAB_BACKUP_REPOSITORY
    # The SSH key and known_hosts of the sftp: repositories (the lab's by default).
    ssh_key: Path | None = LAB_STATE / "secrets" / "id_ed25519"
    known_hosts: Path | None = LAB_STATE / "known_hosts"
    # Retention, per site and kind (restic forget --keep-*), then --prune.
    keep_daily: int = Field(default=7, ge=0, le=3650)
    keep_weekly: int = Field(default=4, ge=0, le=520)
    keep_monthly: int = Field(default=6, ge=0, le=1200)
    # The audit's backup-stale: a live site with no successful backup in this many hours.
    stale_after_hours: float = Field(default=36.0, gt=0, le=24 * 365)
    # `backup verify`: sites test-restored per run, and how much of the packs restic reads back
    # ("10%", "1/5" or "all").
    verify_sample: int = Field(default=3, ge=0, le=10000)
    read_data: str = "10%"
    # Dumps and file reads on the sites' hosts run under nice -n 19 and ionice -c 3.
    nice: bool = True
    # Seconds one stream (a site's files or dump) may take.
    timeout: int = Field(default=6 * 3600, ge=10, le=7 * 86400)
    # The key file is backed up encrypted with this passphrase (or env
    # PROVISIONER_BACKUP_PASSPHRASE); with neither, it is left out and the run says so.
    key_passphrase_file: Path | None = None

    @field_validator("repository")
    @classmethod
    def _repository(cls, value):
        try:
            value.format(office="x")
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"{value!r}: the only placeholder allowed is {{office}}") from None
        if value.startswith("sftp:") and not re.fullmatch(r"sftp:[a-z_][a-z0-9_-]*@[A-Za-z0-9.-]+:/[^\s]*", value):
            raise ValueError(f"{value!r}: write an sftp repository as sftp:USER@HOST:/ABSOLUTE/PATH")
        return value

    @field_validator("read_data")
    @classmethod
    def _read_data(cls, value):
        if value != "all" and not re.fullmatch(r"([1-9][0-9]?(\.[0-9]+)?%|100%|[1-9][0-9]*/[1-9][0-9]*)", value):
            raise ValueError(f"{value!r}: write a percentage (10%), a fraction (1/5) or all")
        return value


# A relative path inside a release: segments of letters, digits, '.', '_', '-', never '.' or '..'.
_RELEASE_PATH = re.compile(r"(?!\.{1,2}(/|$))[A-Za-z0-9_.-]+(/(?!\.{1,2}(/|$))[A-Za-z0-9_.-]+)*")


class Website(_Strict):
    """Website deploys (`provision website`, the website SOP's installation step)."""

    # Releases kept on the web host per site, the new one included; older ones are pruned
    # (never the current or the previous one, so at least 2).
    keep_releases: int = Field(default=5, ge=2, le=100)
    # Limits of one release's content, checked on the controller before anything is copied.
    max_files: int = Field(default=20000, ge=1, le=10_000_000)
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    # Uncompressed size / compressed size above which an archive (or a zip member) is a bomb.
    max_ratio: float = Field(default=100.0, gt=1, le=100000)
    # Seconds the optional command (`--run`) may take as the site user, and the git fetch.
    command_timeout: int = Field(default=600, ge=1, le=86400)
    # Seconds the site has after the switch to answer 200 (and its marker) at the health path.
    health_timeout: float = Field(default=30.0, gt=0, le=600)
    # Paths every release links to <home>/shared/<path> (besides those in its `.shared` file).
    shared: list[str] = Field(default_factory=list)

    @field_validator("shared")
    @classmethod
    def _shared(cls, value):
        for path in value:
            if not _RELEASE_PATH.fullmatch(path) or len(path) > 200:
                raise ValueError(f"{path!r} is not a relative path inside a release (segments of A-Z a-z 0-9 "
                                 f"'.', '_', '-', no '..', no leading '/', at most 200 characters)")
        return value

    # Directories on the controller a request's local source (a path or file://) must be under,
    # symlinks resolved. None configured: a request's local source is refused; the CLI
    # (`provision website deploy`) takes any local path its user can read.
    source_roots: list[str] = Field(default_factory=list)

    @field_validator("source_roots")
    @classmethod
    def _source_roots(cls, value):
        for root in value:
            if not root.startswith("/") or any(part in (".", "..") for part in root.split("/")) or root == "/":
                raise ValueError(f"{root!r}: must be an absolute directory other than / without . or .. components")
        return value


class Config(_Strict):
    offices: dict[str, Office]
    state_url: str | None = None
    state_dir: Path = Path("var")
    sop_dir: Path = REPO_ROOT / "sop"
    php_versions: list[str] = Field(default_factory=lambda: ["8.2"])
    reserved_labels: list[str] = Field(default_factory=lambda: list(DEFAULT_RESERVED_LABELS))
    limits: Limits = Field(default_factory=Limits)
    webhook: Webhook = Field(default_factory=Webhook)
    hosting: Hosting = Field(default_factory=Hosting)
    website: Website = Field(default_factory=Website)
    backup: Backup = Field(default_factory=Backup)
    source: str = "built-in defaults"

    def home(self):
        """The directory of the toolkit's own files: $PROVISIONER_HOME or state_dir."""
        home = os.environ.get(ENV_HOME)
        return (Path(home) if home else self.state_dir).absolute()

    def private_home(self):
        """The home, made (or tightened to) 0700: it holds personal data and the key."""
        home = self.home()
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = home.stat()
        if info.st_mode & 0o077:
            if info.st_uid != os.geteuid():
                # Not ours to chmod: saying so beats keeping state.db readable to others.
                raise ConfigError(f"state home {home} is mode {stat.S_IMODE(info.st_mode):04o} owned by uid "
                                  f"{info.st_uid}: others can read the state database; run "
                                  f"`chmod 700 {home}` as its owner or set {ENV_HOME} to a private directory")
            home.chmod(0o700)
        return home

    def key_file(self):
        return self.hosting.key_file or self.private_home() / "secret.key"

    def acme_account_key_file(self):
        return self.hosting.acme.account_key_file or self.private_home() / "acme-account.key"

    def registered_domains(self):
        """The registered domains certificates count against: configured, else the offices' zones."""
        return self.hosting.acme.registered_domains or sorted(self.zones)

    def tls_trust(self):
        """The CA file the served site certificates are checked against (None: the system's store)."""
        if self.hosting.tls_source == "lab-ca":
            return self.hosting.tls_dir / "ca.crt"
        if self.hosting.tls_source == "acme":
            return self.hosting.acme.trust
        return None

    def artifacts_dir(self):
        return self.hosting.artifacts_dir or self.home() / "artifacts"

    def credentials_dir(self):
        return self.hosting.credentials_dir or self.home() / "credentials"

    def unmanaged(self, office=None):
        """The names left unmanaged: the hosting list, plus that office's own list when one is named.

        An office's list speaks only for its own things: it never hides another office's.
        """
        names = set(self.hosting.unmanaged)
        if office is not None:
            names |= set(self.office(office).unmanaged)
        return {n.rstrip(".").lower() for n in names}

    def unmanaged_by_zone(self):
        """zone -> the names left unmanaged in it (the hosting list and the zone's office's)."""
        return {zone: self.unmanaged(key) for key, o in self.offices.items() for zone in o.zones}

    @property
    def zones(self):
        return {zone: office for office in self.offices.values() for zone in office.zones}

    def office_for_zone(self, zone):
        return self.zones.get(zone)

    def office(self, key):
        try:
            return self.offices[key]
        except KeyError:
            raise ConfigError(f"no office {key!r} in {self.source}") from None

    def resolved_state_url(self):
        """env PROVISIONER_STATE_URL, then the file's state_url, then a SQLite file."""
        url = os.environ.get(ENV_STATE_URL) or self.state_url
        if url:
            return url
        return f"sqlite:///{self.private_home() / 'state.db'}"

    def webhook_secret(self):
        """The shared webhook secret as bytes; at least 32 bytes or a ConfigError."""
        if os.environ.get(ENV_WEBHOOK_SECRET):
            secret, origin = os.environ[ENV_WEBHOOK_SECRET].encode(), f"env {ENV_WEBHOOK_SECRET}"
        elif self.webhook.secret_file:
            try:
                secret = self.webhook.secret_file.read_bytes().rstrip(b"\r\n")
            except OSError as err:
                raise ConfigError(f"webhook secret file: {err}") from None
            origin = str(self.webhook.secret_file)
        else:
            raise ConfigError(f"no webhook secret: set {ENV_WEBHOOK_SECRET} or webhook.secret_file")
        if len(secret) < 32:
            raise ConfigError(f"webhook secret from {origin} is {len(secret)} bytes; at least 32 needed")
        return secret


def default_offices():
    calendars = REPO_ROOT / "sop" / "calendar"
    return {
        "tarakan": Office(
            key="tarakan",
            name="Dinas Komunikasi, Informatika, Statistik dan Persandian Kota Tarakan",
            short_name="DKISP Kota Tarakan",
            zones=["tarakankota.go.id"],
            calendar=calendars / "tarakan.yaml",
            letters=LetterProfile(
                government="PEMERINTAH KOTA TARAKAN",
                office_name="DINAS KOMUNIKASI, INFORMATIKA, STATISTIK DAN PERSANDIAN",
                address="Jl. Pulau Kalimantan No. 1 Tarakan 77131",
                telephone="0851-7999-0551",
                website="dkisp.tarakankota.go.id",
                email="dkisp@tarakankota.go.id",
                city="Tarakan",
                signer=Signer(position="Kepala Dinas Komunikasi, Informatika, Statistik dan Persandian",
                              name="dr. WITOYO", rank="Pembina Tk. I (IV/b)", nip="196501112000121002"),
                copies=["Wali Kota Tarakan (sebagai laporan)", "Sekretaris Daerah Kota Tarakan", "Arsip"],
                classification="400.14",
                number_pattern="{klasifikasi}/{urut}/DKISP/{tahun}",
            ),
            sops={"hosting": "hosting", "website": "website", "konsultasi-aplikasi": "konsultasi-aplikasi"},
        ),
        "buleleng": Office(
            key="buleleng",
            name="Dinas Komunikasi, Informatika, Persandian dan Statistik Kabupaten Buleleng",
            short_name="Dinas Kominfosanti Kabupaten Buleleng",
            zones=["bulelengkab.go.id"],
            calendar=calendars / "buleleng.yaml",
            letters=LetterProfile(
                government="PEMERINTAH KABUPATEN BULELENG",
                office_name="DINAS KOMUNIKASI, INFORMATIKA, PERSANDIAN DAN STATISTIK",
                # Not in the SOP document: the office's published address; confirm before use.
                address="Jl. Pahlawan No. 1 Singaraja 81113",
                website="kominfosanti.bulelengkab.go.id",
                email="kominfosanti@bulelengkab.go.id",
                city="Singaraja",
                signer=Signer(position="Kepala Dinas Komunikasi, Informatika, Persandian dan Statistik",
                              name="Dr. Drs. I Ketut Suweca, M.Si", nip="196206081982031008"),
                copies=["Bupati Buleleng (sebagai laporan)", "Sekretaris Daerah Kabupaten Buleleng", "Arsip"],
                classification="400.14",
                number_pattern="{klasifikasi}/{urut}/Kominfosanti/{tahun}",
            ),
            sops={"hosting": "hosting-buleleng", "aplikasi-api": "aplikasi-api"},
        ),
    }


def _find(path):
    if path:
        return Path(path)
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    for candidate in SEARCH_PATHS:
        if candidate.is_file():
            return candidate
    return None


def _absolute(data, base):
    """Paths in a config file are relative to the file, not to the working directory."""
    for key in ("state_dir", "sop_dir"):
        if key in data and data[key] is not None:
            data[key] = str(base / Path(data[key]).expanduser())
    offices = data.get("offices")
    for office in offices.values() if isinstance(offices, dict) else ():
        if isinstance(office, dict) and office.get("calendar"):
            office["calendar"] = str(base / Path(office["calendar"]).expanduser())
        letters = office.get("letters") if isinstance(office, dict) else None
        if isinstance(letters, dict) and letters.get("logo"):
            letters["logo"] = str(base / Path(letters["logo"]).expanduser())
    hosting = data.get("hosting")
    for key in ("inventory", "tls_dir", "key_file", "artifacts_dir", "credentials_dir"):
        if isinstance(hosting, dict) and hosting.get(key):
            hosting[key] = str(base / Path(hosting[key]).expanduser())
    acme = hosting.get("acme") if isinstance(hosting, dict) else None
    for key in ("account_key_file", "directory_ca_bundle", "trust"):
        if isinstance(acme, dict) and acme.get(key):
            acme[key] = str(base / Path(acme[key]).expanduser())
    backup = data.get("backup")
    for key in ("ssh_key", "known_hosts", "key_passphrase_file"):
        if isinstance(backup, dict) and backup.get(key):
            backup[key] = str(base / Path(backup[key]).expanduser())
    webhook = data.get("webhook")
    if isinstance(webhook, dict) and webhook.get("secret_file"):
        webhook["secret_file"] = str(base / Path(webhook["secret_file"]).expanduser())


def load_config(path=None):
    """Load the configuration; a missing or malformed explicit file is a ConfigError."""
    found = _find(path)
    if found is None:
        return Config(offices=default_offices())
    try:
        text = found.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config {found}: {err}") from None
    doc = yamlsrc.load(text)
    if doc.problems:
        raise ConfigError(f"{found}:{doc.problems[0].line}: {doc.problems[0]}")
    data = doc.data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{found}: the configuration must be a mapping")
    data = dict(data)
    _absolute(data, found.parent.absolute())
    if "offices" in data and isinstance(data["offices"], dict):
        for key, office in data["offices"].items():
            if isinstance(office, dict):
                office.setdefault("key", key)
    else:
        data.setdefault("offices", default_offices())
    try:
        return Config(source=str(found), **data)
    except PydanticError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        line = doc.line_of(loc)
        raise ConfigError(f"{found}:{line}: {yamlsrc.field_name(loc)}: {first['msg']}") from None
    except TypeError as err:
        raise ConfigError(f"{found}: {err}") from None
