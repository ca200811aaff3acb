"""Actions: the callables that SOP steps name with `action:`.

An action receives an ActionContext and returns a small dict for the event log
(never a secret). It raises a ProvisionerError to fail; the engine records the
failure and the step stays open for `provision request resume`.

An action may also have a batch form that takes the contexts of many requests
waiting on it and runs once for all of them (one hosting apply, letters side by
side); Engine.resume_many uses it, every other path runs the action per request.

The default registry holds the toolkit's actions. Those whose issue has not
landed yet raise ActionError saying so.
"""

from contextlib import contextmanager
from dataclasses import dataclass, field

from provisioner.errors import ActionError


@dataclass(frozen=True)
class ActionContext:
    request: object  # provisioner.request.Request, re-validated from the stored bytes
    sop: object
    step: object  # the Step the action belongs to
    branch: str | None  # the decision branch, for actions bound to a branch
    reason: str | None  # the decision's reason (for a reply letter)
    config: object
    # Caller's options for the action (for example the plan checksum an
    # operator reviewed); empty when the approval hook runs it.
    options: dict = field(default_factory=dict)
    source: str = "hook"
    # The state database the engine runs on: an action writes its rows there,
    # not to whatever database the configuration would open.
    store: object = None


@contextmanager
def action_store(ctx):
    """The engine's store for the action; one opened from the configuration if it ran without one."""
    if ctx.store is not None:
        yield ctx.store
        return
    from provisioner.store import open_store

    store = open_store(ctx.config.resolved_state_url())
    try:
        yield store
    finally:
        store.close()


class ActionRegistry:
    def __init__(self):
        self._actions = {}
        self._batches = {}  # name -> (the action it is the batch form of, the batch form)

    def register(self, name, func=None, replace=False):
        """Register `func` as `name`; usable as a decorator: @registry.register("x")."""
        def add(f):
            if name in self._actions and not replace:
                raise ValueError(f"action {name!r} is already registered")
            self._actions[name] = f
            return f
        return add(func) if func is not None else add

    def register_batch(self, name, func):
        """Register `func` as the batch form of action `name` (Engine.resume_many runs it once for
        many requests): func(contexts) -> {request id: result dict, or the exception that failed it}."""
        self._batches[name] = (self.get(name), func)

    def get(self, name):
        try:
            return self._actions[name]
        except KeyError:
            raise ActionError(f"no action named {name!r} is registered") from None

    def batch(self, name):
        """The batch form of `name`, or None. A batch form belongs to the action it was registered
        with: once the action is replaced (a stand-in in a test, say), the old batch form is not used."""
        bound = self._batches.get(name)
        if bound is None or self._actions.get(name) is not bound[0]:
            return None
        return bound[1]

    def names(self):
        return set(self._actions)

    def copy(self):
        other = ActionRegistry()
        other._actions = dict(self._actions)
        other._batches = dict(self._batches)
        return other


def _not_available(name, issue):
    def action(ctx):
        raise ActionError(f"action {name} is not available yet ({issue}); "
                          f"run `provision request resume {ctx.request.id}` once it is")
    action.__name__ = name
    action.__doc__ = f"Placeholder until {issue} lands."
    return action


def _provision_site(ctx):
    # Imported when first run: the SOP engine loads without the hosting stack.
    from provisioner.hosting import provision_site_action

    return provision_site_action(ctx)


def _provision_sites(contexts):
    from provisioner.sop.batch import provision_sites_action

    return provision_sites_action(contexts)


def _render_letter(ctx):
    from provisioner.letters.actions import render_letter_action

    return render_letter_action(ctx)


def _render_letters(contexts):
    from provisioner.letters.actions import render_letters_action

    return render_letters_action(contexts)


def _render_reply_letter(ctx):
    from provisioner.letters.actions import render_reply_letter_action

    return render_reply_letter_action(ctx)


def _document_action(name):
    """A document action (provisioner.letters.actions.<name>_action), imported when first run."""
    def action(ctx):
        from provisioner.letters import actions

        return getattr(actions, f"{name}_action")(ctx)
    action.__name__ = f"_{name}"
    return action


ACTIONS = ActionRegistry()
ACTIONS.register("provision_site", _provision_site)
ACTIONS.register("render_letter", _render_letter)
ACTIONS.register("render_reply_letter", _render_reply_letter)
# One hosting apply for all the sites of a batch, and their letters rendered side by side.
ACTIONS.register_batch("provision_site", _provision_sites)
ACTIONS.register_batch("render_letter", _render_letters)
for _name in ("render_analysis", "render_kak", "render_report", "render_delegation", "render_handover",
              "render_website_report"):
    ACTIONS.register(_name, _document_action(_name))


def _install_website(ctx):
    from provisioner.website.sop import install_website_action

    return install_website_action(ctx)


ACTIONS.register("install_website", _install_website)
