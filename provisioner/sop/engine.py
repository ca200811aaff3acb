"""The SOP engine: submit a request, record human steps and the decision, run actions.

Rules it keeps:
- Steps follow the SOP's order and are recorded by the step's own role.
- Every change to a request is made in one transaction with the event that
  explains it; events are never changed.
- The approval hook: after any step or decision, the actions the SOP binds to
  the steps now due (and to the chosen decision branch, and to be run after a
  recorded step) run, each at most once successfully. A second approval finds
  the decision made and does nothing.
- An action that must wait for something else (a linked hosting request to
  provision its site) raises Waiting: it is recorded as waiting, not failed,
  and runs again on `provision request resume` or when that site is provisioned.
"""

import getpass
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from provisioner.errors import (ActionError, Conflict, NotFound, PermissionDenied, ProvisionerError,
                                Replayed, StateError, UserError, ValidationError, Waiting)
from provisioner.request import line_of, validate
from provisioner.sop.hooks import ACTIONS, ActionContext
from provisioner.sop.lookups import Lookups
from provisioner.sop.model import APPROVE, REJECT, SYSTEM
from provisioner.sop.sla import utcnow
from provisioner.sop.stepdata import read_step_data
from provisioner.store.models import ActionRun, Event, RequestRow, SiteRow, StepRecord, WebhookKey
from provisioner.yamlsrc import Problem

SOURCES = ("cli", "webhook", "hook")
MAX_NOTE = 1000
# The action whose completion provisions a site that linked requests may be waiting for.
PROVISION_ACTION = "provision_site"


@dataclass
class Outcome:
    request_id: str
    changed: bool
    message: str
    actions: list = field(default_factory=list)  # [{"step", "action", "result"}]
    # In a batch (resume_many): the error that stopped this request's actions; the single
    # paths raise it instead.
    error: Exception | None = None

    def as_dict(self):
        out = {"request": self.request_id, "changed": self.changed,
               "message": self.message, "actions": self.actions}
        if self.error is not None:
            out["error"] = str(self.error)
        return out


@dataclass(frozen=True)
class _Claimed:
    """An action claimed for a request, with what running it needs."""
    pending: "_Pending"
    sop: object
    content: bytes
    decision: str | None
    reason: str | None  # the decision's reason


@dataclass(frozen=True)
class _Pending:
    step: object
    action: str
    branch: str | None  # set when the action belongs to a decision branch
    after: bool = False  # the step's `after` action: the step is recorded already


def site_exists(session, fqdn):
    """Does the configuration record a provisioned site by this name? (website step 6)"""
    site = session.get(SiteRow, fqdn) if fqdn else None
    return site is not None and site.state == "provisioned"


def _os_user():
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def _check_attention(row):
    """A request whose action failed takes no step and no decision until it is resumed."""
    if row.state == "attention":
        raise StateError(f"{row.id}: an action failed; fix it and run "
                         f"`provision request resume {row.id}` before the next step")


def _check_text(value, name):
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_NOTE or not all(
            line.isprintable() for line in value.split("\n")):
        raise UserError(f"{name}: must be printable text of at most {MAX_NOTE} characters")
    return value


class Engine:
    def __init__(self, config, store, actions=ACTIONS, clock=utcnow):
        self.config = config
        self.store = store
        self.actions = actions
        self.clock = clock
        self._lookups = None

    # -- look-ups ---------------------------------------------------------

    def _looked_up(self):
        """The look-ups of the configuration and actions the engine has now (either may be replaced)."""
        lookups = self._lookups
        if lookups is None or lookups.config is not self.config or lookups.actions is not self.actions:
            self._lookups = Lookups(self.config, self.actions)
        return self._lookups

    def sop(self, name):
        return self._looked_up().sop(name)

    def sop_for(self, office_key, service):
        """The SOP the office runs for the service (offices.<key>.sops)."""
        return self._looked_up().sop_for(office_key, service)

    def calendar(self, office_key):
        return self._looked_up().calendar(office_key)

    def _row(self, session, request_id):
        row = session.get(RequestRow, request_id)
        if row is None:
            raise NotFound(f"no request {request_id!r}")
        return row

    def _event(self, session, request_id, actor, source, kind, **payload):
        if source not in SOURCES:
            raise ValueError(f"unknown event source {source!r}")
        session.add(Event(request_id=request_id, at=self.clock(), actor=actor,
                          source=source, kind=kind, payload=payload))

    def _when(self, at, not_before, office_key):
        """The time a step happened: now by default; never in the future or before the last step."""
        now = self.clock()
        if at is None:
            at = now
        tz = self.config.office(office_key).tz
        if at.tzinfo is None:
            at = at.replace(tzinfo=tz)  # a time without a zone is the office's local time
        if at > now + timedelta(seconds=5):
            raise UserError(f"--at: {at.isoformat()} is in the future")
        if not_before is not None and at < not_before:
            raise UserError(f"--at: {at.astimezone(tz).isoformat()} is before the previous step "
                            f"ended ({not_before.astimezone(tz).isoformat()})")
        return at

    # -- submit -----------------------------------------------------------

    def submit(self, raw, source_name, at=None, source="cli", spawned_from=None):
        """Validate and register a request, start its SOP and record its first step (the letter).

        `spawned_from` is given by provisioner.sop.spawn only: the request the hosting
        request is made for. Only then may the content name it (`linked_request`).
        """
        request = validate(raw, self.config, source=source_name, spawned=spawned_from is not None)
        if spawned_from is not None and (request.service != "hosting" or request.linked_request != spawned_from):
            raise ValueError(f"{request.id}: a spawned request is a hosting request naming {spawned_from} "
                             f"in linked_request")
        sop = self.sop_for(request.office, request.service)
        at = self._when(at, None, request.office)
        tz = self.config.office(request.office).tz
        if at.astimezone(tz).date() < request.letter.date:
            raise UserError(f"--at: the request cannot arrive before its letter's date "
                            f"({request.letter.date.isoformat()})")
        first = sop.first
        following = sop.default_next(first)
        user = _os_user()
        try:
            with self.store.session() as session:
                existing = session.get(RequestRow, request.id)
                if existing is not None:
                    if existing.sha256 == request.sha256:
                        return Outcome(request.id, False, f"{request.id} is already registered "
                                                          f"with this content; nothing done")
                    raise Conflict(f"{request.id} is already registered with other content "
                                   f"(sha256 {existing.sha256[:12]}...); an edited request needs a new id")
                fqdn = request.fqdn
                if fqdn is not None:
                    self._check_clash(session, request, fqdn)
                if spawned_from is not None and session.get(RequestRow, spawned_from) is None:
                    raise NotFound(f"no request {spawned_from!r}")
                session.add(RequestRow(linked_to=spawned_from,
                    id=request.id, service=request.service, office=request.office,
                    fqdn=fqdn or "", sha256=request.sha256, content=request.raw,
                    source=source_name, submitted_at=at, state="submitted", decision=None,
                    current_step=following.key if following else None))
                session.flush()
                session.add(StepRecord(request_id=request.id, step_key=first.key, by=first.actor,
                                       branch=None, note=None, ended_at=at, source=source))
                self._event(session, request.id, user, source, "request_submitted",
                            service=request.service, office=request.office, fqdn=fqdn,
                            sha256=request.sha256, file=source_name, received_at=at.isoformat(),
                            sop=sop.name, sop_document=sop.document.number, sop_title=sop.title)
                self._event(session, request.id, first.actor, source, "step_recorded",
                            step=first.key, number=first.number, user=user, at=at.isoformat())
        except IntegrityError:
            raise Conflict(f"{request.id} was registered at the same moment by someone else") from None
        outcome = Outcome(request.id, True, f"{request.id} registered; SOP {sop.name} started")
        outcome.actions = self._run_pending(request.id)
        return outcome

    def _check_clash(self, session, request, fqdn):
        """One open request per service and name; a website for a name without a site brings its hosting.

        Requests of different services for one name do not clash: a website update for a live
        hosting site, or the hosting request spawned for a website request, is expected.
        """
        # An approved request whose site was removed is spent (closed_at, or the removed
        # site's owner in a store from before closed_at): a new one may follow, any number of times.
        removed = session.get(SiteRow, fqdn)
        spent = removed.request_id if removed is not None and removed.state == "removed" else None
        query = select(RequestRow).where(
            RequestRow.fqdn == fqdn, RequestRow.service == request.service, RequestRow.id != spent,
            RequestRow.closed_at.is_(None),
            (RequestRow.decision.is_(None)) | (RequestRow.decision == "approve"))
        if request.service != "hosting":
            # An approved hosting request holds its name while the site lives; a website
            # (or application) request is open only until its SOP is done.
            query = query.where(RequestRow.state != "done")
        clash = session.scalars(query).first()
        if clash is not None:
            raise Conflict(f"{fqdn} is already requested by {clash.id}")
        if request.website is not None and request.website.hosting is None and not site_exists(session, fqdn):
            path = ("website", "hosting")
            raise ValidationError([Problem("website.hosting", f"required: {fqdn} has no site yet; "
                                                              f"give the hosting it needs",
                                           line_of(request.raw, path))], request.source)

    # -- human steps --------------------------------------------------------

    def _check_actor(self, sop, step, by):
        if by not in sop.roles:
            raise UserError(f"--by: {by!r} is not a role of SOP {sop.name} "
                            f"({', '.join(sop.roles)})")
        if by != step.actor:
            raise PermissionDenied(f"step {step.number} ({step.key}) is done by {step.actor} "
                                   f"({sop.roles[step.actor]}), not {by}")

    def _check_turn(self, session, row, sop, step):
        if row.current_step == step.key:
            return
        record = session.scalars(select(StepRecord).where(
            StepRecord.request_id == row.id, StepRecord.step_key == step.key)).first()
        if record is not None:
            raise StateError(f"{row.id}: step {step.number} ({step.key}) was already recorded "
                             f"at {record.ended_at.isoformat()}")
        if row.current_step is None:
            raise StateError(f"{row.id} is done; no step is open")
        due = sop.step(row.current_step)
        raise StateError(f"{row.id}: steps follow the SOP's order; the next step is "
                         f"{due.number} ({due.key}): {due.activity}")

    def _last_end(self, session, request_id):
        return max(r.ended_at for r in session.scalars(
            select(StepRecord).where(StepRecord.request_id == request_id)))

    def _advance(self, session, row, step, next_step, **changes):
        """Move the request past `step`, only if it is still at `step` (compare-and-set)."""
        values = dict(current_step=next_step.key if next_step else None, **changes)
        if next_step is None:
            values["state"] = "done"
        result = session.execute(update(RequestRow).where(
            RequestRow.id == row.id, RequestRow.current_step == step.key).values(**values))
        if result.rowcount != 1:
            raise StateError(f"{row.id} moved on while this step was being recorded; try again")

    def record_step(self, request_id, step_ref, by, note=None, at=None, branch=None, source="cli",
                    data_file=None):
        """Record that a person did a step of the request's SOP (with its data file, if it takes one)."""
        note = _check_text(note, "--note")
        with self.store.session() as session:
            row = self._row(session, request_id)
            sop = self.sop_for(row.office, row.service)
            step = sop.step(step_ref)
            if step.approval:
                raise StateError(f"step {step.number} ({step.key}) is the decision; "
                                 f"use `provision decide {request_id} --approve|--reject`")
            if step.automated:
                raise StateError(f"step {step.number} ({step.key}) is done by the toolkit "
                                 f"(action {step.action}); use `provision request resume {request_id}`")
            _check_attention(row)
            self._check_turn(session, row, sop, step)
            self._check_actor(sop, step, by)
            data = self._step_data(step, data_file)
            if step.answered_by:
                branch = self._answer(session, row, step, branch)
            if step.branches:
                if branch not in step.branches:
                    raise UserError(f"step {step.number} ({step.key}) is a decision: give --branch "
                                    + " or ".join(step.branches))
                next_step = sop.step(step.branches[branch].next)
            elif branch is not None:
                raise UserError(f"step {step.number} ({step.key}) has no branches")
            else:
                next_step = sop.default_next(step)
            at = self._when(at, self._last_end(session, request_id), row.office)
            self._advance(session, row, step, next_step)
            session.add(StepRecord(request_id=request_id, step_key=step.key, by=by, branch=branch,
                                   note=note, ended_at=at, source=source, data=data))
            extra = {"data": data} if data is not None else {}
            self._event(session, request_id, by, source, "step_recorded", step=step.key,
                        number=step.number, branch=branch, note=note, user=_os_user(),
                        at=at.isoformat(), **extra)
        outcome = Outcome(request_id, True, f"{request_id}: step {step.number} ({step.key}) recorded")
        outcome.actions = self._run_pending(request_id)
        return outcome

    def _step_data(self, step, data_file):
        """The step's validated data file, or None; refused where the SOP does not ask for one."""
        if data_file is None:
            if step.data_required:
                raise UserError(f"step {step.number} ({step.key}) needs --data FILE: the {step.data} "
                                f"it records (see `provision sop show`)")
            return None
        if step.data is None:
            raise UserError(f"--data: step {step.number} ({step.key}) takes no data file")
        return read_step_data(data_file, step.data)

    def _answer(self, session, row, step, branch):
        """The branch the records give (answered_by); a --branch that disagrees is refused."""
        exists = site_exists(session, row.fqdn)
        answer = "ada" if exists else "belum_ada"
        if branch is not None and branch != answer:
            found = (f"a provisioned site {row.fqdn} is recorded" if exists
                     else f"no provisioned site {row.fqdn or '(no name)'} is recorded")
            raise UserError(f"--branch {branch}: step {step.number} ({step.key}) is answered from the "
                            f"configuration records: {found}, so the branch is {answer}")
        return answer

    # -- the decision -------------------------------------------------------

    def decide(self, request_id, approve, by, reason=None, at=None, source="cli",
               expected_sha256=None, replay_key=None, run_actions=True):
        """Record the approval decision, then run the hook (the actions now due).

        `expected_sha256` binds the decision to the exact content approved;
        `replay_key` (the webhook post id) is stored in the same transaction.
        `run_actions=False` only records it: the caller runs the actions later, with
        others' (the webhook's batching window, through resume_many).
        """
        reason = _check_text(reason, "--reason")
        wanted = APPROVE if approve else REJECT
        try:
            done = self._record_decision(request_id, approve, wanted, by, reason, at, source,
                                         expected_sha256, replay_key)
        except IntegrityError:
            if replay_key is not None and self.seen_webhook(replay_key):
                raise Replayed(f"webhook id {replay_key!r} was already used") from None
            raise StateError(f"{request_id} was decided at the same moment elsewhere") from None
        if done is not None:
            return done
        verb = "approved" if approve else "rejected"
        outcome = Outcome(request_id, True, f"{request_id} {verb}")
        if run_actions:
            outcome.actions = self._run_pending(request_id)
        return outcome

    def _record_decision(self, request_id, approve, wanted, by, reason, at, source,
                         expected_sha256, replay_key):
        """Store the decision; return an Outcome only when there was nothing to do."""
        with self.store.session() as session:
            row = self._row(session, request_id)
            if expected_sha256 is not None and expected_sha256 != row.sha256:
                raise Conflict(f"{request_id}: the decision is for content sha256 "
                               f"{expected_sha256[:12]}..., but the registered request is "
                               f"{row.sha256[:12]}...; an edited request must be submitted anew")
            sop = self.sop_for(row.office, row.service)
            step = sop.approval_step
            record = session.scalars(select(StepRecord).where(
                StepRecord.request_id == request_id, StepRecord.step_key == step.key)).first()
            if record is not None:
                if record.branch == wanted:
                    return Outcome(request_id, False, f"{request_id} was already "
                                   f"{'approved' if approve else 'rejected'} at "
                                   f"{record.ended_at.isoformat()}; nothing done")
                raise StateError(f"{request_id} was already decided the other way "
                                 f"({record.branch}) at {record.ended_at.isoformat()}")
            # A failed action (a document of an earlier step, say) is fixed before the request moves on.
            _check_attention(row)
            self._check_turn(session, row, sop, step)
            self._check_actor(sop, step, by)
            if not approve and not (reason or "").strip():
                raise UserError("a rejection needs --reason; it goes into the reply letter")
            at = self._when(at, self._last_end(session, request_id), row.office)
            next_step = sop.step(step.branches[wanted].next)
            self._advance(session, row, step, next_step,
                          state="approved" if approve else "rejected",
                          decision="approve" if approve else "reject")
            session.add(StepRecord(request_id=request_id, step_key=step.key, by=by, branch=wanted,
                                   note=reason, ended_at=at, source=source))
            if replay_key is not None:
                session.add(WebhookKey(key=replay_key, received_at=self.clock(), request_id=request_id))
            self._event(session, request_id, by, source, "decided", step=step.key,
                        decision="approve" if approve else "reject", branch=wanted, reason=reason,
                        sha256=row.sha256, webhook_id=replay_key,
                        user=_os_user() if source == "cli" else None, at=at.isoformat())
        return None

    def decision_role(self, request_id):
        """The role that records the request's approval decision."""
        with self.store.session() as session:
            row = self._row(session, request_id)
        return self.sop_for(row.office, row.service).approval_step.actor

    def seen_webhook(self, key):
        with self.store.session() as session:
            return session.get(WebhookKey, key) is not None

    # -- actions (the approval hook) ---------------------------------------

    def resume(self, request_id, force=False, options=None, source="hook"):
        """Run the actions that are due (after a failure, or with force after a crash)."""
        with self.store.session() as session:
            self._row(session, request_id)
        results = self._run_pending(request_id, force=force, options=options, source=source,
                                    include_waiting=True)
        if not results:
            return Outcome(request_id, False, f"{request_id}: no action is due; nothing done")
        return Outcome(request_id, True, f"{request_id}: {len(results)} action(s) ran", results)

    def resume_many(self, request_ids, force=False, options=None, source="hook", include_waiting=True):
        """Run the due actions of many requests together: {request id: Outcome}.

        Each round claims every request's next due action and groups the requests by
        action; an action with a batch form (ActionRegistry.register_batch) runs once
        for its group (one hosting apply for every site), others once per request. Each
        request's step is then recorded exactly as resume records it for one request:
        done, waiting, or failed with its own error (Outcome.error) while the others go
        on to their later steps (the letter) in the next round. Nothing is raised for a
        request's failure, nor for an error that is not the toolkit's (a bug): that is the
        Outcome.error of its requests too, for the caller to raise (with its traceback).
        """
        ids = list(dict.fromkeys(request_ids))
        with self.store.session() as session:
            for request_id in ids:
                self._row(session, request_id)
        ran = {request_id: [] for request_id in ids}
        errors = {}
        active = list(ids)
        while active:
            claimed = {}
            for request_id in active:
                try:
                    found = self._claim_next(request_id, force, include_waiting)
                except ProvisionerError as err:  # claimed elsewhere, say: this request stops here
                    errors[request_id] = err
                    continue
                if found is not None:
                    claimed[request_id] = found
            force = include_waiting = False  # as in _run_pending: only the first round
            groups = {}
            for request_id, found in claimed.items():
                groups.setdefault(found.pending.action, []).append(request_id)
            active = []
            for action, members in groups.items():
                results = self._run_group(action, members, claimed, options, source)
                for request_id in members:
                    found, result = claimed[request_id], results[request_id]
                    try:
                        if not isinstance(result, BaseException):
                            ran[request_id].append(self._action_succeeded(request_id, found, result or {}))
                            if action == PROVISION_ACTION:
                                ran[request_id].extend(self._resume_linked(request_id))
                            active.append(request_id)
                            continue
                        entry, error = self._action_raised(request_id, found, result)
                    except ProvisionerError as err:  # its record could not be written (moved on elsewhere)
                        entry, error = None, err
                    if entry is not None:
                        ran[request_id].append(entry)
                        continue
                    errors[request_id] = error
        outcomes = {}
        for request_id in ids:
            done = [r for r in ran[request_id] if "result" in r]
            error = errors.get(request_id)
            if error is not None:
                message = f"{request_id}: {len(done)} action(s) ran, then one failed"
            elif ran[request_id]:
                message = f"{request_id}: {len(ran[request_id])} action(s) ran"
            else:
                message = f"{request_id}: no action is due; nothing done"
            outcomes[request_id] = Outcome(request_id, bool(ran[request_id]) or error is not None, message,
                                           ran[request_id], error)
        return outcomes

    def _run_group(self, action, members, claimed, options, source):
        """Run one action for these requests: {request id: its result, or the exception it raised}."""
        results, contexts = {}, []
        for request_id in members:
            try:
                contexts.append(self._context(request_id, claimed[request_id], options, source))
            except Exception as err:  # noqa: BLE001 - its stored request no longer validates: its own failure
                results[request_id] = err
        batch = self.actions.batch(action)
        if batch is not None and contexts:
            try:
                answered = batch(contexts)
            except Exception as err:  # noqa: BLE001 - the whole batch failed: so did each request in it
                answered = {c.request.id: err for c in contexts}
            for context in contexts:
                request_id = context.request.id
                if request_id not in answered:  # never taken as done: the step stays open
                    answered[request_id] = ActionError(f"the batch form of {action} gave no result "
                                                       f"for {request_id}")
                results[request_id] = answered[request_id]
            return results
        single = self.actions.get(action)
        for context in contexts:
            try:
                results[context.request.id] = single(context) or {}
            except Exception as err:  # noqa: BLE001 - recorded per request by the caller
                results[context.request.id] = err
        return results

    def current_action(self, request_id):
        """The action of the request's current step (None for a person's step or a finished SOP)."""
        with self.store.session() as session:
            row = self._row(session, request_id)
        if not row.current_step:
            return None
        return self.sop_for(row.office, row.service).step(row.current_step).action

    def waiting_on(self, action, skip_running=True):
        """The requests whose SOP waits on `action` at their current step, oldest first
        (approved and not yet provisioned, for provision_site); by default not those whose
        action is running right now in another process."""
        out = []
        with self.store.session() as session:
            rows = session.scalars(select(RequestRow).where(RequestRow.current_step.is_not(None))
                                   .order_by(RequestRow.submitted_at, RequestRow.id)).all()
            running = set(session.scalars(select(ActionRun.request_id).where(ActionRun.status == "running")))
            for row in rows:
                try:
                    step = self.sop_for(row.office, row.service).step(row.current_step)
                except ProvisionerError:
                    continue  # an SOP the office no longer runs: its requests are listed elsewhere
                if step.action == action and not (skip_running and row.id in running):
                    out.append(row.id)
        return out

    def _due(self, session, row, sop, include_waiting=False):
        """The next action to run for a request, or None.

        A waiting action is due only when asked for (a resume, or the site it waits for
        was provisioned): recording another step must not knock on it again.
        """
        runs = {r.step_key: r for r in session.scalars(
            select(ActionRun).where(ActionRun.request_id == row.id))}

        def due(step):
            status = getattr(runs.get(step.key), "status", None)
            return status != "done" and (include_waiting or status != "waiting")

        records = session.scalars(select(StepRecord).where(StepRecord.request_id == row.id)
                                  .order_by(StepRecord.id))
        for record in records:
            step = sop.step(record.step_key)
            branch = (step.branches or {}).get(record.branch) if record.branch else None
            if branch and branch.action and due(step):
                return _Pending(step, branch.action, record.branch), runs.get(step.key)
            if step.after and record.by != SYSTEM and due(step):
                return _Pending(step, step.after, record.branch, after=True), runs.get(step.key)
        if row.current_step:
            step = sop.step(row.current_step)
            if step.automated and due(step):
                return _Pending(step, step.action, None), runs.get(step.key)
        return None, None

    def _claim(self, session, row, pending, run, force):
        now = self.clock()
        if run is None:
            session.add(ActionRun(request_id=row.id, step_key=pending.step.key, action=pending.action,
                                  status="running", attempts=1, started_at=now, finished_at=None))
            session.flush()
            return 1
        if run.status == "running" and not force:
            raise StateError(f"{row.id}: action {run.action} of step {pending.step.number} has been "
                             f"running since {run.started_at.isoformat()}; if that process died, "
                             f"use `provision request resume {row.id} --force`")
        result = session.execute(update(ActionRun).where(
            ActionRun.request_id == row.id, ActionRun.step_key == pending.step.key,
            ActionRun.status == run.status, ActionRun.attempts == run.attempts).values(
            status="running", attempts=run.attempts + 1, started_at=now, finished_at=None))
        if result.rowcount != 1:
            raise StateError(f"{row.id}: action {run.action} was claimed by another process")
        return run.attempts + 1

    def _run_pending(self, request_id, force=False, options=None, source="hook", include_waiting=False):
        results = []
        while True:
            claimed = self._claim_next(request_id, force, include_waiting)
            if claimed is None:
                return results
            force = False  # only the first claim may take over a stale run
            try:
                result = self.actions.get(claimed.pending.action)(
                    self._context(request_id, claimed, options, source)) or {}
            except Exception as err:
                entry, error = self._action_raised(request_id, claimed, err)
                if error is err:
                    raise
                if error is not None:
                    raise error from err
                results.append(entry)
                return results  # nothing after it can run until it does
            results.append(self._action_succeeded(request_id, claimed, result))
            include_waiting = False  # a waiting action runs once per resume, not in a loop
            if claimed.pending.action == PROVISION_ACTION:
                results.extend(self._resume_linked(request_id))

    def _claim_next(self, request_id, force, include_waiting):
        """Claim the request's next due action (recorded started), or None when none is due."""
        try:
            with self.store.session() as session:
                row = self._row(session, request_id)
                sop = self.sop_for(row.office, row.service)
                pending, run = self._due(session, row, sop, include_waiting)
                if pending is None:
                    return None
                attempt = self._claim(session, row, pending, run, force)
                self._event(session, request_id, SYSTEM, "hook", "action_started",
                            step=pending.step.key, action=pending.action, attempt=attempt)
                reason = session.scalars(select(StepRecord.note).where(
                    StepRecord.request_id == request_id,
                    StepRecord.step_key == sop.approval_step.key)).first()
                return _Claimed(pending, sop, row.content, row.decision, reason)
        except IntegrityError:
            raise StateError(f"{request_id}: an action was claimed by another process") from None

    def _context(self, request_id, claimed, options, source):
        # Accepted earlier: an action that provisions checks today's rules itself
        # (Hosting.load_requests); a letter or a later step must not be stranded by them.
        request = validate(claimed.content, self.config, source=f"stored {request_id}", stored=True)
        return ActionContext(request=request, sop=claimed.sop, step=claimed.pending.step,
                             branch=claimed.pending.branch, reason=claimed.reason, config=self.config,
                             options=dict(options or {}), source=source, store=self.store)

    def _action_succeeded(self, request_id, claimed, result):
        pending = claimed.pending
        self._action_done(request_id, claimed.sop, pending, result, claimed.decision)
        return {"step": pending.step.key, "action": pending.action, "result": result}

    def _action_raised(self, request_id, claimed, err):
        """Record an action that raised: (the entry, None) when it waits, else (None, the error
        to raise): an ActionError, or `err` itself when it is not the toolkit's (a bug keeps
        its traceback)."""
        pending = claimed.pending
        if isinstance(err, Waiting):
            message = self._action_waiting(request_id, pending, err, claimed.decision)
            return {"step": pending.step.key, "action": pending.action, "waiting": message}, None
        self._action_failed(request_id, pending, err)
        if isinstance(err, ValidationError):
            error = ActionError(f"{request_id}: the stored request no longer validates: {err}")
        elif isinstance(err, ProvisionerError):
            error = ActionError(f"{request_id}: step {pending.step.number} ({pending.step.key}): "
                                f"action {pending.action} failed: {err}")
        else:
            return None, err
        error.__cause__ = err
        return None, error

    def _resume_linked(self, request_id):
        """Run the due (and waiting) actions of the request this one was spawned for.

        The parent's failure is recorded on the parent (attention, action_failed) and
        noted on this request; it never fails this request's own outcome.
        """
        with self.store.session() as session:
            parent = session.scalars(select(RequestRow.linked_to).where(RequestRow.id == request_id)).first()
        if not parent:
            return []
        try:
            ran = self._run_pending(parent, include_waiting=True)
        except Exception as err:  # the parent's trouble is the parent's: record it and go on
            with self.store.session() as session:
                self._event(session, request_id, SYSTEM, "hook", "linked_resume_failed", linked=parent,
                            error=f"{type(err).__name__}: {err}")
            return [{"request": parent, "step": None, "action": None, "error": f"{type(err).__name__}: {err}"}]
        return [dict(r, request=parent) for r in ran]

    def _action_done(self, request_id, sop, pending, result, decision):
        now = self.clock()
        with self.store.session() as session:
            row = self._row(session, request_id)
            session.execute(update(ActionRun).where(
                ActionRun.request_id == request_id, ActionRun.step_key == pending.step.key).values(
                status="done", finished_at=now))
            state = {"approve": "approved", "reject": "rejected"}.get(decision, "submitted")
            if row.current_step is None:
                state = "done"  # an action after the last step: the request stays done
            if pending.branch is None and not pending.after:
                # An automated step is complete when its action is.
                self._advance(session, row, pending.step, sop.default_next(pending.step), state=state)
                session.add(StepRecord(request_id=request_id, step_key=pending.step.key, by=SYSTEM,
                                       branch=None, note=None, ended_at=now, source="hook"))
            elif row.state == "attention":
                session.execute(update(RequestRow).where(RequestRow.id == request_id).values(state=state))
            self._event(session, request_id, SYSTEM, "hook", "action_done", step=pending.step.key,
                        action=pending.action, result=result)

    def _action_waiting(self, request_id, pending, err, decision):
        """Waiting is not failure: the run may be claimed again, and a request in attention from
        an earlier failure of this action goes back to the state of its decision (as on success).

        Returns the message, which names the hosting requests made for this one earlier that
        were rejected or closed: the wait is for the new one, not for them.
        """
        from provisioner.sop.spawn import passed_over

        message = str(err)
        earlier = passed_over(self.store, request_id)
        if earlier:
            message += "; " + "; ".join(
                f"the previous hosting request {child} was {how}" + (f" ({reason})" if reason else "")
                for child, how, reason in earlier)
        with self.store.session() as session:
            row = self._row(session, request_id)
            session.execute(update(ActionRun).where(
                ActionRun.request_id == request_id, ActionRun.step_key == pending.step.key).values(
                status="waiting", finished_at=self.clock()))
            if row.state == "attention":
                state = {"approve": "approved", "reject": "rejected"}.get(decision, "submitted")
                session.execute(update(RequestRow).where(RequestRow.id == request_id).values(
                    state="done" if row.current_step is None else state))
            self._event(session, request_id, SYSTEM, "hook", "action_waiting", step=pending.step.key,
                        action=pending.action, message=message)
        return message

    def _action_failed(self, request_id, pending, err):
        with self.store.session() as session:
            session.execute(update(ActionRun).where(
                ActionRun.request_id == request_id, ActionRun.step_key == pending.step.key).values(
                status="failed", finished_at=self.clock()))
            session.execute(update(RequestRow).where(RequestRow.id == request_id).values(state="attention"))
            self._event(session, request_id, SYSTEM, "hook", "action_failed", step=pending.step.key,
                        action=pending.action, error=f"{type(err).__name__}: {err}")

    # -- reading ------------------------------------------------------------

    def list_requests(self, state=None):
        with self.store.session() as session:
            query = select(RequestRow).order_by(RequestRow.submitted_at, RequestRow.id)
            if state:
                query = query.where(RequestRow.state == state)
            return [_row_dict(r) for r in session.scalars(query)]

    def events(self, request_id):
        with self.store.session() as session:
            self._row(session, request_id)
            return [{"id": e.id, "at": e.at, "actor": e.actor, "source": e.source, "kind": e.kind,
                     "payload": e.payload}
                    for e in session.scalars(select(Event).where(Event.request_id == request_id)
                                             .order_by(Event.id))]

    def show(self, request_id, now=None):
        """The request with every step: actor, planned start, deadline, actual end, breach."""
        from provisioner.sop.schedule import schedule

        with self.store.session() as session:
            row = self._row(session, request_id)
            records = {r.step_key: r for r in session.scalars(
                select(StepRecord).where(StepRecord.request_id == request_id))}
            runs = {r.step_key: r for r in session.scalars(
                select(ActionRun).where(ActionRun.request_id == request_id))}
        sop = self.sop_for(row.office, row.service)
        steps = schedule(sop, row, records, runs, self.calendar(row.office), now or self.clock())
        return dict(_row_dict(row), sop=sop.name, title=sop.title, steps=steps)

    def timelines(self):
        """Every request not done, with its step records and action runs (schedule.Timeline)."""
        from provisioner.sop.schedule import Timeline

        with self.store.session() as session:
            rows = session.scalars(select(RequestRow).where(RequestRow.state != "done")
                                   .order_by(RequestRow.submitted_at, RequestRow.id)).all()
            found = {row.id: Timeline(row, {}, {}) for row in rows}
            open_ids = select(RequestRow.id).where(RequestRow.state != "done")
            for record in session.scalars(select(StepRecord).where(StepRecord.request_id.in_(open_ids))):
                found[record.request_id].records[record.step_key] = record
            for run in session.scalars(select(ActionRun).where(ActionRun.request_id.in_(open_ids))):
                found[run.request_id].runs[run.step_key] = run
        return list(found.values())

    def overdue(self, now=None):
        """Open steps past their deadline, across every request not done."""
        from provisioner.sop.schedule import overdue

        return overdue(self.timelines(), self.sop_for, self.calendar, now or self.clock())


def _row_dict(row):
    return {"id": row.id, "service": row.service, "office": row.office, "fqdn": row.fqdn,
            "state": row.state, "decision": row.decision, "current_step": row.current_step,
            "sha256": row.sha256, "source": row.source, "submitted_at": row.submitted_at,
            "linked_to": row.linked_to}
