"""What a backup does on the sites' hosts: read facts, stream tar and dumps, restore, count rows.

Every command runs as root through sudo over SSH (provisioner.ssh), with
arguments quoted by shlex; names are the derived ones (provisioner.naming),
never request text. Reads of a site's content that follow the site's own links
(the index page) run as the site user, so a link it planted never lets root
read another file. Dumps and tar run under nice and ionice: backups never
stop the sites.
"""

import hashlib
import json
import shlex

from provisioner import ssh, verify
from provisioner.backup import stream
from provisioner.errors import HostError

INDEX_NAMES = ("index.html", "index.htm", "index.php")

# As the site user: the live release and the document root's index page, its path inside the
# home with links resolved (a snapshot is checked against it) and its sha256.
_FACTS = r'''
home=$1
release=$(readlink "$home/current" 2>/dev/null | sed -n 's#^releases/##p')
echo "release ${release:-none}"
for f in index.html index.htm index.php; do
  if [ -f "$home/public/$f" ]; then
    echo "index $(realpath --relative-to="$home" "$home/public/$f") $(sha256sum < "$home/public/$f" | cut -d' ' -f1)"
    break
  fi
done
'''

# Exact rows per table (information_schema's table_rows is an estimate for InnoDB).
_COUNTS = r'''
db=$1
mysql -N -B -e "SELECT CONCAT('SELECT ', QUOTE(table_name), ', COUNT(*) FROM \`', REPLACE(table_name, '\`', '\`\`'), '\`;') FROM information_schema.tables WHERE table_schema = '$db' AND table_type = 'BASE TABLE' ORDER BY table_name" | mysql -N -B "$db"
'''

# The database emptied (dropped and made again: the grants name it, so they stay) and the dump loaded.
_LOAD = r'''
set -e
db=$1
mysql -e "DROP DATABASE IF EXISTS \`$db\`; CREATE DATABASE \`$db\` CHARACTER SET utf8mb4"
mysql "$db"
'''

# As root on the web host: the tar on stdin extracted into a staging directory in the home
# (paths checked, owners mapped to the target site's user, modes kept without set-id bits,
# devices skipped, times kept), then swapped in for the home's content; the home itself keeps its owner
# and mode (the SFTP chroot). A failure before the swap leaves the home as it was.
_EXTRACT = r'''
import grp, json, os, pwd, secrets, shutil, stat, sys, tarfile
A = json.loads(sys.argv[1])
home = A["home"]
uid, gid = pwd.getpwnam(A["user"]).pw_uid, grp.getgrnam(A["user"]).gr_gid
if not stat.S_ISDIR(os.lstat(home).st_mode):
    sys.exit(home + " is not a directory")
token = secrets.token_hex(4)
stage, old = os.path.join(home, ".restore-" + token), os.path.join(home, ".restore-old-" + token)
os.mkdir(stage, 0o700)
real_stage = os.path.realpath(stage)

def inside(name):
    name = os.path.normpath(name)
    if name.startswith("/") or name == ".." or name.startswith("../"):
        raise ValueError("unsafe path in the archive: " + name)
    return name

def owner(name, own, default):
    if name == A["source_user"]:
        return own
    return 0 if name == "root" else default

files = size = 0
dirs = []
try:
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as archive:
        for m in archive:
            name = inside(m.name)
            if name == ".":
                continue
            path = os.path.join(stage, name)
            if os.path.realpath(os.path.dirname(path)) != real_stage and \
                    not os.path.realpath(os.path.dirname(path)).startswith(real_stage + "/"):
                raise ValueError("archive path goes through a link: " + name)
            if m.isdir():
                os.makedirs(path, 0o700, exist_ok=True)
                dirs.append((path, m.mode & 0o1777, m.mtime))
            elif m.isfile():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(archive.extractfile(m), out, 1 << 20)
                os.chmod(path, m.mode & 0o1777)
                files, size = files + 1, size + m.size
            elif m.issym():
                os.symlink(m.linkname, path)
            elif m.islnk():
                os.link(os.path.join(stage, inside(m.linkname)), path, follow_symlinks=False)
            else:
                continue
            os.lchown(path, owner(m.uname, uid, uid), owner(m.gname, gid, gid))
            if not m.isdir():
                os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
    for path, mode, mtime in reversed(dirs):
        os.chmod(path, mode)
        os.utime(path, (mtime, mtime))
    os.mkdir(old, 0o700)
    for entry in os.listdir(home):
        if not entry.startswith(".restore-"):
            os.rename(os.path.join(home, entry), os.path.join(old, entry))
    for entry in os.listdir(stage):
        os.rename(os.path.join(stage, entry), os.path.join(home, entry))
except BaseException as err:
    if os.path.isdir(old):
        for entry in os.listdir(old):
            os.rename(os.path.join(old, entry), os.path.join(home, entry))
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(stage, ignore_errors=True)
    sys.exit("restore of %s stopped, the home is as it was: %s" % (home, err))
shutil.rmtree(old, ignore_errors=True)
os.rmdir(stage)
print(json.dumps({"files": files, "bytes": size}))
'''


def _sh(script: str, *args: str) -> str:
    return "sh -c " + shlex.join([script, "sh", *args])


def _low(command: list[str], nice: bool) -> str:
    return shlex.join((["nice", "-n", "19", "ionice", "-c", "3"] if nice else []) + command)


class SiteHosts:
    """The real hosts of the inventory (unit tests give a fake with the same methods)."""

    def __init__(self, inventory, nice: bool = True, timeout: float = 6 * 3600, ca_file: str | None = None):
        self.inventory = inventory
        self.nice = nice
        self.timeout = timeout
        self.ca_file = ca_file

    def _run(self, host_name: str, command: str, what: str, timeout: float = 300) -> str:
        host = self.inventory.host(host_name)
        rc, out, err = ssh.run(host, command, sudo=True, timeout=timeout)
        if rc != 0:
            raise HostError(f"{host_name}: {what} exited {rc}: {(err or out).strip()[-300:]}")
        return out

    # -- facts -------------------------------------------------------------------

    def file_facts(self, site) -> dict:
        """The live release and the index page (path in the home, sha256), read as the site user."""
        out = self._run(site.web_host, shlex.join(["runuser", "-u", site.names.user, "--", "sh", "-c", _FACTS,
                                                   "sh", site.names.home]), "reading the site's release")
        facts = {"release": None, "index": None, "index_sha256": None}
        for line in out.splitlines():
            parts = line.split(" ")
            if parts[0] == "release" and len(parts) == 2:
                facts["release"] = None if parts[1] == "none" else parts[1]
            elif parts[0] == "index" and len(parts) == 3 and not parts[1].startswith(("/", "../")):
                # A page that a link takes out of the home is not the site's own: nothing to compare.
                facts["index"], facts["index_sha256"] = parts[1], parts[2]
        return facts

    def served(self, site) -> dict:
        """The site's page as visitors get it: status and sha256 of the body (verify's one HTTP check)."""
        try:
            response = verify.get(site, self.ca_file, "https" if site.tls else "http")
        except verify.VerificationFailed as err:
            return {"status": None, "sha256": None, "error": str(err)[:200]}
        return {"status": response.status, "sha256": hashlib.sha256(response.data).hexdigest()}

    def row_counts(self, db_host: str, db_name: str) -> dict[str, int]:
        out = self._run(db_host, _sh(_COUNTS, db_name), f"counting the rows of {db_name}")
        counts = {}
        for line in out.splitlines():
            name, _, count = line.rpartition("\t")
            if name:
                counts[name] = int(count)
        return counts

    # -- streams into restic -------------------------------------------------------

    def files_into(self, site, repo, restic_args: list[str]) -> dict:
        command = _low(["tar", "-C", site.names.home, "-cf", "-", "."], self.nice)
        return stream.host_to_restic(self.inventory.host(site.web_host), command, repo, restic_args, self.timeout,
                                     what="tar of the home")

    def db_into(self, site, repo, restic_args: list[str]) -> dict:
        command = _low(["mysqldump", "--single-transaction", "--routines", "--triggers", site.names.db_name],
                       self.nice)
        return stream.host_to_restic(self.inventory.host(site.db_host), command, repo, restic_args, self.timeout,
                                     what="mysqldump")

    # -- restores --------------------------------------------------------------------

    def restore_files(self, repo, dump_args: list[str], target, source_user: str) -> dict:
        spec = json.dumps({"home": target.names.home, "user": target.names.user, "source_user": source_user})
        out = stream.restic_to_host(repo, dump_args, self.inventory.host(target.web_host),
                                    shlex.join(["python3", "-c", _EXTRACT, spec]), self.timeout)
        return json.loads(out.strip().splitlines()[-1])

    def restore_db(self, repo, dump_args: list[str], db_host: str, db_name: str) -> None:
        stream.restic_to_host(repo, dump_args, self.inventory.host(db_host), _sh(_LOAD, db_name), self.timeout)

    def db_exists(self, db_host: str, db_name: str) -> bool:
        out = self._run(db_host, shlex.join(["mysql", "-N", "-B", "-e", "SELECT COUNT(*) FROM information_schema"
                                             f".schemata WHERE schema_name = '{db_name}'"]),
                        f"looking for database {db_name}")
        return out.strip() == "1"

    def drop_db(self, db_host: str, db_name: str) -> None:
        self._run(db_host, shlex.join(["mysql", "-e", f"DROP DATABASE IF EXISTS `{db_name}`"]),
                  f"dropping {db_name}")
