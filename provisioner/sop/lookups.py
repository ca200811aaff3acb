"""An office's SOP for a service and its working calendar, looked up and kept.

The engine's look-ups, in a module of their own so that `provision sla` can
work out deadlines without the engine (which imports the store and its models).
"""

from provisioner.sop.hooks import ACTIONS
from provisioner.sop.model import load_sop, office_sop
from provisioner.sop.sla import WorkCalendar


class Lookups:
    def __init__(self, config, actions=ACTIONS):
        self.config = config
        self.actions = actions
        self._calendars = {}

    def sop(self, name):
        return load_sop(self.config.sop_dir, name, known_actions=self.actions.names())

    def sop_for(self, office_key, service):
        """The SOP the office runs for the service (offices.<key>.sops)."""
        return office_sop(self.config, office_key, service, known_actions=self.actions.names())

    def calendar(self, office_key):
        if office_key not in self._calendars:
            self._calendars[office_key] = WorkCalendar.for_office(self.config.office(office_key))
        return self._calendars[office_key]
