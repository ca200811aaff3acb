"""A throwaway PostgreSQL server for the tests: Debian's binaries, loopback only.

The cluster lives in a fresh directory under /tmp and listens on 127.0.0.1 at a
free port (its socket in that directory, not /var/run/postgresql). PostgreSQL
refuses to run as root, so under root the cluster is made and run by the
`postgres` system user. The toolkit connects the way an office would: as its
own role with a password over TCP, owning its database; the tests' set-up uses
the superuser over the private socket. Nothing is durable (fsync off): the
server is gone when the test session ends.
"""

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

REQUIRE = ("PROVISIONER_REQUIRE_PG", "PROVISIONER_REQUIRE_LAB")
ROLE = "provisioner"


class Unavailable(Exception):
    """No PostgreSQL server can be started here (the reason says why)."""


def required() -> bool:
    """A missing server fails the tests instead of skipping them (CI sets one of these)."""
    return any(os.environ.get(name) for name in REQUIRE)


def bindir() -> Path:
    """The newest installed server's binaries (Debian keeps them off PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise Unavailable("PostgreSQL server binaries not installed (apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self):
        self.bin = bindir()
        try:
            import psycopg  # noqa: F401  the driver the postgresql+psycopg URLs need
        except ImportError:
            raise Unavailable("the postgres extra is not installed (pip install '.[postgres]')") from None
        self.user = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root and there is no postgres user to run the server") from None
        self.home = Path(tempfile.mkdtemp(prefix="provisioner-pg-"))
        if self.user:
            os.chown(self.home, self.user.pw_uid, self.user.pw_gid)
        self.data = self.home / "data"
        self.port = _free_port()
        self.password = secrets.token_hex(16)
        self._databases = 0

    def _run(self, *argv, **kw):
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self.user:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.home, **kw)
        if result.returncode != 0:
            raise Unavailable(f"{argv[0]} failed: {(result.stderr or result.stdout).strip()[-2000:]}")
        return result

    def start(self):
        # Local (socket) connections trust the OS: only postgres and root reach the
        # directory. TCP needs the role's password (scram).
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
        options = (f"-k {self.home} -c listen_addresses=127.0.0.1 -p {self.port} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.home / "server.log"),
                  "-o", options)
        # The password goes in on stdin, never in an argument.
        self._run("psql", "-h", str(self.home), "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                  "-v", "ON_ERROR_STOP=1", "-q",
                  input=f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}';\n")
        return self

    def admin(self):
        """A superuser connection over the private socket (autocommit, for CREATE DATABASE)."""
        import psycopg

        return psycopg.connect(host=str(self.home), port=self.port, user="postgres", dbname="postgres",
                               autocommit=True)

    def new_database(self) -> str:
        """A fresh, empty database owned by the toolkit's role; its SQLAlchemy URL."""
        self._databases += 1
        name = f"state_{os.getpid()}_{self._databases}"
        with self.admin() as connection:
            connection.execute(f"CREATE DATABASE {name} OWNER {ROLE} STRATEGY FILE_COPY")
        return f"postgresql+psycopg://{ROLE}:{self.password}@127.0.0.1:{self.port}/{name}"

    def drop_database(self, url: str):
        name = url.rsplit("/", 1)[1]
        with self.admin() as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self):
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60")
        finally:
            shutil.rmtree(self.home, ignore_errors=True)


def start() -> Server:
    """A running server (about a second and a half: initdb, then start)."""
    server = Server()
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
