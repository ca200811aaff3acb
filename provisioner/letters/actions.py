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
