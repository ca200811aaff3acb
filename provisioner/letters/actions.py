"""The SOP actions that write letters: hosting step 7, and the reply on a rejection."""

from concurrent.futures import as_completed

from provisioner.letters import render
from provisioner.letters.issue import finish, issue, prepare
from provisioner.progress import Progress
from provisioner.sop.hooks import action_store

def _issue(ctx, kind, reason=None):
    with action_store(ctx) as store:
        letter = issue(ctx.config, store, ctx.request.id, kind=kind, reason=reason, source=ctx.source,
                       out=ctx.options.get("letters_dir"))
    return {"kind": letter.kind, "number": letter.number, "pdf": letter.pdf, "sha256": letter.sha256}


def render_letter_action(ctx) -> dict:
    """"Surat pemberitahuan data dan konfigurasi hosting": the configuration letter."""
    return _issue(ctx, "configuration")


def render_letters_action(contexts) -> dict:
    """The batch form of render_letter: {request id: result or error}, PDFs rendered side by side.

    Rendering the PDF is the CPU-bound part of a letter (WeasyPrint: about nine tenths of
    it), so only that goes to a pool of processes, one per CPU: each worker gets a letter's
    HTML and gives back its PDF, touching no database. The checks, the number (taken one
    after another, here) and the record stay in this process: measured on SQLite, workers
    that also wrote the state database waited on its lock longer than they rendered.
    """
    first = contexts[0]
    progress = first.options.get("progress") or Progress()
    sites = {c.request.id: c.request.fqdn or c.request.id for c in contexts}
    answers = {}

    def finished(request_id, answer):
        answers[request_id] = answer
        failed = isinstance(answer, BaseException)
        progress.done(sites[request_id], not failed, str(answer) if failed else answer.get("number", ""))

    progress.begin(len(contexts), "letters")
    progress.step(list(sites.values()), "letter")
    try:
        with action_store(first) as store, render.renderer(len(contexts)) as render_pdf:
            drafts = {}
            # Each letter's PDF starts as soon as its draft is ready; they are recorded as they finish.
            for context in contexts:
                try:
                    draft = prepare(context.config, store, context.request.id, kind="configuration",
                                    source=context.source, out=context.options.get("letters_dir"))
                except Exception as err:  # noqa: BLE001 - one letter's failure is its request's own
                    finished(context.request.id, err)
                    continue
                drafts[render_pdf(draft.document)] = (context.request.id, draft)
            for future in as_completed(drafts):
                request_id, draft = drafts[future]
                try:
                    letter = finish(store, draft, future.result(), source=first.source)
                except Exception as err:  # noqa: BLE001
                    finished(request_id, err)
                    continue
                finished(request_id, {"kind": letter.kind, "number": letter.number, "pdf": letter.pdf,
                                      "sha256": letter.sha256})
        return answers
    finally:
        progress.end()


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
