"""The SOP actions that write letters: hosting step 7, and the reply on a rejection."""

from provisioner.letters.issue import issue
from provisioner.sop.hooks import action_store


def _issue(ctx, kind, reason=None):
    with action_store(ctx) as store:
        letter = issue(ctx.config, store, ctx.request.id, kind=kind, reason=reason, source=ctx.source,
                       out=ctx.options.get("letters_dir"))
    return {"kind": letter.kind, "number": letter.number, "pdf": letter.pdf, "sha256": letter.sha256}


def render_letter_action(ctx) -> dict:
    """"Surat pemberitahuan data dan konfigurasi hosting": the configuration letter."""
    return _issue(ctx, "configuration")


def render_reply_letter_action(ctx) -> dict:
    """The surat balasan, with the reason recorded at the decision."""
    return _issue(ctx, "reply", reason=ctx.reason)


def _document(ctx, kind) -> dict:
    # Imported here: the documents pull in python-docx, which the letters above do not need.
    from provisioner.letters.documents import issue_document

    with action_store(ctx) as store:
        made = issue_document(ctx.config, store, ctx.request.id, kind, source=ctx.source,
                              out=ctx.options.get("letters_dir"))
    if isinstance(made, dict):
        return made
    result = {"document": made.kind, "number": made.number, "pdf": made.pdf, "sha256": made.sha256}
    if made.docx:
        result.update(docx=made.docx, docx_sha256=made.docx_sha256)
    return result


def render_analysis_action(ctx) -> dict:
    """The record of the needs analysis, from the step's analysis data."""
    return _document(ctx, "analysis")


def render_kak_action(ctx) -> dict:
    """The KAK for procurement: DOCX to edit, and PDF."""
    return _document(ctx, "kak")


def render_report_action(ctx) -> dict:
    """The nota dinas reporting the step up the chain (one per reporting step)."""
    return _document(ctx, f"report-{ctx.step.key}")


def render_delegation_action(ctx) -> dict:
    """The Kasi's nota dinas delegating the work to the programmers."""
    return _document(ctx, "delegation")


def render_handover_action(ctx) -> dict:
    """The berita acara serah terima; a rejected request's answer is its reply letter instead."""
    return _document(ctx, "handover")


def render_website_report_action(ctx) -> dict:
    """The report of the website deploy to the head (website SOP step 10)."""
    return _document(ctx, "website-report")
