"""Helpers shared by the command modules: options, opening the engine, printing."""

import json
from datetime import date, datetime

import click

from provisioner.errors import UserError

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False),
    help="Configuration file (default: $PROVISIONER_CONFIG, ./provisioner.yaml, /etc/provisioner/).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


# The configuration (pydantic), the store (SQLAlchemy) and the SOP engine are imported when a
# command first uses them, not when its module is loaded: `provision --help`, `--version` and
# `provision GROUP --help` then start without them. Command modules import these names from here.
def load_config(path=None):
    from provisioner.config import load_config

    return load_config(path)


def open_store(url):
    from provisioner.store import open_store

    return open_store(url)


def open_reads(config):
    """What the listing commands read (provisioner/listing.py): plain SELECTs when they can."""
    from provisioner.listing import open_reads

    return open_reads(config)


def open_engine(config_path):
    from provisioner.sop.engine import Engine

    config = load_config(config_path)
    return Engine(config, open_store(config.resolved_state_url()))


def parse_at(text):
    """--at: ISO 8601; a time without a zone is read in the office's time zone."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--at: {text!r} is not an ISO 8601 time like 2024-08-12T09:30") from None


def _default(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"cannot print {type(value).__name__} as JSON")


def print_json(data):
    click.echo(json.dumps(data, default=_default, indent=2, ensure_ascii=False))


def localize(data, tz):
    """Every datetime in a nested structure, shown in the office's time zone."""
    if isinstance(data, datetime):
        return data.astimezone(tz)
    if isinstance(data, dict):
        return {k: localize(v, tz) for k, v in data.items()}
    if isinstance(data, list):
        return [localize(v, tz) for v in data]
    return data


def when(value):
    return value.strftime("%a %Y-%m-%d %H:%M") if isinstance(value, datetime) else (value or "")


def table(title, columns, rows, long=()):
    """Print a table; columns named in `long` are cut with an ellipsis instead of wrapped."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if not console.is_terminal:
        console = Console(width=300)  # a pipe or file has no width; keep rows on one line
    grid = Table(title=title, show_lines=False)
    for column in columns:
        grid.add_column(column, no_wrap=True, overflow="ellipsis",
                        max_width=48 if column in long else None)
    for row in rows:
        # Text, not str: a cell is printed as written. An agency's "[/...]" in a name or reason is not
        # rich markup (it would stop the listing with a MarkupError) and no value is coloured.
        grid.add_row(*[Text(str(cell) if cell is not None else "") for cell in row])
    console.print(grid)


def print_outcome(outcome):
    click.echo(outcome.message)
    for ran in outcome.actions:
        where = f" of {ran['request']}" if ran.get("request") else ""
        if "waiting" in ran:
            click.echo(f"  action {ran['action']} for step {ran['step']}{where}: waiting: {ran['waiting']}")
        elif "error" in ran:
            click.echo(f"  actions{where}: failed: {ran['error']}")
        else:
            click.echo(f"  action {ran['action']} for step {ran['step']}{where}: done")
