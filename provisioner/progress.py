"""How a run over many sites reports them as they go.

The hosting apply calls these methods; the CLI passes one that draws a progress
bar, the webhook and tests pass nothing (this class: it ignores everything).
"""


class Progress:
    """Ignores every report: what a run reports to when nobody watches."""

    def begin(self, total: int, what: str) -> None:
        """A run over `total` sites starts (`what`: "hosting", "verify", "letters", ...)."""

    def step(self, fqdns: list[str], step: str) -> None:
        """A step (a saga step, "verify", "letter") starts for these sites."""

    def done(self, fqdn: str, ok: bool, detail: str = "") -> None:
        """One site is finished: `ok` or failed, with why (never a secret)."""

    def end(self) -> None:
        """The run is over."""
