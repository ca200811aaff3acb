"""Read live state from web and database hosts: one SSH session per host.

The probe is a small Python program run with sudo on the host; it reads its
input (derived names only) from its own text and prints JSON. It changes
nothing, so planning and audits can run it at any time.
"""

import json

from provisioner.errors import HostError
from provisioner.inventory import Host
from provisioner import ssh

WEB_PROBE = r'''
import grp, hashlib, json, os, pwd, subprocess
from stat import S_ISDIR, S_ISLNK, S_ISREG
INPUT = json.loads(__INPUT__)

def sha(path):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None

def kind(path):
    """What is at the path itself (a link is not followed): whether it can be the site's."""
    mode = os.lstat(path).st_mode
    for name, test in (("link", S_ISLNK), ("directory", S_ISDIR), ("file", S_ISREG)):
        if test(mode):
            return name
    return "other"

def stat(path):
    try:
        st = os.stat(path)
        what = kind(path)
    except OSError:
        return None
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = st.st_uid
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = st.st_gid
    # Owner and mode as Apache and PHP see them (through a link); `kind` says whether it was one.
    return {"owner": owner, "group": group, "mode": "%04o" % (st.st_mode & 0o7777), "kind": what}

def directives(path):
    """ServerName and DocumentRoot values as the vhost file states them (for the audit)."""
    found = {"servername": set(), "documentroot": set()}
    try:
        with open(path) as f:
            for line in f:
                words = line.split(None, 1)
                if len(words) == 2 and words[0].lower() in found:
                    found[words[0].lower()].add(words[1].strip().strip('"'))
    except OSError:
        pass
    return sorted(found["servername"]), sorted(found["documentroot"])

def default_vhosts(path, enabled):
    """address -> ports of the default vhosts the web_site role keeps, if Apache loads them."""
    found = {}
    if not os.path.exists(enabled):
        return found
    try:
        with open(path) as f:
            for line in f:
                words = line.strip().rstrip(">").split()
                if len(words) == 2 and words[0].lower() == "<virtualhost" and ":" in words[1]:
                    address, _, port = words[1].rpartition(":")
                    if port.isdigit():
                        found.setdefault(address, []).append(int(port))
    except OSError:
        pass
    return {a: sorted(set(p)) for a, p in found.items()}

def kept_addresses(path):
    """The addresses the public_ip role keeps for restarts ("address/prefix device" lines)."""
    try:
        with open(path) as f:
            return sorted({line.split()[0].split("/")[0] for line in f if line.split() and not line.startswith("#")})
    except OSError:
        return []

try:
    sftp_members = grp.getgrnam("sftp-sites").gr_mem
except KeyError:
    sftp_members = []

def password_set(user):
    """Whether the account has a usable password (never the hash itself: it stays here)."""
    try:
        with open("/etc/shadow") as f:
            for line in f:
                fields = line.split(":")
                if fields[0] == user:
                    return bool(fields[1]) and fields[1][0] not in "!*"
    except OSError:
        return None
    return False
sites = {}
for s in INPUT["sites"]:
    try:
        pw = pwd.getpwnam(s["user"])
        user = {"home": pw.pw_dir, "shell": pw.pw_shell}
    except KeyError:
        user = None
    # An adopted site's files are where they were found; a built one's where the toolkit puts them.
    vhost = s.get("vhost_file") or "/etc/apache2/sites-available/%s.conf" % s["fqdn"]
    pool = s.get("pool_file") or "/etc/php/%s/fpm/pool.d/%s.conf" % (s["php_version"], s["pool"])
    links = s["links"] if "links" in s else ["/etc/apache2/sites-enabled/%s.conf" % s["fqdn"]]
    server_names, document_roots = directives(vhost)
    sites[s["fqdn"]] = {
        "user": user,
        "sftp": s["user"] in sftp_members,
        "password_set": password_set(s["user"]) if user is not None else None,
        "home": stat(s["home"]),
        "docroot": stat(s["docroot"]),
        "logdir": stat(s["logdir"]),
        "vhost_sha256": sha(vhost),
        "vhost_enabled": all(os.path.exists(link) for link in links),
        "links_present": [link for link in links if os.path.lexists(link)],
        "server_names": server_names,
        "document_roots": document_roots,
        "pool_sha256": sha(pool),
        "tls_cert": os.path.exists(s.get("tls_cert_file") or "/etc/ssl/provisioner/%s.crt" % s["fqdn"]),
    }
    if s.get("suspend_file"):
        sites[s["fqdn"]]["suspend_sha256"] = sha(s["suspend_file"])
        sites[s["fqdn"]]["suspend_enabled"] = os.path.lexists(s["suspend_link"])
addrs = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True).stdout or "[]")
print(json.dumps({"sites": sites,
                  "addresses": sorted(a["local"] for i in addrs for a in i.get("addr_info", [])),
                  "kept_addresses": kept_addresses("/etc/provisioner/public-addresses"),
                  "default_vhosts": default_vhosts("/etc/apache2/conf-available/provisioner-default-vhosts.conf",
                                                   "/etc/apache2/conf-enabled/provisioner-default-vhosts.conf")}))
'''

DB_PROBE = r'''
import json, os, re, subprocess
INPUT = json.loads(__INPUT__)
# SHOW GRANTS puts the password hash on the USAGE (or global) line; it never leaves the host.
IDENTIFIED = re.compile(r" IDENTIFIED (?:[^']|'(?:[^'\\]|\\.)*')*?(?= REQUIRE | WITH |$)")

def sql(query):
    out = subprocess.run(["mysql", "-N", "-B", "-e", query], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit("mysql: " + out.stderr.strip())
    return [line.split("\t") for line in out.stdout.splitlines() if line]

def quoted(text):
    """A string literal MariaDB reads back as `text` (backslash is an escape there too)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"

databases = {row[0] for row in sql("SHOW DATABASES")}
users = {}
for user, host in sql("SELECT User, Host FROM mysql.user"):
    users.setdefault(user, []).append(host)
# Every account's grants in one mysql session (one process for a thousand accounts, not one
# each): a marker row before each SHOW GRANTS says whose rows follow.
accounts = [(d["user"], host) for d in INPUT["databases"] for host in users.get(d["user"], [])]
marker = "provisioner-grants-" + os.urandom(8).hex()
grants_of = {account: [] for account in accounts}
if accounts:
    script = "".join("SELECT '%s %d';\nSHOW GRANTS FOR %s@%s;\n" % (marker, i, quoted(user), quoted(host))
                     for i, (user, host) in enumerate(accounts))
    out = subprocess.run(["mysql", "-N", "-B"], input=script, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit("mysql: " + out.stderr.strip())
    current = None
    for line in out.stdout.splitlines():
        if line.startswith(marker + " "):
            current = accounts[int(line.split(" ", 1)[1])]
        elif line and current is not None:
            grants_of[current].append(IDENTIFIED.sub("", line.split("\t")[0]))
result = {}
for d in INPUT["databases"]:
    grants = [g for host in users.get(d["user"], []) for g in grants_of[(d["user"], host)]]
    result[d["name"]] = {"exists": d["name"] in databases, "user_hosts": sorted(users.get(d["user"], [])),
                         "grants": grants}
print(json.dumps({"databases": result}))
'''


def _run(host: Host, program: str, data: dict) -> dict:
    script = program.replace("__INPUT__", repr(json.dumps(data)))
    rc, out, err = ssh.run(host, "python3 -", stdin=script, sudo=True)
    if rc != 0:
        raise HostError(f"{host.name}: probe failed: {(err or out).strip()[-300:]}")
    try:
        return json.loads(out)
    except ValueError:
        raise HostError(f"{host.name}: probe printed no JSON: {out[:200]!r}") from None


def probe_web(host: Host, sites: list[dict]) -> dict:
    """sites: [{fqdn, user, home, docroot, logdir, pool, php_version}]"""
    return _run(host, WEB_PROBE, {"sites": sites})


def probe_db(host: Host, databases: list[dict]) -> dict:
    """databases: [{name, user}]"""
    return _run(host, DB_PROBE, {"databases": databases})
