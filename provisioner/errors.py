"""The one exception tree of the toolkit.

Library code raises these; only the CLI turns them into a one-line message and
an exit code. Anything that is not a ProvisionerError is a bug and keeps its
traceback.
"""


class ProvisionerError(Exception):
    """Base of every error the toolkit raises on purpose."""

    exit_code = 1


class UserError(ProvisionerError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2


class ConfigError(UserError):
    """The configuration (file, environment, inventory) is wrong or missing."""


class ValidationError(UserError):
    """Input failed validation; carries every problem found, not just the first."""

    def __init__(self, problems, source=None):
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        lines = "; ".join(str(p) for p in self.problems)
        super().__init__(f"{head}{len(self.problems)} problem(s): {lines}")


class NotFound(UserError):
    """A named thing (request, site, SOP, step) does not exist."""


class StateError(UserError):
    """The action is not allowed in the current state (wrong step, not approved...)."""


class Waiting(StateError):
    """An action cannot finish until something else happens (a linked request provisions its site).

    The engine records the action as waiting, not failed: the request keeps its state, and the
    action runs again when that happens or on `provision request resume`.
    """


class PermissionDenied(UserError):
    """The caller lacks a privilege the action needs (for example root for the lab)."""


class LabError(ProvisionerError):
    """The lab could not be built, started, stopped or reached."""

    exit_code = 3


class LabDown(LabError):
    """The lab is not up, so no packet may be sent to a lab address."""


class HostError(ProvisionerError):
    """A remote host (over SSH/Ansible/HTTP) did not do what was asked."""

    exit_code = 4


class Conflict(ProvisionerError):
    """Something exists that the toolkit did not create; it will not touch it."""

    exit_code = 5


class SignatureError(PermissionDenied):
    """A signed message failed authentication: bad or missing signature, stale time."""


class Replayed(SignatureError):
    """A signed message was already received once; replays are refused."""


class ActionError(ProvisionerError):
    """An action bound to an SOP step failed; the step stays open for a resume."""

    exit_code = 6


class AcmeError(HostError):
    """An ACME CA refused, failed or could not be reached; names the CA and the cause.

    `code` is the ACME problem type's last part (rateLimited, unauthorized, ...) or one of
    connection, timeout, tls, validation, protocol; `url` is the CA's directory URL.
    """

    def __init__(self, message: str, *, url: str | None = None, code: str = "error"):
        super().__init__(message)
        self.url = url
        self.code = code
        # For the saga: a CA that cannot be reached fails every site alike, so no per-site retry.
        self.connection = code in ("connection", "tls")
        self.timed_out = code == "timeout"
