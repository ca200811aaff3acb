"""A run is a success only when ansible-runner says so in every way."""

import pytest

from provisioner.errors import HostError
from provisioner.runner import check_result

HOSTS = {"web1", "db1"}


def stats(**overrides):
    base = {
        "processed": {"web1": 1, "db1": 1},
        "ok": {"web1": 3, "db1": 2},
        "changed": {"web1": 1},
        "dark": {},
        "failures": {},
        "ignored": {},
    }
    base.update(overrides)
    return base


def test_clean_run_is_a_success():
    result = check_result("successful", 0, stats(), HOSTS)
    assert result.changed == {"web1": 1}


@pytest.mark.parametrize(
    "status, rc, st, reason",
    [
        ("failed", 2, stats(), "status failed"),
        ("successful", 1, stats(), "rc 1"),
        ("successful", 0, stats(processed={"web1": 1}), "not processed: db1"),
        # "No hosts matched" ends with rc 0 and nothing processed.
        ("successful", 0, stats(processed={}, ok={}), "not processed: db1, web1"),
        ("successful", 0, stats(dark={"db1": 1}), "unreachable: db1"),
        ("successful", 0, stats(failures={"web1": 1}), "failed: web1"),
        ("successful", 0, stats(ignored={"web1": 1}), "ignored errors: web1"),
        ("successful", 0, None, "not processed"),
    ],
)
def test_any_sign_of_trouble_is_a_failure(status, rc, st, reason):
    with pytest.raises(HostError, match=reason):
        check_result(status, rc, st, HOSTS)
