"""`provision lab`: build, start, inspect and stop the local lab of real hosts."""

import click


@click.group()
def lab():
    """The local lab: four isolated Debian 12 hosts on a bridge (root only)."""
