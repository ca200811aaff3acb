"""Reads side by side (provisioner/parallel.py): order kept, every failure its own or raised in order."""

import threading

import pytest

from provisioner import parallel
from provisioner.errors import HostError


def test_results_keep_the_items_order_whatever_finishes_first():
    released = {3: threading.Event()}

    def read(n):
        if n == 1:
            released[3].wait(10)  # the first item finishes after the last one
        if n == 3:
            released[3].set()
        return n * 10

    assert parallel.each(read, [1, 2, 3], workers=3) == [10, 20, 30]


def test_a_failure_is_raised_only_after_every_read_finished_and_the_first_in_order_wins():
    finished = []

    def read(n):
        finished.append(n)
        if n in (2, 3):
            raise HostError(f"host{n} unreachable")
        return n

    with pytest.raises(HostError, match="host2 unreachable"):
        parallel.each(read, [1, 2, 3, 4], workers=4)
    assert sorted(finished) == [1, 2, 3, 4]
    outcomes = parallel.settled(read, [1, 2, 3], workers=3)
    assert outcomes[0] == (1, None) and outcomes[1][0] is None and str(outcomes[2][1]) == "host3 unreachable"


def test_independent_reads_run_together():
    together = threading.Barrier(2, timeout=10)

    def web():
        together.wait()
        return "web"

    def db():
        together.wait()
        return "db"

    assert parallel.together(web=web, db=db) == {"web": "web", "db": "db"}
