"""`provision letter`: render a request's letter (configuration data, or the reply to a rejection)."""

from pathlib import Path

import click

from provisioner.cli._common import config_option, json_option, print_json
from provisioner.config import load_config
from provisioner.letters.issue import issue
from provisioner.store import open_store


@click.command()
@click.argument("request_id")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the PDF and HTML (default: letters/ in the state home).")
@config_option
@json_option
def letter(request_id, out_dir, config_path, as_json):
    """Render REQUEST_ID's letter as PDF and HTML: the configuration letter of a provisioned
    site, or the reply letter (surat balasan) of a rejected request. A rerun keeps the number."""
    config = load_config(config_path)
    store = open_store(config.resolved_state_url())
    try:
        result = issue(config, store, request_id, out=out_dir)
    finally:
        store.close()
    if as_json:
        print_json(result.as_dict())
        return
    what = {"configuration": "configuration letter", "reply": "reply letter"}[result.kind]
    click.echo(f"{request_id}: {what} {result.number} ({result.date})")
    click.echo(f"  pdf:  {result.pdf}")
    click.echo(f"  html: {result.html}")
    click.echo(f"  sha256: {result.sha256}")
