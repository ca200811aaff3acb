"""Usage read from the hosts: one SSH session per web host, one per database host.

Like the probes in probe.py it changes nothing. The web probe reports, per
site, `du -sb` of the home and the requests and bytes of the month in the
site's Apache access logs (combined format; access.log, access.log.1 and
older rotated .gz files). The log parser is a plain function here, tested on
the controller and sent to the host as part of the program.
"""

import inspect
import re

from provisioner.errors import HostError
from provisioner.inventory import Host
from provisioner.targets import probe
from provisioner import ssh

MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
# A derived name ([a-z][a-z0-9]*) or an adopted one as the import records it: nothing to escape
# but the quote (escaped anyway), so a name of any other shape is refused rather than sent.
DB_NAME = re.compile(r"[A-Za-z0-9_$-]{1,64}")


def count_month(lines, month: str) -> dict:
    """Requests and response bytes in combined-format log lines of one month (YYYY-MM).

    `%h %l %u [%d/%b/%Y:%H:%M:%S %z] "%r" %>s %b "%{Referer}i" "%{User-agent}i"`;
    %b is "-" when no body was sent. Lines that do not parse are counted apart.
    """
    import re as _re

    names = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    year, number = month.split("-")
    stamp = "/%s/%s:" % (names[int(number) - 1], year)
    pattern = _re.compile(r'^\S+ \S+ \S+ \[\d{2}(/\w{3}/\d{4}:)[^\]]*\] "(?:[^"\\]|\\.)*" (\d{3}) (\d+|-)')
    result = {"requests": 0, "bytes": 0, "status": {}, "unparsed": 0}
    for line in lines:
        found = pattern.match(line)
        if not found:
            if line.strip():
                result["unparsed"] += 1
            continue
        if found.group(1) != stamp:
            continue
        result["requests"] += 1
        result["bytes"] += 0 if found.group(3) == "-" else int(found.group(3))
        klass = found.group(2)[0] + "xx"
        result["status"][klass] = result["status"].get(klass, 0) + 1
    return result


WEB_USAGE = r'''
import glob, gzip, json, os, subprocess
INPUT = json.loads(__INPUT__)
__COUNT__

def lines(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            yield line

sites = {}
for s in INPUT["sites"]:
    disk = None
    if os.path.isdir(s["home"]):
        out = subprocess.run(["du", "-sb", "--", s["home"]], capture_output=True, text=True)
        if out.stdout.split():
            disk = int(out.stdout.split()[0])
    logs = sorted(p for p in glob.glob(os.path.join(s["logdir"], "access.log*"))
                  if p.endswith((".log", ".1", ".gz")))
    total = {"requests": 0, "bytes": 0, "status": {}, "unparsed": 0}
    for path in logs:
        try:
            counted = count_month(lines(path), INPUT["month"])
        except OSError:
            continue
        for key in ("requests", "bytes", "unparsed"):
            total[key] += counted[key]
        for klass, n in counted["status"].items():
            total["status"][klass] = total["status"].get(klass, 0) + n
    sites[s["fqdn"]] = {"disk_bytes": disk, "logs": [os.path.basename(p) for p in logs], **total}
print(json.dumps({"sites": sites}))
'''


def web_usage(host: Host, sites: list[dict], month: str) -> dict:
    """sites: [{fqdn, home, logdir}] (derived names only)."""
    if not MONTH.fullmatch(month):
        raise ValueError(f"not a month: {month!r}")
    program = WEB_USAGE.replace("__COUNT__", inspect.getsource(count_month))
    return probe._run(host, program, {"sites": sites, "month": month})


def _quoted(text: str) -> str:
    """A MariaDB string literal of `text` (backslash is an escape there too)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def db_sizes(host: Host, databases: list[str]) -> dict[str, int]:
    """Bytes of data and indexes per database, from information_schema; 0 for an empty one."""
    for name in databases:
        if not DB_NAME.fullmatch(name):
            raise ValueError(f"not a database name the usage report reads: {name!r}")
    if not databases:
        return {}
    listed = ", ".join(_quoted(name) for name in sorted(databases))
    query = ("SELECT table_schema, COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables "
             f"WHERE table_schema IN ({listed}) GROUP BY table_schema;\n")
    rc, out, err = ssh.run(host, "mysql -N -B", stdin=query, sudo=True)
    if rc != 0:
        raise HostError(f"{host.name}: database sizes: {(err or out).strip()[-300:]}")
    sizes = {name: 0 for name in databases}
    for line in out.splitlines():
        name, _, size = line.partition("\t")
        if name in sizes:
            sizes[name] = int(float(size or 0))
    return sizes
