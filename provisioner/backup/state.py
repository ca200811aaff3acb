"""The toolkit's own state in the backups: the state database, and the key file sealed apart.

The state database is copied consistently (SQLite's online backup into a private
temporary file; pg_dump for PostgreSQL) and streamed into restic. The key file
decrypts every stored password, so it is never stored as it is: it is sealed
with a passphrase kept offline (backup.key_passphrase_file or env
PROVISIONER_BACKUP_PASSPHRASE), scrypt-derived, Fernet-encrypted. Without a
passphrase it is left out and the run says why.
"""

import base64
import os
import sqlite3
import subprocess
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy.engine import URL, make_url

from provisioner.errors import ConfigError, HostError, UserError

ENV_PASSPHRASE = "PROVISIONER_BACKUP_PASSPHRASE"
KEY_MAGIC = b"provisioner-key-backup-v1"
_SCRYPT = {"length": 32, "n": 2 ** 15, "r": 8, "p": 1}


def passphrase(config) -> str | None:
    if os.environ.get(ENV_PASSPHRASE):
        return os.environ[ENV_PASSPHRASE]
    path = config.backup.key_passphrase_file
    if path:
        try:
            text = Path(path).read_text().strip()
        except OSError as err:
            raise ConfigError(f"backup.key_passphrase_file: {err}") from None
        return text or None
    return None


def key_left_out_reason(config) -> str | None:
    if passphrase(config) is None:
        return (f"the key file is not backed up: no passphrase (set backup.key_passphrase_file or env "
                f"{ENV_PASSPHRASE}); keep a copy of {config.key_file()} offline")
    return None


def _fernet(secret: str, salt: bytes) -> Fernet:
    key = Scrypt(salt=salt, **_SCRYPT).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal_key(key_bytes: bytes, secret: str) -> bytes:
    salt = os.urandom(16)
    return KEY_MAGIC + b"\n" + base64.b64encode(salt) + b"\n" + _fernet(secret, salt).encrypt(key_bytes) + b"\n"


def open_key(sealed: bytes, secret: str) -> bytes:
    """The key file back from its sealed copy (disaster recovery: docs/backups.md)."""
    try:
        magic, salt, token = sealed.strip().split(b"\n")
    except ValueError:
        raise UserError("not a sealed key backup") from None
    if magic != KEY_MAGIC:
        raise UserError("not a sealed key backup")
    try:
        return _fernet(secret, base64.b64decode(salt)).decrypt(token)
    except InvalidToken:
        raise UserError("wrong passphrase for the sealed key backup") from None


def state_copy(url: str, home: Path) -> tuple[Path | None, list[str] | None, dict]:
    """A consistent copy of the state database: (temporary file, None, env) for SQLite,
    (None, pg_dump argv, env) for PostgreSQL. The caller removes the file."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        fd, name = tempfile.mkstemp(prefix=".state-backup-", suffix=".db", dir=home)
        os.close(fd)
        source = sqlite3.connect(parsed.database)
        target = sqlite3.connect(name)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        return Path(name), None, {}
    if backend == "postgresql":
        # The password goes to pg_dump in its environment, never argv.
        env = dict(os.environ)
        if parsed.password:
            env["PGPASSWORD"] = parsed.password
        plain = URL.create("postgresql", username=parsed.username, host=parsed.host, port=parsed.port,
                           database=parsed.database, query=parsed.query).render_as_string(hide_password=False)
        return None, ["pg_dump", "--no-owner", "--dbname", plain], env
    raise ConfigError(f"the state database {parsed.render_as_string()} is {backend}: backups know SQLite and "
                      "PostgreSQL")


def stream_pg(argv: list[str], env: dict, repo, restic_args: list[str]) -> dict:
    """pg_dump into restic; a dump that fails stops restic before the end of its input (no snapshot)."""
    from provisioner.backup.repository import CHUNK, summary
    from provisioner.backup.stream import stop

    dump = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc = repo.popen(*restic_args, stdin=subprocess.PIPE)
    try:
        for chunk in iter(lambda: dump.stdout.read(CHUNK), b""):
            proc.stdin.write(chunk)
        if dump.wait() != 0:
            stop(proc)
            raise HostError(f"pg_dump of the state database exited {dump.returncode}: "
                            f"{dump.stderr.read().decode(errors='replace')[-300:]}")
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise HostError(f"restic backup of the state exited {proc.returncode}: "
                            f"{err.decode(errors='replace')[-300:]}")
        return summary(out.decode(errors="replace"), repo.url)
    finally:
        stop(proc)
        if dump.poll() is None:
            dump.kill()
            dump.wait()
