"""How a batch shows its progress: a bar on a terminal, plain lines elsewhere.

Both go to stderr, so the summary (and --json) on stdout stays clean. The bar
is rich's; the plain lines are for logs and pipes, one per event, no escapes.
"""

import sys

import click

from provisioner.progress import Progress


def for_terminal(as_json: bool, stream=None) -> Progress:
    """A bar when stderr is a terminal and the output is for people; plain lines otherwise."""
    stream = stream or sys.stderr
    if not as_json and stream.isatty():
        return BarProgress(stream)
    return LineProgress(stream)


class LineProgress(Progress):
    """One line per event: what starts, each step, each site's end with why it failed."""

    def __init__(self, stream=None):
        self.stream = stream
        self.what = ""
        self.total = 0
        self.count = 0

    def _line(self, text):
        click.echo(text, file=self.stream or sys.stderr)

    def begin(self, total, what):
        self.what, self.total, self.count = what, total, 0
        self._line(f"{what}: {total} site(s)")

    def step(self, fqdns, step):
        self._line(f"{self.what}: {step}: {len(fqdns)} site(s)")

    def done(self, fqdn, ok, detail=""):
        self.count += 1
        state = "ok" if ok else "failed"
        self._line(f"{self.what}: [{self.count}/{self.total}] {fqdn}: {state}" + (f": {detail}" if detail else ""))

    def end(self):
        pass


class BarProgress(Progress):
    """rich's progress bar: the current step, and sites done of the total; failures printed above it."""

    def __init__(self, stream=None):
        from rich.console import Console  # only a terminal run draws a bar
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self._console = Console(file=stream or sys.stderr)
        self._columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self._rich = RichProgress
        self._bar = None
        self._task = None
        self.what = ""

    def begin(self, total, what):
        self.end()
        self.what = what
        self._bar = self._rich(*self._columns, console=self._console, transient=False)
        self._bar.start()
        self._task = self._bar.add_task(what, total=total)

    def step(self, fqdns, step):
        if self._bar is not None:
            self._bar.update(self._task, description=f"{self.what}: {step} ({len(fqdns)})")

    def done(self, fqdn, ok, detail=""):
        if self._bar is None:
            return
        if not ok:
            # rich.markup.escape: a site's error is text, never markup.
            from rich.markup import escape

            self._bar.console.print(f"[red]failed[/red] {escape(fqdn)}: {escape(detail)}", highlight=False)
        self._bar.advance(self._task)

    def end(self):
        if self._bar is not None:
            self._bar.update(self._task, description=f"{self.what}: done")
            self._bar.stop()
            self._bar = None
