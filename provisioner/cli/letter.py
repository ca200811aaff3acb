"""`provision letter`: render a request's letter (configuration data, or the reply to a rejection)."""

from pathlib import Path

import click

from provisioner.cli._common import config_option, json_option, load_config, open_store, print_json


@click.command()
@click.argument("request_id")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the PDF and HTML (default: letters/ in the state home).")
@click.option("--document", "document", metavar="KIND",
              help="Re-render one of the request's SOP documents instead: analysis, kak, delegation, "
                   "handover, website-report, or report-STEP (report alone: the latest report). "
                   "Default directory: letters/<office>/ in the state home.")
@config_option
@json_option
def letter(request_id, out_dir, document, config_path, as_json):
    """Render REQUEST_ID's letter as PDF and HTML: the configuration letter of a provisioned
    site, or the reply letter (surat balasan) of a rejected request. A rerun keeps the number."""
    from provisioner.letters.documents import issue_document
    from provisioner.letters.issue import issue

    config = load_config(config_path)
    store = open_store(config.resolved_state_url())
    try:
        if document is not None:
            result = issue_document(config, store, request_id, document, out=out_dir)
        else:
            result = issue(config, store, request_id, out=out_dir)
    finally:
        store.close()
    if document is not None:
        _show_document(request_id, result, as_json)
        return
    if as_json:
        print_json(result.as_dict())
        return
    what = {"configuration": "configuration letter", "reply": "reply letter"}[result.kind]
    click.echo(f"{request_id}: {what} {result.number} ({result.date})")
    click.echo(f"  pdf:  {result.pdf}")
    click.echo(f"  html: {result.html}")
    click.echo(f"  sha256: {result.sha256}")


def _show_document(request_id, result, as_json):
    if isinstance(result, dict):  # the handover of a rejected request: nothing written
        if as_json:
            print_json(result)
        elif result.get("skipped"):
            click.echo(f"{request_id}: no document written: {result['skipped']}")
        else:
            letter = f" (surat balasan {result['letter']})" if result.get("letter") else ""
            click.echo(f"{request_id}: no document written: the reply letter is the answer{letter}")
        return
    if as_json:
        print_json(result.as_dict())
        return
    click.echo(f"{request_id}: {result.kind} {result.number} ({result.date})")
    click.echo(f"  pdf:  {result.pdf}")
    if result.docx:
        click.echo(f"  docx: {result.docx}")
    click.echo(f"  html: {result.html}")
    click.echo(f"  sha256: {result.sha256}")
