"""Many approved requests provisioned together: one plan, one hosting apply, each SOP on its own.

`provision_sites_action` is the batch form of the provision_site action:
Engine.resume_many hands it the contexts of every request whose SOP waits on
"Pembuatan dan konfigurasi server"; it makes one plan and one apply for all
their sites (Hosting.apply runs a saga per site: one site's failure is
compensated for that site alone) and answers for each request: its result, as
provision_site_action gives it for one, or the error of its own site. The
engine then records each request's step and runs its later steps (the letter).

`provision_requests` is what `provision hosting ID... --apply` and
`--all-approved` run: it returns a report with one row per request.
"""

from dataclasses import dataclass, field

from sqlalchemy import select

from provisioner.errors import ActionError, HostError, ProvisionerError
from provisioner.progress import Progress
from provisioner.sop.engine import PROVISION_ACTION
from provisioner.sop.hooks import action_store
from provisioner.store.models import RequestRow, SiteRow


class SiteResults(Progress):
    """Passes every report on to `inner`, and keeps which sites of the hosting run finished and how."""

    def __init__(self, inner: Progress | None = None):
        self.inner = inner or Progress()
        self.finished: dict[str, tuple[bool, str]] = {}
        self._what = None

    def begin(self, total, what):
        self._what = what
        self.inner.begin(total, what)

    def step(self, fqdns, step):
        self.inner.step(fqdns, step)

    def done(self, fqdn, ok, detail=""):
        if self._what == "hosting":
            self.finished[fqdn] = (ok, detail)
        self.inner.done(fqdn, ok, detail)

    def end(self):
        self.inner.end()


def provision_sites_action(contexts) -> dict:
    """{request id: result or error} for one apply over the sites of all `contexts`.

    The contexts share the caller's options: `checksum` (of the plan reviewed for
    all of them), `progress`, `results` (gets the ApplyResult, or the apply's error,
    for the caller to print) and `with_requests`: ids applied in the same plan whose
    SOP does not wait on this step (already provisioned: the apply converges them),
    so that the plan applied is the plan reviewed.
    """
    from provisioner.hosting import Hosting  # the hosting stack loads only when a batch runs

    first = contexts[0]
    options = first.options
    ids = [c.request.id for c in contexts]
    also = [i for i in options.get("with_requests", ()) if i not in ids]
    seen = options["progress"] if isinstance(options.get("progress"), SiteResults) else \
        SiteResults(options.get("progress"))
    with action_store(first) as store:
        try:
            result = Hosting(first.config, store, source=first.source, progress=seen).apply(
                ids + also, checksum=options.get("checksum"))
        except ProvisionerError as err:
            if "results" in options:
                options["results"].append(err)
            return _after_failure(store, contexts, seen, err, alone=not also and len(ids) == 1)
    if "results" in options:
        options["results"].append(result)
    records = {site["fqdn"]: site for site in result.sites}
    answers = {}
    for context in contexts:
        site = records.get(context.request.site.fqdn)
        if site is None:  # an apply that returns has verified every site it was given
            answers[context.request.id] = HostError(f"{context.request.site.fqdn}: the apply returned "
                                                    f"without this site's record")
            continue
        answers[context.request.id] = {"fqdn": site["fqdn"], "public_ip": site["public_ip"],
                                       "changed": result.changed, "checksum": result.plan.checksum}
    return answers


def _after_failure(store, contexts, seen: SiteResults, err: ProvisionerError, alone: bool) -> dict:
    """Each request's answer when the apply raised: its site's own outcome where the apply
    reported it (verified and recorded, or failed and why), else the apply's error.
    `alone`: the apply had this one site, so its error is the site's, exactly as raised."""
    fqdns = [c.request.site.fqdn for c in contexts]
    with store.session() as session:
        rows = {row.fqdn: row for row in session.scalars(select(SiteRow).where(SiteRow.fqdn.in_(fqdns)))}
    answers = {}
    for context in contexts:
        fqdn = context.request.site.fqdn
        ok, detail = seen.finished.get(fqdn, (False, ""))
        row = rows.get(fqdn)
        if ok and row is not None and row.state == "provisioned":
            # Whether this site changed is not known once the apply raised: None, not a guess.
            answers[context.request.id] = {"fqdn": fqdn, "public_ip": row.public_ip, "changed": None,
                                           "checksum": row.plan_checksum}
        elif detail and not alone:
            answers[context.request.id] = HostError(detail)
        else:  # the apply stopped before this site was finished (or never started it)
            answers[context.request.id] = err
    return answers


# -- `provision hosting ... --apply` ------------------------------------------------------

@dataclass
class BatchReport:
    """One row per request: {"request", "fqdn", "result", "detail", "letter"}; `applies` holds
    each hosting apply's ApplyResult, or the error that stopped it."""

    rows: list[dict] = field(default_factory=list)
    applies: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)  # request id -> the error that failed it

    @property
    def failed(self) -> list[dict]:
        return [row for row in self.rows if row["result"] == "failed"]

    def error(self) -> Exception | None:
        """What the command exits with: a lone request's own error, or one naming every failure;
        an error that is not the toolkit's (a bug) as it is, to keep its traceback."""
        if not self.failed:
            return None
        bug = next((e for e in self.errors.values() if not isinstance(e, ProvisionerError)), None)
        if bug is not None:
            return bug
        if len(self.rows) == 1:
            return self.errors[self.rows[0]["request"]]
        why = "; ".join(f"{row['request']} ({row['fqdn']}): {row['detail']}" for row in self.failed)
        return ActionError(f"{len(self.failed)} of {len(self.rows)} requests failed: {why}")

    def as_dict(self) -> dict:
        return {"requests": self.rows,
                "applies": [a.as_dict() if hasattr(a, "as_dict") else {"error": str(a)} for a in self.applies]}


def provision_requests(engine, request_ids, checksum=None, progress=None, source="cli",
                       force=True) -> BatchReport:
    """Provision the requests' sites in one plan and one apply; each request whose SOP waits on
    provisioning then has its step recorded and goes on to its letter (Engine.resume_many).
    The others (provisioned already) are applied in the same plan: they converge.
    `force` takes over a provisioning step left running by a process that died (named
    requests, as `provision resume` does); a selection of every approved request does not."""
    from provisioner.hosting import Hosting

    ids = list(dict.fromkeys(request_ids))
    due = [i for i in ids if engine.current_action(i) == PROVISION_ACTION]
    rest = [i for i in ids if i not in due]
    if rest:
        # A named request whose SOP does not wait here must be one the SOP approved (provisioned
        # already): refused before anything is claimed, rather than failing the batch it joins.
        Hosting(engine.config, engine.store, source=source).load_requests(rest)
    seen = SiteResults(progress)
    report = BatchReport()
    options = {"checksum": checksum, "results": report.applies, "progress": seen}
    together = bool(due) and engine.actions.batch(PROVISION_ACTION) is not None
    if together:
        options["with_requests"] = rest
    outcomes = engine.resume_many(due, force=force, options=options, source=source) if due else {}
    if rest and not together:
        try:
            report.applies.append(Hosting(engine.config, engine.store, source=source, progress=seen)
                                  .apply(rest, checksum=checksum))
        except ProvisionerError as err:
            report.applies.append(err)
    fqdns = _fqdns(engine.store, ids)
    for request_id in ids:
        fqdn = fqdns.get(request_id, "")
        if request_id in outcomes:
            row = _due_row(outcomes[request_id], fqdn)
            if outcomes[request_id].error is not None:
                report.errors[request_id] = outcomes[request_id].error
        else:
            row, error = _rest_row(request_id, fqdn, seen, report.applies, alone=len(ids) == 1)
            if error is not None:
                report.errors[request_id] = error
        report.rows.append(row)
    return report


def _fqdns(store, ids):
    with store.session() as session:
        return dict(session.execute(select(RequestRow.id, RequestRow.fqdn).where(RequestRow.id.in_(ids))).all())


def _due_row(outcome, fqdn) -> dict:
    row = {"request": outcome.request_id, "fqdn": fqdn, "result": "provisioned", "detail": "", "letter": ""}
    for ran in outcome.actions:
        if ran.get("request"):  # the linked request's actions: not this row's
            continue
        if "waiting" in ran:
            row.update(result="waiting", detail=ran["waiting"])
        elif ran.get("action") == PROVISION_ACTION:
            result = ran.get("result") or {}
            row["detail"] = f"at {result.get('public_ip')}" if result.get("public_ip") else ""
        elif ran.get("action") in ("render_letter", "render_reply_letter"):
            row["letter"] = (ran.get("result") or {}).get("number", "")
    if outcome.error is not None:
        provisioned = any(r.get("action") == PROVISION_ACTION and "result" in r for r in outcome.actions)
        row.update(result="failed", detail=("provisioned; a later step failed: " if provisioned else "")
                   + _reason(outcome.error))
    elif not outcome.actions:
        row.update(result="unchanged", detail=outcome.message)
    return row


def _reason(error) -> str:
    """The site's own reason, without the engine's "HST-..: step 6 (..): action .. failed:" prefix."""
    cause = error.__cause__ if isinstance(error, ActionError) and error.__cause__ is not None else error
    return str(cause)


def _rest_row(request_id, fqdn, seen: SiteResults, applies, alone) -> tuple[dict, ProvisionerError | None]:
    """The row of a request applied without its SOP (provisioned already). `alone`: the only
    request of the command, whose error is the apply's own, as raised (its exit code kept)."""
    row = {"request": request_id, "fqdn": fqdn, "result": "provisioned", "detail": "", "letter": ""}
    ok, detail = seen.finished.get(fqdn, (None, ""))
    stopped = next((a for a in applies if isinstance(a, ProvisionerError)), None)
    if stopped is None:
        result = next((a for a in applies if any(s["fqdn"] == fqdn for s in a.sites)), None)
        if result is not None and not result.plan.for_site(fqdn):
            row.update(result="unchanged", detail="already provisioned: nothing changed")
        return row, None
    if ok:
        return row, None
    if alone or not detail:
        row.update(result="failed", detail=str(stopped))
        return row, stopped
    row.update(result="failed", detail=detail)
    return row, HostError(detail)
