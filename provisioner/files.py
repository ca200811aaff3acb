"""Writing documents whole or not at all: a reader never sees half a file."""

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o644, exclusive: bool = False) -> None:
    """Write to a temporary file beside `path`, then rename it into place.

    The temporary file is made 0600 (mkstemp), so a private file (`mode=0o600`)
    is never readable by others, not even while it is written. `exclusive`:
    never replace an existing file (FileExistsError), as for an archive's files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, mode)
        if exclusive:
            os.link(temporary, path)  # fails if `path` exists; the temporary name goes below
            os.unlink(temporary)
        else:
            os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
