import shutil
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from provisioner.config import REPO_ROOT, Config, default_offices
from provisioner.sop.engine import Engine
from provisioner.sop.hooks import ACTIONS
from provisioner.store import open_store

WITA = ZoneInfo("Asia/Makassar")
EXAMPLES = REPO_ROOT / "examples"


class Clock:
    """A settable clock, so SLA tests do not depend on today."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class CountingActions:
    """Test actions standing in for provisioning and letters; they count their calls."""

    def __init__(self):
        self.calls = []
        self.fail = set()
        self.registry = ACTIONS.copy()
        for name in sorted(ACTIONS.names()):
            self.registry.register(name, self._make(name), replace=True)

    def _make(self, name):
        def action(ctx):
            self.calls.append((name, ctx.request.id, ctx.step.key, ctx.branch))
            if name in self.fail:
                from provisioner.errors import HostError
                raise HostError(f"{name} broke on purpose")
            return {"marker": f"{name}:{ctx.request.id}"}
        return action

    def count(self, name):
        return sum(1 for call in self.calls if call[0] == name)


@pytest.fixture
def config(tmp_path):
    return Config(offices=default_offices(), state_dir=tmp_path)


@pytest.fixture
def store(tmp_path):
    """A fresh SQLite state database."""
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


@pytest.fixture
def clock():
    return Clock(datetime(2024, 8, 13, 8, 0, tzinfo=WITA))


@pytest.fixture
def actions():
    return CountingActions()


@pytest.fixture
def engine(config, tmp_path, clock, actions):
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield Engine(config, store, actions=actions.registry, clock=clock)
    store.close()


@pytest.fixture
def simkes_bytes():
    return (EXAMPLES / "tarakan-simkes.yaml").read_bytes()


@pytest.fixture
def sop_copy(tmp_path):
    target = tmp_path / "sop"
    shutil.copytree(REPO_ROOT / "sop", target)
    return target
