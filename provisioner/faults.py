"""Fault injection for tests of the saga: crash or fail at a named point.

PROVISIONER_FAULT="crash-after:db" ends the process right after the db step
is recorded done (as a power cut would); "fail-before:web" raises before the
web step runs. Removal steps are named remove-<step> ("fail-before:remove-db"),
a rotation's application of a new password rotate-<account> ("fail-after:rotate-sftp").
Unset in normal use; tests set it to prove compensation and resume.
"""

import os

from provisioner.errors import HostError

ENV = "PROVISIONER_FAULT"


def point(when: str, step: str) -> None:
    wanted = os.environ.get(ENV, "")
    if wanted == f"crash-{when}:{step}":
        os._exit(70)
    if wanted == f"fail-{when}:{step}":
        raise HostError(f"injected failure {when} step {step}")
