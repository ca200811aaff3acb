"""Encryption of stored secrets with a key kept outside the state database.

Generated passwords and TLS keys are stored only as Fernet tokens (AES-128-CBC
with HMAC-SHA256); a copy of the database alone reveals none of them.
"""

import os
import secrets
import string
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from provisioner.errors import ConfigError

PASSWORD_ALPHABET = string.ascii_letters + string.digits


def new_password(length: int = 24) -> str:
    """A random password from letters and digits: safe in SQL, shells and YAML."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))


class SecretBox:
    def __init__(self, key_file: Path):
        self.key_file = Path(key_file)
        self._fernet = Fernet(self._load_or_create())

    def _load_or_create(self) -> bytes:
        if self.key_file.exists():
            info = self.key_file.stat()
            if info.st_mode & 0o077:
                if info.st_uid != os.geteuid():
                    raise ConfigError(f"{self.key_file} is readable by others (mode {oct(info.st_mode & 0o777)}) "
                                      "and not ours to fix; chmod 600 it")
                self.key_file.chmod(0o600)  # found wider: narrowed before it is read
            return self.key_file.read_bytes().strip()
        if not self.key_file.parent.exists():
            self.key_file.parent.mkdir(mode=0o700, parents=True)
        key = Fernet.generate_key()
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key + b"\n")
        return key

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigError(f"a stored secret cannot be decrypted with {self.key_file} (wrong key?)") from None
