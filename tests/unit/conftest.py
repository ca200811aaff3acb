import shutil
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from provisioner.config import REPO_ROOT, Config, default_offices
from provisioner.sop.engine import Engine
from provisioner.sop.hooks import ACTIONS
from provisioner.store import open_store

import pg

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


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory):
    """The user's cache directory (the holiday tables, provisioner/sop/holidays.py) for this
    session only: nothing is read from or left in the real one."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("cache")
        patch.setenv("XDG_CACHE_HOME", str(path))
        yield path


@pytest.fixture
def config(tmp_path):
    return Config(offices=default_offices(), state_dir=tmp_path)


# The state database backends the store's tests run on.
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL server for the session (tests/unit/pg.py); skipped when
    none can be started, unless PROVISIONER_REQUIRE_PG or PROVISIONER_REQUIRE_LAB is set."""
    try:
        server = pg.start()
    except pg.Unavailable as err:
        if pg.required():
            pytest.fail(f"PostgreSQL required: {err}")
        pytest.skip(str(err))
    yield server
    server.stop()


def state_url_for(request, tmp_path, backend):
    """A fresh, empty state database on `backend`: a SQLite file, or a new PostgreSQL database."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    server = request.getfixturevalue("pg_server")
    url = server.new_database()
    request.addfinalizer(lambda: server.drop_database(url))
    return url


@pytest.fixture(params=BACKENDS)
def state_url(request, tmp_path):
    """The URL of a fresh state database, once on SQLite and once on PostgreSQL."""
    return state_url_for(request, tmp_path, request.param)


@pytest.fixture
def store(state_url):
    """A fresh state database (on each backend)."""
    s = open_store(state_url)
    yield s
    s.close()


@pytest.fixture
def clock():
    return Clock(datetime(2024, 8, 13, 8, 0, tzinfo=WITA))


@pytest.fixture
def actions():
    return CountingActions()


@pytest.fixture
def engine(config, state_url, clock, actions):
    store = open_store(state_url)
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
