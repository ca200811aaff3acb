"""Read everything a web or database host serves, for `provision import`: one SSH session per host.

Unlike the planning probe (probe.py), which looks up the names the toolkit
derives, these programs list what is there whoever made it: every vhost file
in sites-available and sites-enabled with its VirtualHost blocks, every
PHP-FPM pool, every system account (home, shell, groups), every database
and database account with its grants. They change nothing and print JSON;
password hashes never leave the host.
"""

from provisioner.inventory import Host
from provisioner.targets.probe import _run

WEB_PROBE = r'''
import glob, grp, hashlib, json, os, pwd, re, subprocess
INPUT = json.loads(__INPUT__)
ROOT = INPUT.get("root", "")  # "" on a host; a test directory for the unit tests
AVAILABLE, ENABLED = ROOT + "/etc/apache2/sites-available", ROOT + "/etc/apache2/sites-enabled"
WORDS = {"servername": "server_name", "serveralias": "aliases", "documentroot": "docroot",
         "sslcertificatefile": "cert_file", "sslcertificatekeyfile": "key_file",
         "sslcertificatechainfile": "chain_file", "errorlog": "error_log"}
SOCKET = re.compile(r"unix:(/[^|\s\"]+)")
# A handler that reaches PHP-FPM over TCP (ProxyPassMatch ... fcgi://127.0.0.1:9001/...): "host:port".
TCP = re.compile(r"(?<!\|)fcgi://([^/\s\"|]+:[0-9]+)")

def sha(path):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None

def stat(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return {"owner": owner, "group": group, "mode": "%04o" % (st.st_mode & 0o7777), "dir": os.path.isdir(path)}

def not_after(path):
    if not path:
        return None
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", path], capture_output=True, text=True)
    line = out.stdout.strip()
    return line.split("=", 1)[1] if out.returncode == 0 and "=" in line else None

def vhosts(path):
    """The VirtualHost blocks of a file, with the directives the import needs."""
    found, current = [], None
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        low = text.lower()
        if low.startswith("<virtualhost"):
            current = {"listen": text[len("<virtualhost"):].rstrip(">").split(), "server_name": None,
                       "aliases": [], "docroot": None, "cert_file": None, "key_file": None,
                       "chain_file": None, "error_log": None, "fpm_sockets": []}
            continue
        if low.startswith("</virtualhost"):
            if current is not None:
                found.append(current)
            current = None
            continue
        if current is None:
            continue
        words = text.split(None, 1)
        key = WORDS.get(words[0].lower())
        value = words[1].strip() if len(words) == 2 else ""
        if key == "aliases":
            current["aliases"] += [w.strip('"').lower() for w in value.split()]
        elif key == "server_name":
            current["server_name"] = value.strip('"').split(":")[0].lower()
        elif key is not None:
            current[key] = value.strip('"')
        for socket in SOCKET.findall(text) + TCP.findall(text):
            current["fpm_sockets"].append(socket)
    return found

files = {}
for directory in (AVAILABLE, ENABLED):
    for path in sorted(glob.glob(directory + "/*")):
        real = os.path.realpath(path)
        if directory == ENABLED and os.path.islink(path):
            files.setdefault(real, {"path": real, "links": []})["links"].append(
                {"path": path, "target": os.readlink(path)})
            continue
        entry = files.setdefault(real, {"path": real, "links": []})
        if directory == ENABLED:
            entry["plain_in_enabled"] = True
for real, entry in files.items():
    entry["sha256"] = sha(real)
    entry["vhosts"] = vhosts(real) or []
    for v in entry["vhosts"]:
        v["docroot_stat"] = stat(v["docroot"]) if v["docroot"] else None
        v["cert_not_after"] = not_after(v["cert_file"])

pools = []
for path in sorted(glob.glob(ROOT + "/etc/php/*/fpm/pool.d/*.conf")):
    version = path[len(ROOT):].split("/")[3]
    section, values = None, {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                text = line.strip()
                if not text or text[0] in ";#":
                    continue
                if text.startswith("[") and text.endswith("]"):
                    section = section or text[1:-1]
                    continue
                if "=" in text:
                    key, _, value = text.partition("=")
                    values.setdefault(key.strip(), value.strip())
    except OSError:
        continue
    pools.append({"file": path, "php_version": version, "name": section, "user": values.get("user"),
                  "group": values.get("group"), "listen": values.get("listen"), "sha256": sha(path)})

# Whether a document root's owner is the site's own account: its home, shell and groups.
members = {}
for g in grp.getgrall():
    for name in g.gr_mem:
        members.setdefault(name, set()).add(g.gr_name)
users = {}
for p in pwd.getpwall():
    try:
        primary = {grp.getgrgid(p.pw_gid).gr_name}
    except KeyError:
        primary = set()
    users[p.pw_name] = {"uid": p.pw_uid, "home": p.pw_dir, "shell": p.pw_shell,
                        "groups": sorted(members.get(p.pw_name, set()) | primary)}
addrs = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True).stdout or "[]")
print(json.dumps({"files": sorted(files.values(), key=lambda e: e["path"]), "pools": pools, "users": users,
                  "addresses": sorted(a["local"] for i in addrs for a in i.get("addr_info", []))}))
'''

DB_PROBE = r'''
import json, re, subprocess
SYSTEM_DBS = {"information_schema", "performance_schema", "mysql", "sys"}
SYSTEM_USERS = {"root", "mariadb.sys", "mysql", "debian-sys-maint", ""}
IDENTIFIED = re.compile(r" IDENTIFIED (?:[^']|'(?:[^'\\]|\\.)*')*?(?= REQUIRE | WITH |$)")
ON_DB = re.compile(r" ON `((?:[^`]|``)+)`\.")

def sql(query):
    out = subprocess.run(["mysql", "-N", "-B", "-e", query], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit("mysql: " + out.stderr.strip())
    return [line.split("\t") for line in out.stdout.splitlines() if line]

def quoted(text):
    """A string literal MariaDB reads back as `text` (backslash is an escape there too)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"

databases = sorted(row[0] for row in sql("SHOW DATABASES") if row[0] not in SYSTEM_DBS)
accounts = []
for user, host in sql("SELECT User, Host FROM mysql.user"):
    if user in SYSTEM_USERS:
        continue
    grants = [IDENTIFIED.sub("", row[0])
              for row in sql("SHOW GRANTS FOR %s@%s" % (quoted(user), quoted(host)))]
    dbs = sorted({m.replace("``", "`").replace("\\_", "_") for g in grants for m in ON_DB.findall(g)})
    accounts.append({"user": user, "host": host, "grants": grants, "databases": dbs})
print(json.dumps({"databases": databases, "accounts": accounts}))
'''


# -- who uses what on a web host (from probe_web_all's answer) ---------------------------
#
# Adoption records, and a removal decides again on the host as it is then, what an adopted
# site shares with other vhosts: those may be the toolkit's, the office's or on the unmanaged
# list; the probe lists them all.


def uses(live: dict) -> dict:
    """Every document root, owner and PHP handler on a web host, by the file (vhost or pool) that uses it."""
    roots, owners, handlers = [], [], []
    for entry in live.get("files", []):
        for b in entry.get("vhosts") or []:
            if b.get("docroot"):
                roots.append((entry["path"], b["docroot"].rstrip("/")))
            if b.get("docroot_stat"):
                owners.append((entry["path"], b["docroot_stat"]["owner"]))
            handlers += [(entry["path"], s) for s in b.get("fpm_sockets") or []]
    owners += [(p["file"], p.get("user")) for p in live.get("pools", [])]
    return {"roots": roots, "owners": owners, "handlers": handlers}


def docroot_users(used: dict, docroot: str | None, but=()) -> list[str]:
    """The files (but these) whose document root is this one, inside it or above it."""
    d = (docroot or "").rstrip("/")
    return sorted({f for f, r in used["roots"] if f not in but and d and
                   (r == d or r.startswith(d + "/") or d.startswith(r + "/"))})


def owner_users(used: dict, owner: str | None, but=()) -> list[str]:
    """The files (but these) whose document root this account owns, or whose pool runs as it."""
    return sorted({f for f, o in used["owners"] if f not in but and owner and o == owner})


def same_listen(listen: str | None, handler: str) -> bool:
    """Whether a vhost's PHP handler (a socket path, or host:port) reaches a pool listening on `listen`.

    Over TCP the port decides (a pool on "9001" listens on every address): counting one
    vhost too many only keeps a pool a removal could have taken.
    """
    listen = (listen or "").strip()
    if not listen:
        return False
    if listen.startswith("/") or handler.startswith("/"):
        return listen == handler
    return listen.rsplit(":", 1)[-1] == handler.rsplit(":", 1)[-1]


def listen_users(used: dict, listens, but=()) -> list[str]:
    """The vhost files (but these) that hand PHP to a pool listening on any of `listens`."""
    return sorted({f for f, h in used["handlers"] if f not in but and any(same_listen(x, h) for x in listens)})


def probe_web_all(host: Host) -> dict:
    """Every vhost file (with its VirtualHost blocks and enabled links), PHP-FPM pool, system user."""
    return _run(host, WEB_PROBE, {"root": ""})


def probe_db_all(host: Host) -> dict:
    """Every database but the server's own, every account but the server's own, with its grants."""
    return _run(host, DB_PROBE, {})
